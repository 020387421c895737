"""Station opening hours: parsing, the pure time queries, the map format and the demo map."""

from __future__ import annotations

import copy
import math
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.building.hours import (
    ALWAYS_OPEN,
    DAY_S,
    OpeningHours,
    check_timezone,
    format_interval,
    overlaps,
    parse_interval,
    parse_time,
    parse_weekdays,
    utc_offset_s,
)
from fleet.building.loader import MapError, load_building, parse_building
from fleet.building.model import Station, StationKind
from simulators.fast import SIM_EPOCH
from simulators.workload import hospital_day_workload, standard_workload

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "maps" / "demo_hospital.yaml"
SRC = "m.yaml"
H = 3600.0


def at(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, offset_h: float = 0
) -> float:
    """Absolute seconds of a local wall-clock time at a fixed UTC offset."""
    tz = timezone(timedelta(hours=offset_h))
    return datetime(year, month, day, hour, minute, tzinfo=tz).timestamp()


# --- text forms ----------------------------------------------------------------------------------


def test_parse_time() -> None:
    assert parse_time("00:00") == 0.0
    assert parse_time("07:30") == 7 * H + 30 * 60
    assert parse_time("7:05") == 7 * H + 5 * 60
    assert parse_time("24:00") == DAY_S
    for bad in ("25:00", "24:01", "07:60", "0700", "7h", "", "-1:00"):
        with pytest.raises(ValueError, match="bad time"):
            parse_time(bad)


def test_parse_interval() -> None:
    assert parse_interval("07:00-19:00") == (7 * H, 19 * H)
    assert parse_interval(" 00:00 - 24:00 ") == (0.0, DAY_S)
    with pytest.raises(ValueError, match="ends before it starts; split a night at midnight"):
        parse_interval("22:00-06:00")
    with pytest.raises(ValueError, match="is empty"):
        parse_interval("07:00-07:00")
    with pytest.raises(ValueError, match="expected an interval like"):
        parse_interval("07:00")
    with pytest.raises(ValueError, match="bad time '25:00'"):
        parse_interval("07:00-25:00")


def test_parse_weekdays() -> None:
    assert parse_weekdays("mon") == (0,)
    assert parse_weekdays("mon-fri") == (0, 1, 2, 3, 4)
    assert parse_weekdays("Sat, SUNDAY") == (5, 6)
    assert parse_weekdays("fri-mon") == (4, 5, 6, 0)
    assert parse_weekdays("daily") == tuple(range(7))
    with pytest.raises(ValueError, match="unknown weekday 'son'"):
        parse_weekdays("sat-son")
    with pytest.raises(ValueError, match="bad weekday range"):
        parse_weekdays("mon-wed-fri")


def test_overlaps_and_format() -> None:
    assert overlaps([(0, 10), (10, 20), (5, 6), (30, 40)]) == [(0, 2)]
    assert format_interval((7 * H, DAY_S)) == "07:00-24:00"


def test_constructors_normalise_and_the_raw_form_is_checked() -> None:
    hours = OpeningHours.daily([(13 * H, 19 * H), (7 * H, 12 * H), (12 * H, 13 * H)])
    assert hours.week[0] == ((7 * H, 19 * H),)  # touching intervals merged
    assert OpeningHours.weekly({}).never_open
    assert OpeningHours.daily([(0.0, DAY_S)]) == ALWAYS_OPEN
    assert ALWAYS_OPEN.always_open and not ALWAYS_OPEN.never_open
    with pytest.raises(ValueError, match="weekday"):
        OpeningHours.weekly({7: [(0.0, H)]})
    with pytest.raises(ValueError, match="7 weekdays"):
        OpeningHours(((),))
    with pytest.raises(ValueError, match="not within a day"):
        OpeningHours((((0.0, DAY_S + 1),),) * 7)
    with pytest.raises(ValueError, match="sorted, disjoint"):
        OpeningHours((((0.0, 2 * H), (H, 3 * H)),) * 7)
    hash(hours)  # immutable, usable in a frozen Station


def test_describe() -> None:
    week = OpeningHours.weekly(
        {d: [(7 * H, 19 * H)] for d in range(5)} | {5: [(8 * H, 12 * H), (13 * H, 15 * H)]}
    )
    assert week.describe() == "mon-fri 07:00-19:00; sat 08:00-12:00 13:00-15:00; sun closed"
    assert OpeningHours.daily([(6 * H, 22 * H)]).describe() == "daily 06:00-22:00"
    assert ALWAYS_OPEN.describe() == "always open"


# --- time queries --------------------------------------------------------------------------------

DAY_SHIFT = OpeningHours.daily([(7 * H, 19 * H)])
# Mon-Fri 07:00-22:00, Saturday 08:00-12:00, closed on Sunday.
WEEK = OpeningHours.weekly({**{d: [(7 * H, 22 * H)] for d in range(5)}, 5: [(8 * H, 12 * H)]})
# Open through the night: 20:00 to 06:00 the next morning, every day.
NIGHTS = OpeningHours.daily([(0.0, 6 * H), (20 * H, DAY_S)])


def test_the_twin_starts_on_a_monday_morning() -> None:
    assert datetime.fromtimestamp(SIM_EPOCH, UTC) == datetime(2026, 1, 5, 7, 0, tzinfo=UTC)
    assert datetime(2026, 1, 5).weekday() == 0
    assert WEEK.is_open(SIM_EPOCH)
    assert not WEEK.is_open(SIM_EPOCH - 1)  # 06:59:59 on Monday


def test_is_open_is_half_open() -> None:
    assert not DAY_SHIFT.is_open(at(2026, 3, 4, 6, 59))
    assert DAY_SHIFT.is_open(at(2026, 3, 4, 7))
    assert DAY_SHIFT.is_open(at(2026, 3, 4, 19) - 1)
    assert not DAY_SHIFT.is_open(at(2026, 3, 4, 19))
    assert ALWAYS_OPEN.is_open(-1e9) and ALWAYS_OPEN.is_open(1e10)


def test_the_offset_shifts_local_time() -> None:
    # 06:30 UTC is 07:30 in UTC+1 and 01:30 in UTC-5.
    t = at(2026, 3, 4, 6, 30)
    assert not DAY_SHIFT.is_open(t)
    assert DAY_SHIFT.is_open(t, utc_offset_s=H)
    assert not DAY_SHIFT.is_open(t, utc_offset_s=-5 * H)
    # 23:30 UTC on Friday is 00:30 on Saturday in UTC+1: closed then (Saturday opens at 08:00).
    friday_late = at(2026, 3, 6, 23, 30)
    assert WEEK.is_open(at(2026, 3, 6, 21, 30))
    assert not WEEK.is_open(friday_late, utc_offset_s=H)


def test_weekdays_follow_the_calendar() -> None:
    saturday, sunday = at(2026, 3, 7, 9), at(2026, 3, 8, 9)
    assert WEEK.is_open(saturday) and not WEEK.is_open(saturday + 4 * H)
    assert not WEEK.is_open(sunday)
    assert WEEK.is_open(at(2026, 3, 9, 21)) and not WEEK.is_open(at(2026, 3, 9, 22))


def test_next_open_window() -> None:
    wednesday_noon = at(2026, 3, 4, 12)
    assert DAY_SHIFT.next_open_window(wednesday_noon) == (wednesday_noon, at(2026, 3, 4, 19))
    assert DAY_SHIFT.next_open_window(at(2026, 3, 4, 19)) == (at(2026, 3, 5, 7), at(2026, 3, 5, 19))
    # Saturday after closing: the next window is Monday's.
    assert WEEK.next_open_window(at(2026, 3, 7, 12)) == (at(2026, 3, 9, 7), at(2026, 3, 9, 22))
    # In UTC+2 the same local hours are two hours earlier in absolute time.
    assert WEEK.next_open_window(at(2026, 3, 7, 12), utc_offset_s=2 * H) == (
        at(2026, 3, 9, 7, offset_h=2),
        at(2026, 3, 9, 22, offset_h=2),
    )
    assert ALWAYS_OPEN.next_open_window(5.0) == (5.0, math.inf)
    assert OpeningHours.weekly({}).next_open_window(5.0) is None


def test_a_night_across_midnight_is_one_window() -> None:
    evening = at(2026, 3, 4, 21)
    assert NIGHTS.next_open_window(evening) == (evening, at(2026, 3, 5, 6))
    assert NIGHTS.next_open_window(at(2026, 3, 4, 12)) == (at(2026, 3, 4, 20), at(2026, 3, 5, 6))
    # Open every hour but one: the window from just after the gap runs a whole day.
    almost = OpeningHours.daily([(0.0, 3 * H), (4 * H, DAY_S)])
    assert almost.next_open_window(at(2026, 3, 4, 4)) == (at(2026, 3, 4, 4), at(2026, 3, 5, 3))


def test_windows_are_clipped_and_merged() -> None:
    start, end = at(2026, 3, 4, 12), at(2026, 3, 6, 3)
    assert NIGHTS.windows(start, end) == [
        (at(2026, 3, 4, 20), at(2026, 3, 5, 6)),
        (at(2026, 3, 5, 20), end),
    ]
    assert DAY_SHIFT.windows(end, start) == []
    assert ALWAYS_OPEN.windows(start, end) == [(start, end)]
    with pytest.raises(ValueError, match="finite"):
        DAY_SHIFT.windows(start, math.inf)


@st.composite
def opening_hours(draw: st.DrawFn) -> OpeningHours:
    days: dict[int, list[tuple[float, float]]] = {}
    for day in range(7):
        marks = sorted(set(draw(st.lists(st.integers(0, 96), max_size=6))))
        pairs = list(zip(marks[::2], marks[1::2], strict=False))
        days[day] = [(a * 900.0, b * 900.0) for a, b in pairs if a < b]
    return OpeningHours.weekly(days)


@settings(max_examples=150, deadline=None)
@given(
    opening_hours(),
    st.floats(1.7e9, 1.8e9),
    st.sampled_from([0.0, 3600.0, -18000.0, 19800.0]),
)
def test_next_open_window_agrees_with_is_open(hours: OpeningHours, t: float, offset: float) -> None:
    window = hours.next_open_window(t, offset)
    if hours.never_open:
        assert window is None
        return
    assert window is not None
    opens, closes = window
    assert opens >= t and closes > opens
    assert hours.is_open(opens, offset)
    assert hours.is_open(t, offset) == (opens == t)
    if math.isfinite(closes):
        assert not hours.is_open(closes, offset)
        assert hours.is_open(closes - 1e-3, offset)
    # Closed throughout [t, opens): sample it on a quarter-hour grid and just before opening.
    probe = t
    while probe < opens:
        assert not hours.is_open(probe, offset)
        probe += 900.0
    if opens > t:
        assert not hours.is_open(opens - 1e-3, offset)


def test_time_zones() -> None:
    assert utc_offset_s("UTC", SIM_EPOCH) == 0.0
    assert utc_offset_s("Europe/Berlin", at(2026, 1, 15, 12)) == H
    assert utc_offset_s("Europe/Berlin", at(2026, 7, 15, 12)) == 2 * H
    assert check_timezone("Europe/Berlin") is None
    assert check_timezone("Europe/Berlinn") is not None
    assert check_timezone("Europe") is not None


# --- the map format ------------------------------------------------------------------------------


def small_map(**station: Any) -> dict[str, Any]:
    """A valid one-level map whose first station gets the extra `station` fields."""
    return copy.deepcopy(
        {
            "name": "Small",
            "levels": [{"name": "L1", "elevation": 0.0, "nodes": {"A": [0, 0], "B": [10, 0]}}],
            "lanes": [{"start": "A", "end": "B"}],
            "stations": [
                {"name": "S1", "kind": "ward", "node": "A", **station},
                {"name": "S2", "kind": "warehouse_port", "node": "B"},
            ],
        }
    )


def issues(data: object) -> list[str]:
    with pytest.raises(MapError) as caught:
        parse_building(data, SRC)
    return [str(issue) for issue in caught.value.issues]


def test_a_station_without_hours_is_always_open() -> None:
    building = parse_building(small_map(), SRC)
    assert building.stations["S1"].opening_hours is ALWAYS_OPEN
    assert Station("X", StationKind.WARD, "A").opening_hours is ALWAYS_OPEN
    assert building.timezone == "UTC"
    assert building.utc_offset_s(SIM_EPOCH) == 0.0


def test_daily_and_weekly_hours_load() -> None:
    daily = parse_building(small_map(opening_hours=["13:00-19:00", "07:00-12:00"]), SRC)
    assert daily.stations["S1"].opening_hours == OpeningHours.daily(
        [(7 * H, 12 * H), (13 * H, 19 * H)]
    )
    weekly = parse_building(
        small_map(opening_hours={"mon-fri": ["07:00-22:00"], "sat": ["08:00-12:00"], "sun": []}),
        SRC,
    )
    assert weekly.stations["S1"].opening_hours == WEEK
    data = small_map(opening_hours=["00:00-24:00"])
    data["timezone"] = "Europe/Berlin"
    building = parse_building(data, SRC)
    assert building.stations["S1"].opening_hours.always_open
    assert building.utc_offset_s(at(2026, 7, 1)) == 2 * H


def test_bad_hours_are_reported_with_their_path() -> None:
    found = issues(
        small_map(
            opening_hours={
                "mon-fri": ["07:00-12:30", "12:00-14:00", "25:00-26:00"],
                "sat-son": ["08:00-12:00"],
                "fri": ["22:00-06:00"],
                "sun": "07:00-12:00",
            }
        )
    )
    assert found == [
        f"{SRC}: stations[0].opening_hours.mon-fri[2]: bad time '25:00': expected HH:MM between "
        "00:00 and 24:00",
        f"{SRC}: stations[0].opening_hours.sat-son: unknown weekday 'son' (expected mon, tue, wed, "
        "thu, fri, sat or sun; a range such as mon-fri; a list such as sat,sun; or daily)",
        f"{SRC}: stations[0].opening_hours.fri: weekday 'fri' given twice (also in 'mon-fri')",
        f"{SRC}: stations[0].opening_hours.fri[0]: interval '22:00-06:00' ends before it starts; "
        "split a night at midnight, e.g. '22:00-24:00' and '00:00-06:00'",
        f"{SRC}: stations[0].opening_hours.sun: expected a list of intervals such as "
        "['07:00-19:00'] ([] for closed), got text '07:00-12:00'",
    ]
    assert issues(small_map(opening_hours=["07:00-12:30", "12:00-14:00"])) == [
        f"{SRC}: stations[0].opening_hours[1]: interval '12:00-14:00' overlaps '07:00-12:30'"
    ]


def test_hours_of_the_wrong_shape() -> None:
    assert issues(small_map(opening_hours="07:00-19:00")) == [
        f"{SRC}: stations[0].opening_hours: expected a list of intervals such as "
        "['07:00-19:00'], or a mapping of weekdays (mon-fri, sat, ...) to such lists, "
        "got text '07:00-19:00'"
    ]
    assert issues(small_map(opening_hours=[1140])) == [
        f"{SRC}: stations[0].opening_hours[0]: expected an interval such as '07:00-19:00', "
        "got int 1140; quote times, YAML reads 19:00 as a number"
    ]
    never = f"{SRC}: stations[0].opening_hours: the station never opens"
    assert issues(small_map(opening_hours=[]))[0].startswith(never)
    assert issues(small_map(opening_hours={"daily": []}))[0].startswith(never)
    assert issues(small_map(opening_hours={1: ["07:00-19:00"]})) == [
        f"{SRC}: stations[0].opening_hours.1: expected weekdays such as 'mon-fri', got int 1"
    ]


def test_bad_timezone() -> None:
    data = small_map()
    data["timezone"] = "Mars/Olympus"
    assert issues(data) == [
        f"{SRC}: timezone: unknown time zone 'Mars/Olympus' (expected an IANA name such as "
        "'Europe/Berlin')"
    ]
    data["timezone"] = 5
    assert issues(data) == [f"{SRC}: timezone: expected a time zone name, got int 5"]


def test_yaml_text_forms_load(tmp_path: Path) -> None:
    path = tmp_path / "hours.yaml"
    path.write_text(
        "name: Small\n"
        "levels:\n"
        "  - {name: L1, elevation: 0, nodes: {A: [0, 0], B: [10, 0]}}\n"
        "lanes: [{start: A, end: B}]\n"
        "stations:\n"
        "  - {name: S1, kind: ward, node: A, opening_hours: [07:00-19:00]}\n"
        "  - name: S2\n"
        "    kind: pharmacy\n"
        "    node: B\n"
        "    opening_hours:\n"
        "      mon-fri: [07:00-22:00]\n"
        "      sat: [08:00-12:00]\n",
        encoding="utf-8",
    )
    building = load_building(path)
    assert building.stations["S1"].opening_hours == DAY_SHIFT
    assert building.stations["S2"].opening_hours == WEEK


def test_readme_error_examples_are_real() -> None:
    readme = (REPO / "maps" / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### Opening hours") :]
    examples = re.findall(r"^maps/clinic\.yaml: (stations\[0\]\.opening_hours.*)$", section, re.M)
    assert len(examples) == 4
    found = issues(
        small_map(
            opening_hours={
                "mon-fri": ["22:00-06:00"],
                "sat-son": ["08:00-12:00"],
            }
        )
    ) + issues(small_map(opening_hours=["25:00-26:00", "12:00-14:00"]))
    found += issues(small_map(opening_hours=["07:00-12:30", "12:00-14:00"]))
    lines = {line.removeprefix(f"{SRC}: ") for line in found}
    for example in examples:
        assert example in lines


# --- the demo map --------------------------------------------------------------------------------


def test_demo_map_hours() -> None:
    building = load_building(DEMO)
    assert building.timezone == "UTC"
    assert building.stations["PHARMACY"].opening_hours.always_open
    # Every station is open round the clock: the demo and the live tests run on the wall clock,
    # at any hour. Opening hours are exercised on maps made in the tests.
    limited = [s.name for s in building.stations.values() if not s.opening_hours.always_open]
    assert limited == []


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_demo_workloads_never_need_a_closed_station(seed: int) -> None:
    """Every order's stations stay open from its placing to its needed-by time.

    The hospital day over eight days (weekend included); the uniform standard workload over the
    eight hours from 07:00 that the acceptance run simulates (it also orders to the dispenser at
    night, when the dispenser is closed).
    """
    building = load_building(DEMO)
    orders = hospital_day_workload(building, SIM_EPOCH, 8 * 24, seed)
    orders += standard_workload(building, SIM_EPOCH, 8, seed, 2.0)
    for timed in orders:
        order = timed.order
        for station in (order.pickup_station, order.dropoff_station):
            hours = building.stations[station].opening_hours
            offset = building.utc_offset_s(timed.at)
            assert hours.windows(timed.at, order.needed_by, offset) == [
                (timed.at, order.needed_by)
            ], (station, timed.at)

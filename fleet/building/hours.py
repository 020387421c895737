"""Station opening hours, as pure functions of absolute time.

Hours are written in the building's local wall-clock time, per weekday (`maps/README.md`
describes the YAML form). The dispatcher's clock is absolute: seconds since the Unix epoch, as
`fleet.clock.Clock.now()` gives them in service and in the digital twin (whose virtual clock
starts at `simulators.fast.SIM_EPOCH`, a Monday 07:00 UTC). Every query here therefore takes the
building's offset from UTC explicitly (`utc_offset_s`, seconds east of UTC: 3600 for CET, 0 for
UTC) instead of reading a time zone, so the functions are pure and a test needs no clock.

An offset is fixed for one query. Where a building observes daylight saving time, pass the
offset at the time asked about (`utc_offset_s(building.timezone, t)`); a window that spans the
night of a clock change is then off by the change, which is an hour at 02:00-03:00 twice a year.

Intervals are half-open, `[open, close)`: a station open `07:00-19:00` accepts a robot at 07:00
and at 18:59:59, not at 19:00. Open stretches that meet at midnight (`22:00-24:00` on Monday,
`00:00-06:00` on Tuesday) are one window.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAY_S = 86_400.0
"""Seconds in a day of local wall-clock time."""

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
"""Weekday names as maps write them; the index is the weekday number (Monday = 0)."""

_FULL_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_EPOCH_WEEKDAY = 3  # 1970-01-01, day 0 of the epoch, was a Thursday
# Far enough to pass one whole week after the first open stretch begins: any week that is not
# open throughout has a closed moment, so the stretch found within this horizon has an end.
_SCAN_DAYS = 15
_TIME = re.compile(r"(\d{1,2}):(\d{2})")

Interval = tuple[float, float]
"""`(open, close)`: seconds since local midnight, or absolute seconds, by context."""


# --- helpers -------------------------------------------------------------------------------------


def _local(t: float, utc_offset_s: float) -> tuple[int, float]:
    """(local day number since the epoch, seconds since that day's local midnight)."""
    local = t + utc_offset_s
    day = math.floor(local / DAY_S)
    return day, local - day * DAY_S


def _weekday(day: int) -> int:
    return (day + _EPOCH_WEEKDAY) % 7


def _weekday_number(name: str) -> int:
    name = name.strip()
    if name in WEEKDAYS:
        return WEEKDAYS.index(name)
    if name in _FULL_NAMES:
        return _FULL_NAMES.index(name)
    raise ValueError(
        f"unknown weekday {name!r} (expected mon, tue, wed, thu, fri, sat or sun; "
        "a range such as mon-fri; a list such as sat,sun; or daily)"
    )


def _normalise(intervals: Iterable[Interval]) -> tuple[Interval, ...]:
    """Sorted, with overlapping or touching intervals merged."""
    merged: list[Interval] = []
    for start, end in sorted((float(a), float(b)) for a, b in intervals):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return tuple(merged)


@dataclass(frozen=True)
class OpeningHours:
    """When a station accepts robots: for each weekday, its open intervals.

    `week[d]` holds weekday `d`'s intervals (Monday = 0) in seconds since local midnight,
    sorted, disjoint and not touching, each within `[0, DAY_S]`; build one with `daily`,
    `weekly` or `ALWAYS_OPEN`, which normalise their input. Immutable and hashable.
    """

    week: tuple[tuple[Interval, ...], ...]

    def __post_init__(self) -> None:
        if len(self.week) != 7:
            raise ValueError(f"opening hours need 7 weekdays, got {len(self.week)}")
        for day, intervals in zip(WEEKDAYS, self.week, strict=True):
            previous_close = -1.0
            for start, end in intervals:
                if not 0.0 <= start < end <= DAY_S:
                    raise ValueError(f"{day}: interval ({start}, {end}) is not within a day")
                if start <= previous_close:
                    raise ValueError(f"{day}: intervals must be sorted, disjoint and not touching")
                previous_close = end

    @classmethod
    def daily(cls, intervals: Iterable[Interval]) -> OpeningHours:
        """The same intervals (seconds since local midnight) every day; they may touch."""
        same = _normalise(intervals)
        return cls((same,) * 7)

    @classmethod
    def weekly(cls, days: Mapping[int, Iterable[Interval]]) -> OpeningHours:
        """Intervals per weekday number (Monday = 0); a weekday not given is closed all day."""
        for day in days:
            if day not in range(7):
                raise ValueError(f"weekday must be 0 (Monday) to 6 (Sunday), got {day}")
        return cls(tuple(_normalise(days.get(d, ())) for d in range(7)))

    @property
    def always_open(self) -> bool:
        """True when the station is open round the clock, every day."""
        return all(day == ((0.0, DAY_S),) for day in self.week)

    @property
    def never_open(self) -> bool:
        """True when the station has no open time at all."""
        return not any(self.week)

    def is_open(self, t: float, utc_offset_s: float = 0.0) -> bool:
        """Whether the station is open at absolute time `t` (seconds since the epoch)."""
        day, seconds = _local(t, utc_offset_s)
        return any(start <= seconds < end for start, end in self.week[_weekday(day)])

    def windows(self, start: float, end: float, utc_offset_s: float = 0.0) -> list[Interval]:
        """The open stretches within `[start, end)`, in absolute seconds, clipped to it.

        Sorted and disjoint; stretches that meet at midnight are merged. Empty when
        `end <= start`. `end` must be finite (ask `next_open_window` for an unbounded search).
        """
        if not (math.isfinite(start) and math.isfinite(end)):
            raise ValueError(f"window bounds must be finite, got {start} and {end}")
        found: list[Interval] = []
        if end <= start:
            return found
        first, _ = _local(start, utc_offset_s)
        last, _ = _local(end, utc_offset_s)
        for day in range(first, last + 1):
            midnight = day * DAY_S - utc_offset_s
            for open_s, close_s in self.week[_weekday(day)]:
                a = max(start, midnight + open_s)
                b = min(end, midnight + close_s)
                if a >= b:
                    continue
                if found and found[-1][1] >= a:
                    found[-1] = (found[-1][0], b)
                else:
                    found.append((a, b))
        return found

    def next_open_window(self, t: float, utc_offset_s: float = 0.0) -> Interval | None:
        """The first open stretch at or after `t`: `(opens, closes)` in absolute seconds.

        `opens` is `t` itself when the station is open at `t`, else the next opening time;
        `closes` is `math.inf` for a station that never closes. None when it never opens.
        """
        if self.always_open:
            return (t, math.inf)
        if self.never_open:
            return None
        found = self.windows(t, t + _SCAN_DAYS * DAY_S, utc_offset_s)
        return found[0] if found else None

    def describe(self) -> str:
        """A short text form for logs and messages, e.g. `mon-fri 07:00-19:00; sat,sun closed`."""
        if self.always_open:
            return "always open"
        groups: list[tuple[list[int], tuple[Interval, ...]]] = []
        for day, intervals in enumerate(self.week):
            if groups and groups[-1][1] == intervals and groups[-1][0][-1] == day - 1:
                groups[-1][0].append(day)
            else:
                groups.append(([day], intervals))
        parts = []
        for days, intervals in groups:
            if len(days) == 7:
                label = "daily"
            elif len(days) > 2:
                label = f"{WEEKDAYS[days[0]]}-{WEEKDAYS[days[-1]]}"
            else:
                label = ",".join(WEEKDAYS[d] for d in days)
            hours = " ".join(format_interval(i) for i in intervals) if intervals else "closed"
            parts.append(f"{label} {hours}")
        return "; ".join(parts)


ALWAYS_OPEN = OpeningHours.daily([(0.0, DAY_S)])
"""Open round the clock: the hours of a station whose map gives none."""


# --- text forms (the map format) ---------------------------------------------------------------


def parse_time(text: str) -> float:
    """`HH:MM` (00:00 to 24:00) as seconds since midnight; ValueError saying what is wrong."""
    match = _TIME.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"bad time {text!r}: expected HH:MM")
    hours, minutes = int(match.group(1)), int(match.group(2))
    if minutes > 59 or hours > 24 or (hours == 24 and minutes != 0):
        raise ValueError(f"bad time {text!r}: expected HH:MM between 00:00 and 24:00")
    return hours * 3600.0 + minutes * 60.0


def parse_interval(text: str) -> Interval:
    """`HH:MM-HH:MM` as `(open, close)` seconds since midnight; ValueError saying what is wrong.

    A night across midnight is two intervals (`22:00-24:00` and, the next day, `00:00-06:00`),
    so an interval that ends before it starts is refused rather than guessed at.
    """
    parts = text.split("-")
    if len(parts) != 2:
        raise ValueError(f"expected an interval like '07:00-19:00', got {text!r}")
    start, end = parse_time(parts[0]), parse_time(parts[1])
    if end == start:
        raise ValueError(f"interval {text!r} is empty: it ends when it starts")
    if end < start:
        raise ValueError(
            f"interval {text!r} ends before it starts; split a night at midnight, "
            "e.g. '22:00-24:00' and '00:00-06:00'"
        )
    return start, end


def parse_weekdays(text: str) -> tuple[int, ...]:
    """Weekday numbers (Monday = 0) of `mon`, `mon-fri`, `sat,sun`, `fri-mon` or `daily`.

    Names are case-insensitive, three-letter or in full; a range runs forward through the week
    and may wrap past Sunday. ValueError naming the unknown part otherwise.
    """
    days: list[int] = []
    for part in text.split(","):
        part = part.strip().lower()
        if part == "daily":
            days.extend(range(7))
            continue
        ends = [_weekday_number(name) for name in part.split("-")]
        if len(ends) == 1:
            days.append(ends[0])
        elif len(ends) == 2:
            first, last = ends
            days.extend((first + i) % 7 for i in range((last - first) % 7 + 1))
        else:
            raise ValueError(f"bad weekday range {part!r}: expected e.g. 'mon-fri'")
    return tuple(days)


def overlaps(intervals: Sequence[Interval]) -> list[tuple[int, int]]:
    """Pairs `(i, j)`, `i < j`, of intervals that overlap (touching is not overlapping)."""
    return [
        (i, j)
        for i, a in enumerate(intervals)
        for j in range(i + 1, len(intervals))
        if a[0] < intervals[j][1] and intervals[j][0] < a[1]
    ]


def format_time(seconds: float) -> str:
    """Seconds since midnight as `HH:MM` (24:00 for the end of the day)."""
    minutes = round(seconds / 60.0)
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def format_interval(interval: Interval) -> str:
    """`(open, close)` seconds since midnight as `HH:MM-HH:MM`."""
    return f"{format_time(interval[0])}-{format_time(interval[1])}"


# --- time zones ----------------------------------------------------------------------------------


def utc_offset_s(timezone: str, t: float) -> float:
    """The offset from UTC (seconds east) of IANA time zone `timezone` at absolute time `t`.

    Reads the time zone database (deterministic for a given database); `UTC` needs none.
    Raises `ZoneInfoNotFoundError` (a KeyError) or ValueError for an unknown name.
    """
    if timezone == "UTC":
        return 0.0
    offset = datetime.fromtimestamp(t, ZoneInfo(timezone)).utcoffset()
    return offset.total_seconds() if offset is not None else 0.0


def check_timezone(timezone: str) -> str | None:
    """None when `timezone` names a known IANA time zone, else what is wrong with it."""
    if timezone == "UTC":
        return None
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return f"unknown time zone {timezone!r} (expected an IANA name such as 'Europe/Berlin')"
    return None

"""`fleet custody report` end to end: events appended to a real database through the ledger store
(SQLite file, and PostgreSQL when a server answers), the installed `fleet` command run in a
subprocess, its table and its `--csv` output read back; bad arguments exit 2 naming them."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from fleet.clock import ManualClock
from fleet.custody import EventDraft, EventType
from fleet.store.ledger import open_ledger

FLEET = str(Path(sys.executable).parent / "fleet")
REPO = Path(__file__).resolve().parents[2]
FENTANYL = "86999900000101"  # in the demo catalogue: ampoules, empties returned
MIDAZOLAM = "86999900000505"
SHANGHAI = "Asia/Shanghai"
DAY = date(2025, 3, 1)
EXPIRY = date(2027, 6, 30)


def _local(day: date, hour: int, minute: int = 0) -> float:
    return datetime(
        day.year, day.month, day.day, hour, minute, tzinfo=ZoneInfo(SHANGHAI)
    ).timestamp()


def _draft(
    kind: EventType,
    drug: str,
    lot: str,
    q: int | str,
    when: float,
    unit: str = "ampoule",
    **kw: object,
) -> EventDraft:
    return EventDraft(
        kind,
        drug,
        lot,
        q,
        unit=unit,
        expiry=EXPIRY,
        occurred_at=when,
        **kw,  # type: ignore[arg-type]
    )


def _fill(url: str) -> None:
    """One OR case per drug on DAY in Shanghai: fentanyl fully accounted for (with a correction),
    midazolam with one ampoule still out; plus events the day before and after that must not
    count, one of them just before local midnight."""
    store = open_ledger(url)
    clock = ManualClock(_local(DAY, 6))
    before = DAY - timedelta(days=1)
    after = DAY + timedelta(days=1)
    drafts = [
        # The day before, 23:59 local (15:59 UTC on the same UTC date as DAY's start).
        _draft(EventType.ISSUE, FENTANYL, "F-OLD", 1, _local(before, 23, 59)),
        _draft(EventType.ADMINISTER, FENTANYL, "F-OLD", 1, _local(before, 23, 59)),
        _draft(EventType.ISSUE, FENTANYL, "F1", 6, _local(DAY, 0, 0), order_id="O1"),
        _draft(EventType.VERIFY, FENTANYL, "F1", 5, _local(DAY, 7, 35), order_id="O1"),
        _draft(EventType.LOAD, FENTANYL, "F1", 5, _local(DAY, 7, 40), order_id="O1"),
        _draft(EventType.RECEIVE, FENTANYL, "F1", 5, _local(DAY, 8, 0), order_id="O1"),
        _draft(EventType.ADMINISTER, FENTANYL, "F1", "3.5", _local(DAY, 9, 0)),
        _draft(EventType.WASTE, FENTANYL, "F1", "0.5", _local(DAY, 9, 5), witness="person:n1"),
        _draft(EventType.RETURN, FENTANYL, "F1", 1, _local(DAY, 12, 0)),
        _draft(EventType.RETURN_RECEIVE, FENTANYL, "F1", 1, _local(DAY, 12, 30)),
        _draft(EventType.RETURN_RECEIVE, FENTANYL, "F1", 4, _local(DAY, 12, 30), "empty:ampoule"),
        _draft(EventType.ISSUE, MIDAZOLAM, "M1", 3, _local(DAY, 7, 30)),
        _draft(EventType.ADMINISTER, MIDAZOLAM, "M1", 2, _local(DAY, 10, 0)),
        _draft(EventType.RETURN_RECEIVE, MIDAZOLAM, "M1", 2, _local(DAY, 23, 59), "empty:ampoule"),
        _draft(EventType.ISSUE, FENTANYL, "F1", 9, _local(after, 0, 0)),
    ]
    try:
        for d in drafts:
            clock.advance_to(clock.now() + 1)
            store.append(d, clock)
        # Seq 3 (the 00:00 issue) was typed as 6; 5 were issued.
        clock.advance_to(clock.now() + 1)
        store.append(
            _draft(
                EventType.CORRECTION,
                FENTANYL,
                "F1",
                5,
                _local(DAY, 13),
                corrects=3,
                reason="5 issued, 6 typed",
            ),
            clock,
        )
    finally:
        store.close()


def _run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FLEET, "custody", "report", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        check=False,
    )


@pytest.fixture
def filled(store_url: str) -> str:
    _fill(store_url)
    return store_url


def test_table_lists_each_lot_with_totals_and_the_verdict(filled: str, tmp_path: Path) -> None:
    # From another directory: the default catalogue is found beside the package.
    done = _run("--db", filled, "--date", "2025-03-01", "--tz", SHANGHAI, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "controlled-drug register for 2025-03-01" in lines[0] and SHANGHAI in lines[0]
    body = [line for line in lines if not line.startswith("#")]
    header = body[0].split()
    assert header[:2] == ["Code", "Drug"]
    rows = {(r.split()[0], "TOTAL" if "TOTAL" in r else r.split("ampoule")[1].split()[0]): r
            for r in body[1:] if r.startswith("8699")}  # fmt: skip
    assert set(rows) == {
        (FENTANYL, "F1"),
        (FENTANYL, "TOTAL"),
        (MIDAZOLAM, "M1"),
        (MIDAZOLAM, "TOTAL"),
    }
    assert "Fentanyl citrate injection" in rows[(FENTANYL, "F1")]
    assert "corrected #3" in rows[(FENTANYL, "F1")]
    assert "NOT BALANCED:" in body
    problems = [line for line in body if line.startswith("  - ")]
    assert (
        len(problems) == 1 and MIDAZOLAM in problems[0] and "M1: 1 ampoule still out" in problems[0]
    )


def test_csv_balances_the_accounted_lot_to_zero(filled: str) -> None:
    done = _run("--db", filled, "--date", "2025-03-01", "--tz", SHANGHAI, "--csv")
    assert done.returncode == 0, done.stderr
    records = list(csv.DictReader(io.StringIO(done.stdout)))
    by_key = {(r["drug_code"], r["row"], r["lot"]): r for r in records}
    assert list(by_key) == [
        (FENTANYL, "lot", "F1"),
        (FENTANYL, "total", ""),
        (MIDAZOLAM, "lot", "M1"),
        (MIDAZOLAM, "total", ""),
    ]
    f1 = by_key[(FENTANYL, "lot", "F1")]
    assert {k: Decimal(f1[k]) for k in ("issued", "administered", "wasted", "returned")} == {
        "issued": Decimal(5),
        "administered": Decimal("3.5"),
        "wasted": Decimal("0.5"),
        "returned": Decimal(1),
    }
    assert f1["balance"] == "0" and f1["outstanding"] == "0" and f1["brought_forward"] == "0"
    assert (f1["empties_expected"], f1["empties_recovered"]) == ("4", "4")
    assert f1["corrected_seqs"] == "3" and f1["expiry"] == "2027-06-30"
    assert f1["date"] == "2025-03-01" and f1["tz"] == SHANGHAI
    assert f1["name_zh"] == "枸橼酸芬太尼注射液" and f1["control_class"] == "NARCOTIC"
    m1 = by_key[(MIDAZOLAM, "lot", "M1")]
    assert (m1["issued"], m1["administered"], m1["balance"], m1["outstanding"]) == (
        "3",
        "2",
        "1",
        "1",
    )
    assert (m1["empties_expected"], m1["empties_recovered"]) == ("2", "2")


def test_utc_day_splits_the_same_events_differently(filled: str) -> None:
    # 1 March UTC is 08:00 1 March to 08:00 2 March in Shanghai: the F-OLD lot (23:59 on 28
    # February Shanghai = 15:59 UTC) is out of it, the issue of 2 March 00:00 Shanghai is in.
    done = _run("--db", filled, "--date", "2025-03-01", "--csv")
    assert done.returncode == 0, done.stderr
    records = list(csv.DictReader(io.StringIO(done.stdout)))
    lots = {(r["lot"], r["row"]): r for r in records if r["row"] == "lot"}
    assert ("F-OLD", "lot") not in lots
    assert {r["tz"] for r in records} == {"UTC"}
    # F1 on the UTC day: from 08:00 Shanghai on, so the 00:00 issue is brought forward and the
    # next day's 00:00 issue of 9 is in.
    f1 = lots[("F1", "lot")]
    assert f1["brought_forward"] == "5" and f1["issued"] == "9"


def test_a_day_without_events_is_balanced(filled: str) -> None:
    done = _run("--db", filled, "--date", "2024-01-01", "--tz", SHANGHAI)
    assert done.returncode == 0, done.stderr
    assert "no controlled-drug movements" in done.stdout
    assert done.stdout.splitlines()[-1].startswith("BALANCED")


def test_default_date_is_today_in_the_zone(filled: str) -> None:
    before = datetime.now(UTC).astimezone(ZoneInfo(SHANGHAI)).date()
    done = _run("--db", filled, "--tz", SHANGHAI, "--csv")
    after = datetime.now(UTC).astimezone(ZoneInfo(SHANGHAI)).date()
    assert done.returncode == 0, done.stderr
    records = list(csv.DictReader(io.StringIO(done.stdout)))
    # Units still out from 2025 are brought forward into today's register.
    assert records and {r["date"] for r in records} <= {before.isoformat(), after.isoformat()}
    out = {r["lot"]: r["outstanding"] for r in records if r["row"] == "lot"}
    assert out == {"F1": "9", "M1": "1"}


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("--date", "2025-02-30"), "argument --date: invalid date '2025-02-30'"),
        (
            ("--date", "01/03/2025"),
            "argument --date: invalid date '01/03/2025': expected YYYY-MM-DD",
        ),
        (("--tz", "Mars/Olympus"), "argument --tz: unknown time zone 'Mars/Olympus'"),
    ],
)
def test_a_bad_date_or_zone_exits_2_naming_the_argument(
    tmp_path: Path, args: tuple[str, ...], named: str
) -> None:
    done = _run("--db", f"sqlite:///{tmp_path / 'none.db'}", *args)
    assert done.returncode == 2
    assert named in done.stderr and "usage: fleet custody report" in done.stderr
    assert done.stdout == ""


def test_a_missing_ledger_or_catalogue_exits_2(tmp_path: Path, filled: str) -> None:
    done = _run("--db", f"sqlite:///{tmp_path / 'none.db'}", "--date", "2025-03-01")
    assert done.returncode == 2 and "no SQLite database" in done.stderr
    done = _run("--db", filled, "--date", "2025-03-01", "--catalogue", str(tmp_path / "x.yaml"))
    assert done.returncode == 2 and "catalogue" in done.stderr and "file not found" in done.stderr

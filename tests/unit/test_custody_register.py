"""The day's controlled-drug register, pure: what each event type counts as, balance and units
still out, empties, corrections, discrepancies, local-day boundaries, and the table and CSV."""

from __future__ import annotations

import csv
import dataclasses
import io
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from fleet.clock import ManualClock
from fleet.custody import CustodyEvent, EventDraft, EventType, Ledger
from fleet.custody.catalogue import Catalogue, ControlClass, DosageForm, Drug
from fleet.custody.register import (
    CSV_HEADER,
    NOT_IN_CATALOGUE,
    Register,
    RegisterLine,
    day_bounds,
    day_register,
    parse_zone,
)

FENTANYL = "86999900000101"
OXYCODONE = "86999900000707"
DAY = date(2025, 3, 1)
SHANGHAI = "Asia/Shanghai"
EXPIRY = date(2027, 6, 30)


def catalogue() -> Catalogue:
    return Catalogue(
        [
            Drug(
                code=FENTANYL,
                name="Fentanyl citrate injection",
                name_zh="枸橼酸芬太尼注射液",
                form=DosageForm.INJECTION,
                strength="50 µg/ml, 2 ml",
                unit="ampoule",
                control_class=ControlClass.NARCOTIC,
                manufacturer="Demo Pharma",
                returns_empty_container=True,
            ),
            Drug(
                code=OXYCODONE,
                name="Oxycodone extended-release tablets",
                form=DosageForm.EXTENDED_RELEASE_TABLET,
                strength="10 mg",
                unit="tablet",
                control_class=ControlClass.NARCOTIC,
                manufacturer="Demo Pharma",
                returns_empty_container=False,
            ),
        ]
    )


def at(day: date, hhmm: str, tz: str = "UTC") -> float:
    """Epoch seconds of a local wall-clock time."""
    hours, minutes = (int(x) for x in hhmm.split(":"))
    local = datetime(day.year, day.month, day.day, hours, minutes, tzinfo=ZoneInfo(tz))
    return local.timestamp()


class Book:
    """An in-memory ledger with short-hands for the lifecycle's events."""

    def __init__(self) -> None:
        self.clock = ManualClock(0.0)
        self.ledger = Ledger(self.clock)

    def add(
        self,
        event_type: EventType,
        quantity: int | str,
        when: float,
        *,
        drug: str = FENTANYL,
        lot: str = "L1",
        unit: str = "ampoule",
        **kw: Any,
    ) -> CustodyEvent:
        # Recording time only moves forward; occurred_at is what the register goes by.
        self.clock.advance_to(self.clock.now() + 1.0)
        return self.ledger.append(
            EventDraft(
                event_type,
                drug,
                lot,
                quantity,
                unit=unit,
                expiry=kw.pop("expiry", EXPIRY),
                occurred_at=when,
                **kw,
            )
        )

    def issue(self, q: int | str, when: float, **kw: Any) -> CustodyEvent:
        return self.add(
            EventType.ISSUE,
            q,
            when,
            from_custodian="vault:pharmacy",
            to_custodian="person:pharm-1",
            **kw,
        )

    def administer(self, q: int | str, when: float, **kw: Any) -> CustodyEvent:
        return self.add(
            EventType.ADMINISTER,
            q,
            when,
            from_custodian="person:anes-1",
            to_custodian="patient:P1",
            **kw,
        )

    def waste(self, q: int | str, when: float, **kw: Any) -> CustodyEvent:
        return self.add(
            EventType.WASTE,
            q,
            when,
            from_custodian="person:anes-1",
            to_custodian="waste",
            witness="person:nurse-1",
            **kw,
        )

    def return_units(self, q: int | str, when: float, **kw: Any) -> CustodyEvent:
        return self.add(
            EventType.RETURN_RECEIVE,
            q,
            when,
            from_custodian="person:anes-1",
            to_custodian="vault:pharmacy",
            **kw,
        )

    def return_empties(self, q: int | str, when: float, **kw: Any) -> CustodyEvent:
        return self.return_units(q, when, unit=kw.pop("unit", "empty:ampoule"), **kw)

    def moves(self, q: int | str, when: float, **kw: Any) -> None:
        """The custody moves between issue and use: none of them changes the totals."""
        for kind in (
            EventType.VERIFY,
            EventType.LOAD,
            EventType.UNLOAD,
            EventType.HANDOVER,
            EventType.RECEIVE,
        ):
            self.add(kind, q, when, **kw)

    def register(self, day: date = DAY, tz: str = "UTC") -> Register:
        return day_register(self.ledger.events, catalogue(), day, tz)


def only(register: Register, drug: str = FENTANYL, lot: str = "L1") -> RegisterLine:
    found = [line for line in register.lines if line.drug_code == drug and line.lot == lot]
    assert len(found) == 1, register.lines
    return found[0]


def total(register: Register, drug: str = FENTANYL) -> RegisterLine:
    found = [line for line in register.totals if line.drug_code == drug]
    assert len(found) == 1, register.totals
    return found[0]


# -- a whole day --------------------------------------------------------------------------------


def test_balanced_day_counts_every_column_and_balances_to_zero() -> None:
    book = Book()
    book.issue(5, at(DAY, "07:30"), order_id="O1")
    book.moves(5, at(DAY, "07:40"))
    book.administer("2.5", at(DAY, "09:00"))
    book.waste("0.5", at(DAY, "09:05"))
    book.administer(1, at(DAY, "10:00"))
    book.add(EventType.RETURN, 1, at(DAY, "12:00"))  # sent back: custody only
    book.return_units(1, at(DAY, "12:30"))
    book.return_empties(4, at(DAY, "12:30"))
    book.issue(2, at(DAY, "08:00"), lot="L2", expiry=date(2026, 1, 31))
    book.administer(2, at(DAY, "11:00"), lot="L2", expiry=date(2026, 1, 31))
    book.return_empties(2, at(DAY, "13:00"), lot="L2", expiry=date(2026, 1, 31))

    register = book.register()

    line = only(register)
    assert (line.issued, line.administered, line.wasted, line.returned) == (
        Decimal(5),
        Decimal("3.5"),
        Decimal("0.5"),
        Decimal(1),
    )
    assert line.balance == 0 and line.outstanding == 0 and line.brought_forward == 0
    assert line.empties_expected == 4 and line.empties_recovered == 4
    assert line.open_discrepancies == 0 and not line.corrected
    assert line.name == "Fentanyl citrate injection" and line.name_zh == "枸橼酸芬太尼注射液"
    assert (line.form, line.strength, line.unit) == ("injection", "50 µg/ml, 2 ml", "ampoule")
    assert line.control_class == "NARCOTIC" and line.expiry == EXPIRY and line.day == DAY
    assert [line.lot for line in register.lines] == ["L1", "L2"]
    t = total(register)
    assert t.is_total and t.lot == "" and t.expiry is None
    assert (t.issued, t.administered, t.wasted, t.returned) == (
        Decimal(7),
        Decimal("5.5"),
        Decimal("0.5"),
        Decimal(1),
    )
    assert t.empties_expected == 6 and t.empties_recovered == 6 and t.balance == 0
    assert register.balanced and register.problems() == []
    assert [r.lot or "TOTAL" for r in register.rows()] == ["L1", "L2", "TOTAL"]


def test_custody_moves_alone_list_nothing() -> None:
    book = Book()
    book.moves(3, at(DAY, "09:00"))
    book.add(EventType.RETURN, 3, at(DAY, "10:00"))
    book.add(EventType.RECEIPT, 100, at(DAY, "06:00"))  # goods receipt into the vault
    book.add(EventType.COUNT, 3, at(DAY, "06:30"))
    register = book.register()
    assert register.lines == () and register.totals == () and register.balanced


def test_unbalanced_day_names_the_units_still_out_and_the_next_day_closes_them() -> None:
    book = Book()
    book.issue(5, at(DAY, "07:30"))
    book.administer(3, at(DAY, "09:00"))
    book.return_empties(3, at(DAY, "12:00"))

    register = book.register()
    line = only(register)
    assert line.balance == 2 and line.outstanding == 2
    assert not line.balanced and not register.balanced
    assert register.problems() == [
        f"{FENTANYL} Fentanyl citrate injection lot L1: 2 ampoule still out "
        "(not administered, wasted or returned)"
    ]

    # The two come back the next morning: that day starts with 2 out and ends with none.
    nxt = DAY + timedelta(days=1)
    book.return_units(2, at(nxt, "08:00"))
    next_day = only(book.register(nxt))
    assert next_day.brought_forward == 2 and next_day.returned == 2
    assert next_day.balance == -2 and next_day.outstanding == 0
    assert book.register(nxt).balanced
    # The earlier day's register does not change: the units were out at its end.
    assert only(book.register()).outstanding == 2


def test_units_out_from_an_earlier_day_are_listed_on_a_quiet_day() -> None:
    book = Book()
    book.issue(4, at(DAY, "07:30"))
    book.administer(1, at(DAY, "09:00"))
    later = DAY + timedelta(days=2)
    register = book.register(later)
    line = only(register)
    assert line.brought_forward == 3 and line.issued == 0 and line.outstanding == 3
    assert line.balance == 0 and not register.balanced


def test_more_used_than_issued_is_a_problem() -> None:
    book = Book()
    book.issue(1, at(DAY, "07:30"))
    book.administer(2, at(DAY, "09:00"))
    register = book.register()
    assert only(register).outstanding == -1 and not register.balanced
    assert "1 ampoule more used or returned than issued" in register.problems()[0]


def test_an_empty_day_is_balanced() -> None:
    register = Book().register()
    assert register.lines == () and register.balanced
    assert "no controlled-drug movements" in register.to_table()
    assert register.to_csv().splitlines() == [",".join(CSV_HEADER)]


# -- empties ------------------------------------------------------------------------------------


def test_empties_are_only_recovered_and_expected_only_for_drugs_that_leave_one() -> None:
    book = Book()
    book.issue(3, at(DAY, "07:30"))
    book.administer(3, at(DAY, "09:00"))
    book.return_empties(2, at(DAY, "12:00"))
    # Movements of empties in other event types add nothing to the drug columns.
    book.add(EventType.ISSUE, 9, at(DAY, "12:10"), unit="empty:ampoule")
    book.add(EventType.DESTROY, 2, at(DAY, "16:00"), unit="empty:ampoule")
    book.issue(10, at(DAY, "07:30"), drug=OXYCODONE, lot="T1", unit="tablet")
    book.administer(10, at(DAY, "09:00"), drug=OXYCODONE, lot="T1", unit="tablet")

    register = book.register()
    line = only(register)
    assert line.issued == 3 and line.administered == 3 and line.outstanding == 0
    assert line.empties_expected == 3 and line.empties_recovered == 2
    tablets = only(register, OXYCODONE, "T1")
    assert tablets.empties_expected is None and tablets.empties_recovered == 0
    assert total(register, OXYCODONE).empties_expected is None
    # Empties do not take part in the balance (the register shows expected vs recovered).
    assert register.balanced
    rows = list(csv.DictReader(io.StringIO(register.to_csv())))
    assert [r["empties_expected"] for r in rows if r["drug_code"] == OXYCODONE] == ["", ""]


# -- corrections --------------------------------------------------------------------------------


def test_a_correction_replaces_the_quantity_and_marks_the_line() -> None:
    book = Book()
    wrong = book.issue(6, at(DAY, "07:30"))
    book.administer(5, at(DAY, "09:00"))
    assert not book.register().balanced  # 6 issued, 5 used: 1 out

    # Recorded the next day, it still corrects the day of the issue.
    book.add(
        EventType.CORRECTION,
        5,
        at(DAY + timedelta(days=1), "08:00"),
        corrects=wrong.seq,
        reason="5 issued, 6 typed",
    )
    register = book.register()
    line = only(register)
    assert line.issued == 5 and line.outstanding == 0 and register.balanced
    assert line.corrected and line.corrected_seqs == (wrong.seq,)
    assert total(register).corrected_seqs == (wrong.seq,)
    assert f"corrected #{wrong.seq}" in register.to_table()
    rows = list(csv.DictReader(io.StringIO(register.to_csv())))
    assert rows[0]["corrected_seqs"] == str(wrong.seq)


def test_the_last_correction_wins_and_a_correction_of_a_correction_corrects_the_original() -> None:
    book = Book()
    wrong = book.administer(1, at(DAY, "09:00"))
    first = book.add(EventType.CORRECTION, 3, at(DAY, "10:00"), corrects=wrong.seq, reason="typo")
    book.add(EventType.CORRECTION, 2, at(DAY, "11:00"), corrects=first.seq, reason="typo again")
    book.issue(2, at(DAY, "07:00"))
    line = only(book.register())
    assert line.administered == 2 and line.corrected_seqs == (wrong.seq,)


def test_a_correction_can_move_an_event_to_the_right_lot_or_void_it() -> None:
    book = Book()
    book.issue(2, at(DAY, "07:00"), lot="L2")
    wrong_lot = book.administer(2, at(DAY, "09:00"), lot="L1")
    typo = book.issue(4, at(DAY, "07:05"), lot="L1")
    book.add(
        EventType.CORRECTION,
        2,
        at(DAY, "12:00"),
        lot="L2",
        corrects=wrong_lot.seq,
        reason="lot L2 was used",
    )
    book.add(EventType.CORRECTION, 0, at(DAY, "12:05"), corrects=typo.seq, reason="no issue")
    register = book.register()
    l1 = only(register, lot="L1")
    l2 = only(register, lot="L2")
    assert l2.issued == 2 and l2.administered == 2 and l2.outstanding == 0
    assert l2.corrected_seqs == (wrong_lot.seq,)
    assert l1.issued == 0 and l1.administered == 0 and l1.corrected_seqs == (typo.seq,)
    assert register.balanced


# -- discrepancies ------------------------------------------------------------------------------


def test_an_open_discrepancy_unbalances_the_day_until_resolved() -> None:
    book = Book()
    book.issue(3, at(DAY, "07:30"), order_id="O1")
    book.administer(1, at(DAY, "09:00"), order_id="O1")
    book.return_units(1, at(DAY, "12:00"), order_id="O1")  # blind count 1, expected 2
    opened = book.add(
        EventType.DISCREPANCY_OPEN,
        1,
        at(DAY, "12:01"),
        order_id="O1",
        blind_count=1,
        expected_count=2,
    )
    register = book.register()
    line = only(register)
    assert line.open_discrepancies == 1 and line.open_difference == 1
    assert line.outstanding == 1 and not register.balanced
    assert "1 discrepancy open (1 ampoule)" in register.problems()[-1]

    # Found in the OR and returned the next day, and the discrepancy resolved: that day
    # balances, and the first day's register still shows what was open at its end.
    nxt = DAY + timedelta(days=1)
    book.return_units(1, at(nxt, "08:00"), order_id="O1")
    book.add(
        EventType.DISCREPANCY_RESOLVE,
        0,
        at(nxt, "08:05"),
        corrects=opened.seq,
        reason="found in OR 3 drawer",
    )
    assert only(book.register()).open_discrepancies == 1
    next_day = only(book.register(nxt))
    assert next_day.open_discrepancies == 0 and next_day.resolved_discrepancies == 1
    assert next_day.outstanding == 0 and book.register(nxt).balanced
    assert "1 discrepancy resolved" in book.register(nxt).to_table()


def test_a_resolution_without_corrects_closes_the_oldest_open_one_of_its_order() -> None:
    book = Book()
    book.issue(2, at(DAY, "07:00"))
    book.administer(2, at(DAY, "09:00"))
    book.add(EventType.DISCREPANCY_OPEN, 0, at(DAY, "10:00"), order_id="O1", note="seal")
    book.add(EventType.DISCREPANCY_OPEN, 0, at(DAY, "10:10"), order_id="O2", note="seal")
    book.add(EventType.DISCREPANCY_RESOLVE, 0, at(DAY, "11:00"), order_id="O2", reason="ok")
    line = only(book.register())
    assert line.open_discrepancies == 1 and line.resolved_discrepancies == 1
    # A zero-difference discrepancy (seal, lot) still keeps the day open.
    assert line.open_difference == 0 and not book.register().balanced
    book.add(EventType.DISCREPANCY_RESOLVE, 0, at(DAY, "11:30"), reason="ok")  # any order
    line = only(book.register())
    assert line.open_discrepancies == 0 and line.resolved_discrepancies == 2
    assert book.register().balanced


def test_a_correction_changes_a_discrepancy_difference() -> None:
    book = Book()
    book.issue(3, at(DAY, "07:00"))
    book.administer(1, at(DAY, "09:00"))
    opened = book.add(EventType.DISCREPANCY_OPEN, 1, at(DAY, "10:00"))
    book.add(EventType.CORRECTION, 2, at(DAY, "10:30"), corrects=opened.seq, reason="two")
    line = only(book.register())
    assert line.open_difference == 2 and line.corrected_seqs == (opened.seq,)
    # The register's balance formula leaves discrepancies out: they are their own column.
    assert line.balance == 2 and line.outstanding == 2


# -- the day ------------------------------------------------------------------------------------


def test_day_boundaries_follow_the_building_time_zone() -> None:
    book = Book()
    # Shanghai is UTC+8: its 1 March runs from 28 Feb 16:00 UTC to 1 March 16:00 UTC.
    book.issue(1, at(DAY - timedelta(days=1), "23:59", SHANGHAI), lot="BEFORE")
    book.issue(2, at(DAY, "00:00", SHANGHAI), lot="FIRST")
    book.issue(3, at(DAY, "23:59", SHANGHAI) + 59.999999, lot="LAST")
    book.issue(4, at(DAY + timedelta(days=1), "00:00", SHANGHAI), lot="AFTER")

    local = book.register(DAY, SHANGHAI)
    issued = {line.lot: line.issued for line in local.lines}
    # BEFORE is listed only because it is still out (brought forward), not issued that day.
    assert issued == {"BEFORE": 0, "FIRST": 2, "LAST": 3}
    assert only(local, lot="BEFORE").brought_forward == 1

    # The same events on the UTC day: 1 March 00:00-24:00 UTC.
    utc = book.register(DAY, "UTC")
    assert {line.lot: line.issued for line in utc.lines} == {
        "BEFORE": 0,
        "FIRST": 0,
        "LAST": 3,
        "AFTER": 4,
    }


def test_day_bounds_and_daylight_saving_days() -> None:
    start, end = day_bounds(DAY, SHANGHAI)
    assert start == int(datetime(2025, 2, 28, 16, tzinfo=ZoneInfo("UTC")).timestamp()) * 10**6
    assert end - start == 24 * 3600 * 10**6
    short = day_bounds(date(2025, 3, 30), "Europe/Berlin")
    long = day_bounds(date(2025, 10, 26), "Europe/Berlin")
    assert short[1] - short[0] == 23 * 3600 * 10**6
    assert long[1] - long[0] == 25 * 3600 * 10**6


@pytest.mark.parametrize("bad", ["Mars/Olympus", "", "../etc/passwd", "Asia/"])
def test_an_unknown_time_zone_is_refused_by_name(bad: str) -> None:
    with pytest.raises(ValueError, match="unknown time zone"):
        parse_zone(bad)
    with pytest.raises(ValueError, match="unknown time zone"):
        Book().register(DAY, bad)


# -- catalogue ----------------------------------------------------------------------------------


def test_a_code_not_in_the_catalogue_is_still_listed_after_the_known_ones() -> None:
    book = Book()
    book.issue(2, at(DAY, "07:00"), drug="LOCAL-9", lot="X", unit="vial")
    book.issue(1, at(DAY, "07:00"), drug=OXYCODONE, lot="T1", unit="tablet")
    book.issue(1, at(DAY, "07:00"))
    register = book.register()
    assert [line.drug_code for line in register.totals] == [FENTANYL, OXYCODONE, "LOCAL-9"]
    unknown = only(register, "LOCAL-9", "X")
    assert unknown.name == NOT_IN_CATALOGUE and unknown.unit == "vial"
    assert (unknown.form, unknown.strength, unknown.control_class) == ("", "", "")
    assert unknown.empties_expected is None and unknown.outstanding == 2


def test_an_event_of_an_unknown_type_is_skipped() -> None:
    book = Book()
    ev = book.issue(2, at(DAY, "07:00"))
    forged = dataclasses.replace(ev, seq=ev.seq + 1, event_type="GIFT")
    register = day_register([ev, forged], catalogue(), DAY, "UTC")
    assert only(register).issued == 2


# -- output -------------------------------------------------------------------------------------


def day_for_output() -> Register:
    book = Book()
    book.issue(5, at(DAY, "07:30"))
    book.administer(4, at(DAY, "09:00"))
    book.return_units(1, at(DAY, "12:00"))
    book.return_empties(4, at(DAY, "12:00"))
    book.issue(10, at(DAY, "07:30"), drug=OXYCODONE, lot="T1", unit="tablet")
    book.administer(8, at(DAY, "09:00"), drug=OXYCODONE, lot="T1", unit="tablet")
    return book.register(DAY, SHANGHAI)


def test_csv_has_a_stable_header_and_one_row_per_lot_and_total() -> None:
    register = day_for_output()
    text = register.to_csv()
    rows = list(csv.reader(io.StringIO(text)))
    assert tuple(rows[0]) == CSV_HEADER
    assert CSV_HEADER[:3] == ("date", "tz", "row") and CSV_HEADER[-1] == "corrected_seqs"
    records = list(csv.DictReader(io.StringIO(text)))
    assert [(r["drug_code"], r["row"], r["lot"]) for r in records] == [
        (FENTANYL, "lot", "L1"),
        (FENTANYL, "total", ""),
        (OXYCODONE, "lot", "T1"),
        (OXYCODONE, "total", ""),
    ]
    fen = records[0]
    assert fen["date"] == "2025-03-01" and fen["tz"] == SHANGHAI
    assert fen["name_zh"] == "枸橼酸芬太尼注射液" and fen["expiry"] == "2027-06-30"
    numbers = {k: fen[k] for k in ("issued", "administered", "returned", "balance")}
    assert numbers == {"issued": "5", "administered": "4", "returned": "1", "balance": "0"}
    assert (fen["empties_expected"], fen["empties_recovered"]) == ("4", "4")
    oxy = records[2]
    assert (oxy["balance"], oxy["outstanding"], oxy["empties_expected"]) == ("2", "2", "")


def test_table_has_the_legend_aligned_columns_totals_and_a_verdict() -> None:
    register = day_for_output()
    text = register.to_table()
    lines = text.splitlines()
    legend = [line for line in lines if line.startswith("#")]
    assert "2025-03-01" in legend[0] and SHANGHAI in legend[0] and "专用账册" in legend[0]
    for meaning in ("上日结存", "发出/领用", "使用", "退库", "结存", "空安瓿", "未结差错"):
        assert any(meaning in line for line in legend), meaning
    body = [line for line in lines if not line.startswith("#")]
    header = body[0]
    assert header.split()[:3] == ["Code", "Drug", "Form"]
    data = body[1:5]
    assert [row.split()[0] for row in data] == [FENTANYL, FENTANYL, OXYCODONE, OXYCODONE]
    assert "TOTAL" in data[1] and "TOTAL" in data[3]
    # Numbers are right-aligned under their header.
    for column in ("Issued", "Balance", "Out"):
        end = header.index(f" {column} ") + len(column) + 1
        for row in data:
            assert row[end - 1] != " " and row[end] == " ", (column, row)
    assert body[5] == "NOT BALANCED:"
    assert body[6].startswith(f"  - {OXYCODONE}") and "2 tablet still out" in body[6]


def test_table_says_balanced_for_a_balanced_day() -> None:
    book = Book()
    book.issue(1, at(DAY, "07:30"))
    book.administer(1, at(DAY, "09:00"))
    assert book.register().to_table().splitlines()[-1].startswith("BALANCED:")

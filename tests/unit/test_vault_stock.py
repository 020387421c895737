"""The vault's stock per lot: receipt, first-expiry-first-out picking, expired lots blocked,
scanned-lot picks, returns; refusals change nothing; a stateful property test of the counts."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from fleet.clock import ManualClock
from fleet.custody.catalogue import Catalogue, ControlClass, DosageForm, Drug
from fleet.custody.stock import (
    MAX_UNITS,
    Lot,
    Pick,
    VaultStock,
    expiry_from_label,
    is_expired,
    local_date,
)
from fleet.domain.errors import FailedPrecondition, InvalidArgument, NotFound

TODAY = date(2025, 3, 1)
FEN = "FEN"
MID = "MID"


def drug(code: str, control_class: ControlClass = ControlClass.NARCOTIC) -> Drug:
    return Drug(
        code=code,
        name=f"{code} injection",
        form=DosageForm.INJECTION,
        strength="1 mg/ml, 1 ml",
        unit="ampoule",
        control_class=control_class,
        manufacturer="Demo Pharma",
        returns_empty_container=True,
    )


CATALOGUE = Catalogue([drug(FEN), drug(MID, ControlClass.PSYCHOTROPIC_II)])


def lot(number: str, expiry: date, code: str = FEN, manufacturer: str = "Demo Pharma") -> Lot:
    return Lot(drug_code=code, lot=number, expiry=expiry, manufacturer=manufacturer)


def stock_with(*lots: tuple[Lot, int]) -> VaultStock:
    stock = VaultStock(CATALOGUE)
    for item, quantity in lots:
        stock.receive(item, quantity, TODAY)
    return stock


def day(n: int) -> date:
    return TODAY + timedelta(days=n)


# --- the expiry-day rule -----------------------------------------------------------------------


def test_a_lot_is_usable_through_its_expiry_day() -> None:
    assert not is_expired(TODAY, TODAY)
    assert is_expired(TODAY, day(1))
    assert not lot("A", day(0)).expired(TODAY)
    assert lot("A", day(0)).expired(day(1))


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("2025-03", date(2025, 3, 31)),  # 有效期至 2025-03: through the end of March
        ("202502", date(2025, 2, 28)),
        ("2024-02", date(2024, 2, 29)),
        ("2025-03-15", date(2025, 3, 15)),
        ("20250315", date(2025, 3, 15)),
    ],
)
def test_expiry_labels(label: str, expected: date) -> None:
    assert expiry_from_label(label) == expected


@pytest.mark.parametrize("label", ["2025-13", "2025-02-30", "March 2025", "", "25-03"])
def test_bad_expiry_labels(label: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        expiry_from_label(label)
    assert caught.value.field == "expiry"


def test_local_date_follows_the_hospital_time_zone() -> None:
    # 2025-02-28 17:00 UTC is already 1 March in Shanghai.
    clock = ManualClock(datetime(2025, 2, 28, 17, 0, tzinfo=UTC).timestamp())
    assert local_date(clock, ZoneInfo("Asia/Shanghai")) == date(2025, 3, 1)
    assert local_date(clock, UTC) == date(2025, 2, 28)


# --- lots and receipt --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("drug_code", {"drug_code": ""}),
        ("lot", {"lot": " A1"}),
        ("lot", {"lot": ""}),
        ("expiry", {"expiry": datetime(2025, 3, 1, 12, 0)}),
        ("expiry", {"expiry": "2025-03-01"}),
        ("manufacturer", {"manufacturer": ""}),
    ],
)
def test_bad_lot_fields_are_named(field: str, kwargs: dict[str, object]) -> None:
    fields: dict[str, object] = {
        "drug_code": FEN,
        "lot": "A1",
        "expiry": day(30),
        "manufacturer": "M",
    }
    fields.update(kwargs)
    with pytest.raises(InvalidArgument) as caught:
        Lot(**fields)  # type: ignore[arg-type]
    assert caught.value.field == field


def test_receive_adds_to_a_lot_and_a_second_delivery_of_it() -> None:
    stock = VaultStock(CATALOGUE)
    first = stock.receive(lot("A", day(30)), 10, TODAY)
    assert (first.on_hand, first.received) == (10, 10)
    again = stock.receive(lot("A", day(30)), 5, TODAY)
    assert again.on_hand == 15
    assert stock.on_hand(FEN) == 15
    assert stock.on_hand(MID) == 0


def test_receive_refuses_an_expired_lot_but_takes_one_expiring_today() -> None:
    stock = VaultStock(CATALOGUE)
    with pytest.raises(FailedPrecondition, match=r"lot OLD of FEN expired on 2025-02-28"):
        stock.receive(lot("OLD", day(-1)), 10, TODAY)
    assert stock.snapshot() == ()
    stock.receive(lot("LAST", TODAY), 10, TODAY)
    assert stock.on_hand(FEN) == 10


@pytest.mark.parametrize(("field", "other"), [("expiry", day(31)), ("manufacturer", "Other")])
def test_receive_refuses_a_lot_with_a_different_expiry_or_maker(field: str, other: object) -> None:
    stock = stock_with((lot("A", day(30)), 10))
    kwargs = {"expiry": day(30), "manufacturer": "Demo Pharma", field: other}
    with pytest.raises(InvalidArgument) as caught:
        stock.receive(lot("A", **kwargs), 5, TODAY)  # type: ignore[arg-type]
    assert caught.value.field == field
    assert stock.on_hand(FEN) == 10


def test_the_same_lot_number_of_two_drugs_is_two_lots() -> None:
    stock = stock_with((lot("A", day(30)), 10), (lot("A", day(60), code=MID), 3))
    assert stock.on_hand(FEN) == 10
    assert stock.on_hand(MID) == 3


@pytest.mark.parametrize("quantity", [0, -1, 2.5, True, "3", MAX_UNITS + 1])
def test_quantities_are_whole_positive_units(quantity: object) -> None:
    stock = stock_with((lot("A", day(30)), 10))
    calls = [
        lambda: stock.receive(lot("A", day(30)), quantity, TODAY),  # type: ignore[arg-type]
        lambda: stock.pick(FEN, quantity, TODAY),  # type: ignore[arg-type]
        lambda: stock.pick_lot(FEN, "A", quantity, TODAY),  # type: ignore[arg-type]
        lambda: stock.return_units(FEN, "A", quantity),  # type: ignore[arg-type]
    ]
    for call in calls:
        with pytest.raises(InvalidArgument) as caught:
            call()
        assert caught.value.field == "quantity"
    assert stock.lot(FEN, "A").on_hand == 10


def test_today_must_be_a_date() -> None:
    stock = stock_with((lot("A", day(30)), 10))
    with pytest.raises(InvalidArgument) as caught:
        stock.pick(FEN, 1, datetime(2025, 3, 1, 8, 0))
    assert caught.value.field == "today"


def test_unknown_drug_is_not_found() -> None:
    stock = VaultStock(CATALOGUE)
    with pytest.raises(NotFound, match="'XXX'"):
        stock.receive(lot("A", day(30), code="XXX"), 1, TODAY)
    with pytest.raises(NotFound, match="'XXX'"):
        stock.pick("XXX", 1, TODAY)
    with pytest.raises(NotFound):
        stock.on_hand("XXX")


# --- first-expiry-first-out picking ------------------------------------------------------------


def test_pick_takes_the_earliest_expiry_first_across_lots() -> None:
    stock = stock_with(
        (lot("LATE", day(200)), 10),
        (lot("SOON", day(20)), 3),
        (lot("MID", day(90)), 4),
    )
    picks = stock.pick(FEN, 8, TODAY)
    assert picks == [
        Pick(FEN, "SOON", day(20), 3),
        Pick(FEN, "MID", day(90), 4),
        Pick(FEN, "LATE", day(200), 1),
    ]
    assert [(s.lot.lot, s.on_hand) for s in stock.lots(FEN)] == [("LATE", 9)]


def test_equal_expiry_goes_by_receipt_order() -> None:
    stock = stock_with((lot("B", day(30)), 2), (lot("A", day(30)), 2))
    assert [p.lot for p in stock.pick(FEN, 3, TODAY)] == ["B", "A"]


def test_an_expired_lot_cannot_be_picked() -> None:
    stock = stock_with((lot("OLD", day(10)), 5), (lot("NEW", day(100)), 5))
    later = day(11)  # OLD expired yesterday
    assert stock.pick(FEN, 2, later) == [Pick(FEN, "NEW", day(100), 2)]
    with pytest.raises(FailedPrecondition, match=r"lot OLD of FEN expired on 2025-03-11"):
        stock.pick_lot(FEN, "OLD", 1, later)
    assert stock.lot(FEN, "OLD").on_hand == 5
    assert stock.available(FEN, later) == 3
    assert stock.on_hand(FEN) == 8


def test_on_its_expiry_day_a_lot_is_still_picked_first() -> None:
    stock = stock_with((lot("OLD", day(10)), 5), (lot("NEW", day(100)), 5))
    assert stock.pick(FEN, 1, day(10)) == [Pick(FEN, "OLD", day(10), 1)]


def test_pick_is_all_or_nothing_and_names_drug_wanted_and_available() -> None:
    stock = stock_with((lot("OLD", day(10)), 5), (lot("NEW", day(100)), 4))
    before = stock.snapshot()
    with pytest.raises(FailedPrecondition) as caught:
        stock.pick(FEN, 6, day(11))
    text = str(caught.value)
    assert "FEN injection" in text and "(FEN)" in text
    assert "wanted 6 ampoule, available 4" in text
    assert "5 more in expired lots, blocked from issue" in text
    assert stock.snapshot() == before


def test_pick_of_a_drug_never_received() -> None:
    with pytest.raises(FailedPrecondition, match=r"wanted 1 ampoule, available 0$"):
        VaultStock(CATALOGUE).pick(MID, 1, TODAY)


# --- scanned lots and returns ------------------------------------------------------------------


def test_pick_lot_takes_a_scanned_lot_even_if_not_first_to_expire() -> None:
    stock = stock_with((lot("SOON", day(20)), 3), (lot("LATE", day(200)), 10))
    assert stock.pick_lot(FEN, "LATE", 4, TODAY) == Pick(FEN, "LATE", day(200), 4)
    assert stock.lot(FEN, "LATE").on_hand == 6


def test_pick_lot_refuses_unknown_lots_and_more_than_on_hand() -> None:
    stock = stock_with((lot("A", day(20)), 3))
    with pytest.raises(NotFound, match="lot 'Z' of FEN is not in the vault"):
        stock.pick_lot(FEN, "Z", 1, TODAY)
    with pytest.raises(FailedPrecondition, match="lot A of FEN: wanted 4, on hand 3"):
        stock.pick_lot(FEN, "A", 4, TODAY)
    assert stock.lot(FEN, "A").on_hand == 3


def test_returns_bring_back_at_most_what_was_picked() -> None:
    stock = stock_with((lot("A", day(20)), 5))
    stock.pick(FEN, 3, TODAY)
    back = stock.return_units(FEN, "A", 2)
    assert (back.on_hand, back.picked, back.returned, back.outstanding) == (4, 3, 2, 1)
    with pytest.raises(FailedPrecondition, match="cannot return 2, only 1 picked"):
        stock.return_units(FEN, "A", 2)
    with pytest.raises(NotFound):
        stock.return_units(FEN, "Z", 1)
    assert stock.lot(FEN, "A").on_hand == 4


def test_returned_expired_units_stay_blocked() -> None:
    stock = stock_with((lot("A", day(5)), 5), (lot("B", day(50)), 1))
    stock.pick(FEN, 2, TODAY)
    stock.return_units(FEN, "A", 2)  # back after the lot expired
    later = day(6)
    assert [(s.lot.lot, s.on_hand) for s in stock.blocked_lots(later)] == [("A", 5)]
    with pytest.raises(FailedPrecondition):
        stock.pick(FEN, 2, later)


def test_blocked_lots_and_snapshot_order() -> None:
    stock = stock_with(
        (lot("M2", day(3), code=MID), 1),
        (lot("F2", day(30)), 2),
        (lot("F1", day(2)), 1),
    )
    stock.pick(FEN, 1, TODAY)  # empties F1
    assert [s.lot.lot for s in stock.blocked_lots(day(40))] == ["M2", "F2"]
    assert stock.blocked_lots(TODAY) == []
    assert [(s.drug_code, s.lot.lot, s.on_hand) for s in stock.snapshot()] == [
        (FEN, "F1", 0),
        (FEN, "F2", 2),
        (MID, "M2", 1),
    ]
    assert [s.lot.lot for s in stock.lots(FEN)] == ["F2"]


# --- property: counts never go wrong -----------------------------------------------------------

LOTS = {
    (FEN, "F1"): day(5),
    (FEN, "F2"): day(12),
    (FEN, "F3"): day(12),
    (FEN, "F4"): day(40),
    (MID, "M1"): day(3),
    (MID, "M2"): day(25),
}
keys = st.sampled_from(sorted(LOTS))
units = st.integers(min_value=1, max_value=12)


class StockMachine(RuleBasedStateMachine):
    """Random receipts, picks, scanned picks, returns and days passing against a plain model:
    per lot on hand = received - picked + returned, never negative; picks are FEFO, never from
    an expired lot; refused calls change nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.stock = VaultStock(CATALOGUE)
        self.today = TODAY
        self.received: dict[tuple[str, str], int] = dict.fromkeys(LOTS, 0)
        self.picked: dict[tuple[str, str], int] = dict.fromkeys(LOTS, 0)
        self.returned: dict[tuple[str, str], int] = dict.fromkeys(LOTS, 0)
        self.first_received: list[tuple[str, str]] = []

    def on_hand(self, key: tuple[str, str]) -> int:
        return self.received[key] - self.picked[key] + self.returned[key]

    def usable(self, code: str) -> list[tuple[str, str]]:
        """The model's FEFO order of a drug's usable lots with stock."""
        found = [
            k
            for k in self.first_received
            if k[0] == code and self.on_hand(k) > 0 and not LOTS[k] < self.today
        ]
        return sorted(found, key=lambda k: (LOTS[k], self.first_received.index(k)))

    @rule(key=keys, quantity=units)
    def receive(self, key: tuple[str, str], quantity: int) -> None:
        before = self.stock.snapshot()
        item = lot(key[1], LOTS[key], code=key[0])
        if LOTS[key] < self.today:
            with pytest.raises(FailedPrecondition):
                self.stock.receive(item, quantity, self.today)
            assert self.stock.snapshot() == before
            return
        self.stock.receive(item, quantity, self.today)
        self.received[key] += quantity
        if key not in self.first_received:
            self.first_received.append(key)

    @rule(code=st.sampled_from([FEN, MID]), quantity=units)
    def pick(self, code: str, quantity: int) -> None:
        order = self.usable(code)
        available = sum(self.on_hand(k) for k in order)
        before = self.stock.snapshot()
        if available < quantity:
            with pytest.raises(
                FailedPrecondition, match=f"wanted {quantity} .*available {available}"
            ):
                self.stock.pick(code, quantity, self.today)
            assert self.stock.snapshot() == before
            return
        picks = self.stock.pick(code, quantity, self.today)
        assert sum(p.quantity for p in picks) == quantity
        assert all(p.quantity > 0 for p in picks)
        # FEFO: the picks are a prefix of the usable lots in order, every one but the last
        # emptied, so no later lot is touched while an earlier one keeps stock.
        taken = [(p.drug_code, p.lot) for p in picks]
        assert taken == order[: len(taken)]
        for p in picks[:-1]:
            assert p.quantity == self.on_hand((p.drug_code, p.lot))
        for p in picks:
            assert p.expiry == LOTS[(p.drug_code, p.lot)]
            assert not p.expiry < self.today
            self.picked[(p.drug_code, p.lot)] += p.quantity

    @rule(key=keys, quantity=units)
    def pick_lot(self, key: tuple[str, str], quantity: int) -> None:
        before = self.stock.snapshot()
        code, number = key
        if key not in self.first_received:
            with pytest.raises(NotFound):
                self.stock.pick_lot(code, number, quantity, self.today)
        elif LOTS[key] < self.today or quantity > self.on_hand(key):
            with pytest.raises(FailedPrecondition):
                self.stock.pick_lot(code, number, quantity, self.today)
        else:
            pick = self.stock.pick_lot(code, number, quantity, self.today)
            assert pick == Pick(code, number, LOTS[key], quantity)
            self.picked[key] += quantity
            return
        assert self.stock.snapshot() == before

    @rule(key=keys, quantity=units)
    def return_units(self, key: tuple[str, str], quantity: int) -> None:
        before = self.stock.snapshot()
        code, number = key
        if key not in self.first_received:
            with pytest.raises(NotFound):
                self.stock.return_units(code, number, quantity)
        elif quantity > self.picked[key] - self.returned[key]:
            with pytest.raises(FailedPrecondition):
                self.stock.return_units(code, number, quantity)
        else:
            self.stock.return_units(code, number, quantity)
            self.returned[key] += quantity
            return
        assert self.stock.snapshot() == before

    @precondition(lambda self: self.today < day(50))
    @rule(days=st.integers(min_value=1, max_value=10))
    def days_pass(self, days: int) -> None:
        self.today += timedelta(days=days)

    @invariant()
    def counts_match_the_model(self) -> None:
        held = {(s.drug_code, s.lot.lot): s for s in self.stock.snapshot()}
        assert set(held) == set(self.first_received)
        for key, s in held.items():
            assert s.on_hand == self.on_hand(key) >= 0
            assert (s.received, s.picked, s.returned) == (
                self.received[key],
                self.picked[key],
                self.returned[key],
            )
        for code in (FEN, MID):
            assert self.stock.on_hand(code) == sum(self.on_hand(k) for k in LOTS if k[0] == code)
            assert self.stock.available(code, self.today) == sum(
                self.on_hand(k) for k in self.usable(code)
            )
        blocked = {(s.drug_code, s.lot.lot) for s in self.stock.blocked_lots(self.today)}
        assert blocked == {
            k for k in self.first_received if self.on_hand(k) > 0 and LOTS[k] < self.today
        }


StockMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
test_stock_counts_property = StockMachine.TestCase


def test_stock_and_catalogue_are_pure_core() -> None:
    """No gRPC, database, scheduler, metrics or web code comes in with them (DESIGN.md, 1)."""
    code = (
        "import sys, fleet.custody.stock, fleet.custody.catalogue\n"
        "edges = ('grpc', 'sqlalchemy', 'sqlmodel', 'psycopg', 'apscheduler', "
        "'prometheus_client', 'fleet.api', 'fleet.store', 'fleet.dispatch', 'fleet.web')\n"
        "print(sorted(m for m in sys.modules if m.startswith(edges)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"

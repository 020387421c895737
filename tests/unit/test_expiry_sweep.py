"""The expiry planner: levels at 30 and 7 days and on expiry, the most urgent one per lot, and a
daily sweep that alerts each lot once per level."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest

from fleet.custody.catalogue import Catalogue, ControlClass, DosageForm, Drug
from fleet.custody.stock import Lot, VaultStock
from fleet.domain.errors import InvalidArgument
from schedulers.expiry import EXPIRED, ExpiryAlert, ExpirySweep, expiry_alerts

TODAY = date(2025, 3, 1)
FEN = Drug(
    code="FEN",
    name="Fentanyl citrate injection",
    form=DosageForm.INJECTION,
    strength="50 µg/ml, 2 ml",
    unit="ampoule",
    control_class=ControlClass.NARCOTIC,
    manufacturer="Demo Pharma",
    returns_empty_container=True,
)
MID = Drug(
    code="MID",
    name="Midazolam injection",
    form=DosageForm.INJECTION,
    strength="5 mg/ml, 1 ml",
    unit="ampoule",
    control_class=ControlClass.PSYCHOTROPIC_II,
    manufacturer="Demo Pharma",
    returns_empty_container=True,
)
CATALOGUE = Catalogue([FEN, MID])


def day(n: int) -> date:
    return TODAY + timedelta(days=n)


def stock_of(*lots: tuple[str, str, int, int]) -> VaultStock:
    """(drug code, lot, days to expiry from TODAY, quantity) received on TODAY."""
    stock = VaultStock(CATALOGUE)
    for code, number, days, quantity in lots:
        stock.receive(Lot(code, number, day(days), "Demo Pharma"), quantity, TODAY)
    return stock


def levels(alerts: list[ExpiryAlert]) -> list[tuple[str, str, int, str]]:
    return [(a.drug_code, a.lot, a.days_left, a.level) for a in alerts]


def test_each_lot_at_the_most_urgent_level_reached() -> None:
    stock = stock_of(
        ("FEN", "FAR", 31, 5),
        ("FEN", "D30", 30, 5),
        ("FEN", "D8", 8, 5),
        ("FEN", "D7", 7, 5),
        ("MID", "M0", 0, 2),
        ("MID", "M9", 9, 2),
    )
    assert levels(expiry_alerts(stock, CATALOGUE, TODAY)) == [
        ("MID", "M0", 0, "7_DAYS"),  # the expiry day itself: still usable, last call
        ("FEN", "D7", 7, "7_DAYS"),
        ("FEN", "D8", 8, "30_DAYS"),
        ("MID", "M9", 9, "30_DAYS"),
        ("FEN", "D30", 30, "30_DAYS"),
    ]


def test_expired_lots_with_stock_are_reported_as_expired() -> None:
    stock = stock_of(("FEN", "OLD", 3, 4), ("FEN", "GONE", 2, 1))
    stock.pick_lot("FEN", "GONE", 1, TODAY)  # nothing left of it: nothing to report
    alerts = expiry_alerts(stock, CATALOGUE, day(4))
    assert levels(alerts) == [("FEN", "OLD", -1, EXPIRED)]
    alert = alerts[0]
    assert alert.expired and alert.quantity == 4 and alert.drug is FEN
    assert alert.expiry == day(3)
    assert "blocked from issue" in alert.message
    assert "lot OLD of Fentanyl citrate injection 50 µg/ml, 2 ml (FEN): 4 ampoule" in alert.message


def test_messages_for_warnings() -> None:
    stock = stock_of(("FEN", "A", 0, 1), ("FEN", "B", 12, 1))
    a, b = expiry_alerts(stock, CATALOGUE, TODAY)
    assert a.message.endswith("expire today (2025-03-01)")
    assert b.message.endswith("expire in 12 days (2025-03-13)")


def test_custom_thresholds() -> None:
    stock = stock_of(("FEN", "A", 50, 1), ("FEN", "B", 2, 1))
    alerts = expiry_alerts(stock, CATALOGUE, TODAY, warn_days=(3, 60, 14))
    assert levels(alerts) == [("FEN", "B", 2, "3_DAYS"), ("FEN", "A", 50, "60_DAYS")]
    assert levels(expiry_alerts(stock, CATALOGUE, day(3), warn_days=())) == [
        ("FEN", "B", -1, EXPIRED)
    ]


@pytest.mark.parametrize("warn_days", [(30, 30), (-1,), (7.5,), (True,)])
def test_bad_thresholds(warn_days: tuple[object, ...]) -> None:
    with pytest.raises(InvalidArgument) as caught:
        expiry_alerts(VaultStock(CATALOGUE), CATALOGUE, TODAY, warn_days=warn_days)  # type: ignore[arg-type]
    assert caught.value.field == "warn_days"


def test_today_must_be_a_date() -> None:
    with pytest.raises(InvalidArgument) as caught:
        expiry_alerts(VaultStock(CATALOGUE), CATALOGUE, datetime(2025, 3, 1, 6, 0))
    assert caught.value.field == "today"


def test_daily_sweep_alerts_once_per_lot_per_level() -> None:
    stock = stock_of(("FEN", "A", 40, 5), ("MID", "B", 5, 2))
    sweep = ExpirySweep(CATALOGUE)
    seen: dict[date, list[tuple[str, str, int, str]]] = {}
    for n in range(45):
        alerts = sweep.run(stock, day(n))
        if alerts:
            seen[day(n)] = levels(alerts)
    assert seen == {
        day(0): [("MID", "B", 5, "7_DAYS")],  # first seen at 7 days: no 30-day alert after it
        day(6): [("MID", "B", -1, EXPIRED)],
        day(10): [("FEN", "A", 30, "30_DAYS")],
        day(33): [("FEN", "A", 7, "7_DAYS")],
        day(41): [("FEN", "A", -1, EXPIRED)],
    }
    assert sweep.sent == {("FEN", "A"): EXPIRED, ("MID", "B"): EXPIRED}


def test_a_missed_day_jumps_straight_to_the_most_urgent_level() -> None:
    stock = stock_of(("FEN", "A", 20, 5))
    sweep = ExpirySweep(CATALOGUE)
    assert levels(sweep.run(stock, TODAY)) == [("FEN", "A", 20, "30_DAYS")]
    assert levels(sweep.run(stock, day(21))) == [("FEN", "A", -1, EXPIRED)]
    assert sweep.run(stock, day(22)) == []


def test_due_does_not_remember_until_marked_sent() -> None:
    stock = stock_of(("FEN", "A", 20, 5))
    sweep = ExpirySweep(CATALOGUE)
    first = sweep.due(stock, TODAY)
    assert sweep.due(stock, TODAY) == first  # delivery failed: it comes again
    sweep.mark_sent(first)
    assert sweep.due(stock, TODAY) == []


def test_mark_sent_refuses_a_level_it_does_not_know_and_changes_nothing() -> None:
    stock = stock_of(("FEN", "A", 2, 5), ("FEN", "B", 20, 1))
    other = expiry_alerts(stock, CATALOGUE, TODAY, warn_days=(3,))
    sweep = ExpirySweep(CATALOGUE)
    good = sweep.due(stock, TODAY)
    with pytest.raises(InvalidArgument) as caught:
        sweep.mark_sent([*good, *other])
    assert caught.value.field == "alerts"
    assert sweep.sent == {}


def test_sent_survives_a_restart() -> None:
    stock = stock_of(("FEN", "A", 20, 5))
    sweep = ExpirySweep(CATALOGUE)
    sweep.run(stock, TODAY)
    restarted = ExpirySweep(CATALOGUE, sent=sweep.sent)
    assert restarted.due(stock, day(1)) == []
    assert levels(restarted.due(stock, day(13))) == [("FEN", "A", 7, "7_DAYS")]
    with pytest.raises(InvalidArgument):
        ExpirySweep(CATALOGUE, sent={("FEN", "A"): "90_DAYS"})


def test_a_lot_emptied_and_refilled_keeps_its_memory() -> None:
    stock = stock_of(("FEN", "A", 20, 1))
    sweep = ExpirySweep(CATALOGUE)
    sweep.run(stock, TODAY)
    stock.pick("FEN", 1, TODAY)
    assert sweep.run(stock, day(1)) == []
    stock.return_units("FEN", "A", 1)
    assert sweep.run(stock, day(2)) == []

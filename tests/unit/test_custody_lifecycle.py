"""Controlled-drug custody lifecycle: scenarios from request to closing, authorization, the
exceptions (absent recipient, robot fault), discrepancies, the transition table, and the day's
register computed from the ledger alone."""

from __future__ import annotations

import dataclasses
import itertools
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from fleet.clock import ManualClock
from fleet.custody.catalogue import Catalogue, ControlClass, DosageForm, Drug
from fleet.custody.discrepancy import DiscrepancyState, ResolutionCode
from fleet.custody.ledger import AuthFactor, CustodyEvent, Ledger, verify
from fleet.custody.lifecycle import (
    STEP_STATES,
    TRANSITIONS,
    VAULT,
    CaseState,
    ClockedSink,
    CustodyBook,
    CustodyCase,
    LifecycleSettings,
    StepResult,
)
from fleet.custody.people import (
    Authentication,
    AuthenticationFailed,
    PinHashing,
    Role,
    StaffDirectory,
    StaffMember,
)
from fleet.custody.stock import Lot, VaultStock
from fleet.domain.errors import (
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)

T0 = 1_740_817_800.0  # 2025-03-01T08:30:00Z
FAST = PinHashing(cost=(16, 1, 1))
MAKER = "Demo Pharmaceutical Co. (Hubei)"

FENTANYL = Drug(
    code="86999900000101",
    name="Fentanyl citrate injection",
    form=DosageForm.INJECTION,
    strength="50 µg/ml, 2 ml",
    unit="ampoule",
    control_class=ControlClass.NARCOTIC,
    manufacturer=MAKER,
    returns_empty_container=True,
)
MORPHINE_ER = Drug(
    code="86999900000909",
    name="Morphine sulfate extended-release tablets",
    form=DosageForm.EXTENDED_RELEASE_TABLET,
    strength="30 mg",
    unit="tablet",
    control_class=ControlClass.NARCOTIC,
    manufacturer=MAKER,
    returns_empty_container=False,
)
# (lot, units, received on). F2502 expired on 2025-02-28, the day before T0.
LOTS: list[tuple[Lot, int, date]] = [
    (Lot(FENTANYL.code, "F2502", date(2025, 2, 28), MAKER), 20, date(2025, 1, 10)),
    (Lot(FENTANYL.code, "F2506", date(2025, 6, 30), MAKER), 10, date(2025, 1, 10)),
    (Lot(FENTANYL.code, "F2512", date(2025, 12, 31), MAKER), 30, date(2025, 2, 1)),
    (Lot(MORPHINE_ER.code, "M2609", date(2026, 9, 30), MAKER), 50, date(2025, 2, 1)),
]

PEOPLE = {
    "ph1": StaffMember("ph1", "Chen Jing", frozenset({Role.PHARMACIST}), "pharmacy"),
    "ph2": StaffMember("ph2", "Ngozi Okafor", frozenset({Role.PHARMACIST}), "pharmacy"),
    "ph3": StaffMember("ph3", "Erik Lindqvist", frozenset({Role.PHARMACIST}), "pharmacy"),
    "an1": StaffMember("an1", "Wang Lei", frozenset({Role.ANESTHESIOLOGIST}), "anesthesiology"),
    "an2": StaffMember("an2", "Lucia Garcia", frozenset({Role.ANESTHESIOLOGIST}), "anesthesia"),
    "n1": StaffMember("n1", "Zhang Min", frozenset({Role.OR_NURSE}), "or-suite"),
    "n2": StaffMember("n2", "Priya Patel", frozenset({Role.OR_NURSE}), "or-suite"),
    "log1": StaffMember("log1", "Tomas Novak", frozenset({Role.LOGISTICS}), "logistics"),
    "aud1": StaffMember("aud1", "Samir Haddad", frozenset({Role.AUDITOR}), "audit"),
}
PIN = {pid: f"{2580 + 7 * i:04d}" for i, pid in enumerate(PEOPLE)}


class World:
    """A pharmacy vault, staff, an in-memory ledger and the book, with a clock the test moves."""

    def __init__(self, settings: LifecycleSettings | None = None) -> None:
        self.now = T0
        self.clock = ManualClock(T0)
        self.ledger = Ledger(self.clock)
        self.catalogue = Catalogue([FENTANYL, MORPHINE_ER])
        self.stock = VaultStock(self.catalogue)
        for lot, units, day in LOTS:
            self.stock.receive(lot, units, day)
        self.directory = StaffDirectory(hashing=FAST)
        for pid, member in PEOPLE.items():
            self.directory.add(member, f"B-{pid}", PIN[pid])
        self.book = CustodyBook(
            self.catalogue, self.stock, self.directory, self.ledger, settings=settings
        )
        self.real_book = self.book
        self._seals = itertools.count(1)

    # -- time and people ----------------------------------------------------------------------

    def tick(self, dt: float = 30.0) -> float:
        self.now += dt
        self.clock.advance_to(self.now)
        return self.now

    def auth(self, pid: str, *, at: float | None = None) -> Authentication:
        return self.directory.authenticate(
            pid, f"B-{pid}", PIN[pid], self.now if at is None else at
        )

    def seal(self) -> str:
        return f"S-{next(self._seals):04d}"

    # -- steps with sensible defaults ---------------------------------------------------------

    def request(self, requester: str = "an1", **kw: Any) -> str:
        args: dict[str, Any] = {
            "prescription_no": "麻精一-2025-000123",
            "patient_ref": "P-0042",
            "case_ref": "SURG-20250301-03",
            "or_station": "OR-3",
            "drug_code": FENTANYL.code,
            "quantity": 5,
        }
        recipient = kw.get("recipient", requester)
        args["alternates"] = ("n2",) if recipient == "n1" else ("n1",)
        args.update(kw)
        result = self.book.request(self.auth(requester), now=self.tick(), **args)
        return result.case.id

    def case(self, cid: str) -> CustodyCase:
        return self.book.case(cid)

    def approve(self, cid: str, who: str = "ph1") -> StepResult:
        return self.book.approve(cid, self.auth(who), now=self.tick())

    def pick(
        self, cid: str, who: str = "ph1", scanned: list[tuple[str, int]] | None = None
    ) -> StepResult:
        if scanned is None:
            today = date.fromtimestamp(self.now)
            scanned = [(p.lot, p.quantity) for p in self.book.suggest_pick(cid, today)]
        return self.book.pick(cid, self.auth(who), scanned, now=self.tick())

    def verify(self, cid: str, who: str = "ph2") -> StepResult:
        return self.book.verify(cid, self.auth(who), now=self.tick())

    def load(
        self, cid: str, who: str | None = None, robot: str = "r1", comp: str = "1"
    ) -> StepResult:
        who = who or self.case(cid).holder
        return self.book.load(cid, self.auth(who), robot, comp, self.seal(), now=self.tick())

    def travel(self, cid: str) -> None:
        self.book.depart(cid, now=self.tick())
        self.book.arrive(cid, now=self.tick(300))
        self.book.await_recipient(cid, now=self.tick(5))

    def open_and_receive(
        self, cid: str, who: str = "an1", counts: Mapping[str, int] | None = None, **kw: Any
    ) -> StepResult:
        self.book.open_for_recipient(cid, self.auth(who), now=self.tick(20))
        if counts is None:
            counts = {lot: a.held for lot, a in self.case(cid).lots.items()}
        return self.book.receive(cid, self.auth(who), counts, now=self.tick(20), **kw)

    def deliver(self, cid: str) -> None:
        """APPROVED .. IN_OR_CUSTODY with everything as it should be."""
        self.approve(cid)
        self.pick(cid)
        self.verify(cid)
        self.load(cid)
        self.travel(cid)
        self.open_and_receive(cid, self.case(cid).recipient)
        self.book.store_in_or(cid, self.auth(self.case(cid).holder), now=self.tick())

    def reconcile(
        self,
        cid: str,
        who: str = "n1",
        unused: Mapping[str, int] | None = None,
        empties: Mapping[str, int] | None = None,
    ) -> StepResult:
        case = self.case(cid)
        if unused is None:
            unused = {lot: a.held for lot, a in case.lots.items()}
        if empties is None:
            empties = {lot: a.empties_held for lot, a in case.lots.items()}
        return self.book.reconcile(cid, self.auth(who), unused, empties, now=self.tick())

    def load_return(self, cid: str) -> StepResult:
        case = self.case(cid)
        return self.book.load_return(
            cid,
            self.auth(case.holder),
            case.robot_id,
            case.compartment,
            self.seal(),
            now=self.tick(),
        )

    def return_receive(
        self,
        cid: str,
        who: str = "ph1",
        witness: str = "ph2",
        unused: Mapping[str, int] | None = None,
        empties: Mapping[str, int] | None = None,
    ) -> StepResult:
        case = self.case(cid)
        if unused is None:
            unused = {lot: a.held for lot, a in case.lots.items()}
        if empties is None:
            empties = {lot: a.empties_held for lot, a in case.lots.items()}
        self.tick(600)  # the robot's way back
        return self.book.return_receive(
            cid, self.auth(who), self.auth(witness), unused, empties, now=self.tick()
        )

    def fault_and_start_recovery(self, cid: str) -> None:
        self.book.robot_fault(cid, now=self.tick(), detail="drive fault", location="L2-corridor-7")
        self.book.start_recovery(cid, now=self.tick(300))

    def recover(
        self,
        cid: str,
        *,
        lead: str = "ph2",
        second: str = "log1",
        seal_intact: bool = True,
        seal_seen: str | None = None,
        counts: Mapping[str, int] | None = None,
        empties: Mapping[str, int] | None = None,
    ) -> StepResult:
        case = self.case(cid)
        if counts is None:
            counts = {lot: a.held for lot, a in case.lots.items()}
        return self.book.recover(
            cid,
            self.auth(lead),
            self.auth(second),
            seal_intact=seal_intact,
            seal_id_seen=case.seal_id if seal_seen is None else seal_seen,
            blind_count=counts,
            blind_count_empties=empties,
            now=self.tick(),
        )

    # -- what the tests check -----------------------------------------------------------------

    def snapshot(self) -> tuple[int, Any, list[CustodyCase]]:
        return len(self.ledger), self.stock.snapshot(), self.real_book.cases()

    def refused(self, error: type[DomainError], call: Callable[[], object]) -> DomainError:
        """`call` raises `error` and changes nothing: ledger, stock and cases as before."""
        before = self.snapshot()
        with pytest.raises(error) as info:
            call()
        assert self.snapshot() == before
        return info.value

    def events(self, cid: str | None = None) -> list[CustodyEvent]:
        evs = self.ledger.events
        return evs if cid is None else [e for e in evs if e.order_id == cid]


# -- the register: custody balances computed from the ledger alone ------------------------------

SINK_PREFIXES = ("patient:", "waste", "loss")


def register(
    events: Iterable[CustodyEvent], catalogue: Catalogue
) -> dict[tuple[str, str, str, str], Decimal]:
    """Net quantity by (custodian, drug, lot, unit): what flowed in minus what flowed out.

    Conventions of the lifecycle: every event moves `quantity` from `from_custodian` to
    `to_custodian` (VERIFY, COUNT and the neutral discrepancy events have from = to); an
    ADMINISTER or WASTE of a drug that leaves a container leaves its giver one `empty:<unit>`
    per unit.
    """
    net: dict[tuple[str, str, str, str], Decimal] = defaultdict(Decimal)
    for e in events:
        net[(e.from_custodian, e.drug_code, e.lot, e.unit)] -= e.quantity
        net[(e.to_custodian, e.drug_code, e.lot, e.unit)] += e.quantity
        drug = catalogue.get(e.drug_code)
        if e.event_type in ("ADMINISTER", "WASTE") and drug.returns_empty_container:
            net[(e.from_custodian, e.drug_code, e.lot, f"empty:{drug.unit}")] += e.quantity
    return {k: v for k, v in net.items() if v}


def open_balances(net: Mapping[tuple[str, str, str, str], Decimal]) -> dict[Any, Decimal]:
    """Balances of custodians that must end the day at zero: people, compartments and
    discrepancies (everything but the vault and the sinks)."""
    return {k: v for k, v in net.items() if k[0] != VAULT and not k[0].startswith(SINK_PREFIXES)}


# -- the happy path -----------------------------------------------------------------------------


def test_happy_path_from_or3_request_to_closed_with_balance_zero() -> None:
    w = World()
    cid = w.request("an1", recipient="an1", alternates=("n1",))
    case = w.case(cid)
    assert (case.state, case.custodian, case.or_station) == (CaseState.REQUESTED, VAULT, "OR-3")

    w.approve(cid)
    today = date.fromtimestamp(w.now)
    # First expiry first out, never the expired lot.
    assert [(p.lot, p.quantity) for p in w.book.suggest_pick(cid, today)] == [("F2506", 5)]
    r = w.pick(cid, "ph1")
    assert (r.case.state, r.case.custodian) == (CaseState.PICKED, "person:ph1")
    assert w.stock.lot(FENTANYL.code, "F2506").on_hand == 5
    assert w.verify(cid, "ph2").case.state is CaseState.VERIFIED
    r = w.load(cid, "ph1", "r1", "1")
    assert (r.case.custodian, r.case.accountable) == ("compartment:r1/1", "ph1")
    w.travel(cid)
    assert w.case(cid).state is CaseState.AWAITING_RECIPIENT
    r = w.open_and_receive(cid, "an1", {"F2506": 5})
    assert (r.case.state, r.case.custodian, r.opened) == (CaseState.RECEIVED, "person:an1", ())
    r = w.book.store_in_or(cid, w.auth("an1"), now=w.tick())
    assert r.case.state is CaseState.IN_OR_CUSTODY

    w.tick(900)
    w.book.administer(cid, w.auth("an1"), "F2506", 2, "P-0042", now=w.tick())
    w.book.waste(
        cid, w.auth("an1"), w.auth("n1"), "F2506", 0, residual="1 ml", now=w.tick()
    )  # the rest of the second ampoule
    w.tick(1800)
    w.book.administer(cid, w.auth("an1"), "F2506", 1, "P-0042", now=w.tick())
    w.book.waste(
        cid, w.auth("an1"), w.auth("n1"), "F2506", 1, note="drawn up, not given", now=w.tick()
    )
    r = w.reconcile(cid, "n1", {"F2506": 1}, {"F2506": 4})
    assert (r.case.state, r.opened) == (CaseState.RECONCILIATION_SUBMITTED, ())
    r = w.load_return(cid)
    assert (r.case.state, r.case.custodian, r.case.accountable) == (
        CaseState.RETURN_IN_TRANSIT,
        "compartment:r1/1",
        "an1",
    )
    r = w.return_receive(cid, "ph1", "ph2", {"F2506": 1}, {"F2506": 4})
    case = r.case
    assert (case.state, case.custodian) == (CaseState.CLOSED, VAULT)
    a = case.lots["F2506"]
    assert (a.issued, a.administered, a.wasted, a.returned_unused, a.held) == (5, 3, 1, 1, 0)
    assert a.balance == 0
    assert (a.empty_containers_expected, a.empty_containers_returned) == (4, 4)
    assert w.stock.lot(FENTANYL.code, "F2506").on_hand == 6
    assert verify(w.ledger.events).ok
    assert [h.state for h in case.history if h.step != "administer" and h.step != "waste"] == [
        CaseState.REQUESTED,
        CaseState.APPROVED,
        CaseState.PICKED,
        CaseState.VERIFIED,
        CaseState.LOADED,
        CaseState.IN_TRANSIT,
        CaseState.ARRIVED,
        CaseState.AWAITING_RECIPIENT,
        CaseState.AWAITING_RECIPIENT,  # open_for_recipient
        CaseState.RECEIVED,
        CaseState.IN_OR_CUSTODY,
        CaseState.RECONCILIATION_SUBMITTED,
        CaseState.RETURN_IN_TRANSIT,
        CaseState.RETURN_RECEIVED,
        CaseState.CLOSED,
    ]
    assert case.event_seqs == [e.seq for e in w.events(cid)]


def test_ledger_events_follow_the_register_conventions() -> None:
    w = World()
    cid = w.request("an1", order_id="ORD-77")
    w.deliver(cid)
    w.book.administer(cid, w.auth("an1"), "F2506", 4, "P-0042", now=w.tick())
    w.book.waste(cid, w.auth("an1"), w.auth("n1"), "F2506", 0, residual="0.5 ml", now=w.tick())
    w.reconcile(cid)
    w.load_return(cid)
    w.return_receive(cid)
    rows = [
        (e.event_type, e.from_custodian, e.to_custodian, e.unit, int(e.quantity))
        for e in w.events("ORD-77")
    ]
    assert rows == [
        ("ISSUE", VAULT, "person:ph1", "ampoule", 5),
        ("VERIFY", "person:ph1", "person:ph1", "ampoule", 5),
        ("LOAD", "person:ph1", "compartment:r1/1", "ampoule", 5),
        ("RECEIVE", "compartment:r1/1", "person:an1", "ampoule", 5),
        ("ADMINISTER", "person:an1", "patient:P-0042", "ampoule", 4),
        ("WASTE", "person:an1", "waste", "ampoule", 0),
        ("COUNT", "person:an1", "person:an1", "ampoule", 1),
        ("COUNT", "person:an1", "person:an1", "empty:ampoule", 4),
        ("RETURN", "person:an1", "compartment:r1/1", "ampoule", 1),
        ("RETURN", "person:an1", "compartment:r1/1", "empty:ampoule", 4),
        ("RETURN_RECEIVE", "compartment:r1/1", VAULT, "ampoule", 1),
        ("RETURN_RECEIVE", "compartment:r1/1", VAULT, "empty:ampoule", 4),
    ]
    by_type = {e.event_type: e for e in w.events("ORD-77")}
    for e in w.events("ORD-77"):
        assert e.prescription == "麻精一-2025-000123"
        assert (e.lot, e.expiry) == ("F2506", date(2025, 6, 30))
        assert e.actor and set(e.actor_auth) == {AuthFactor.BADGE, AuthFactor.PIN}
    issue, verify_ev, load = by_type["ISSUE"], by_type["VERIFY"], by_type["LOAD"]
    assert (issue.actor, issue.location) == ("ph1", "pharmacy")
    assert verify_ev.actor == "ph2"
    assert (load.robot_id, load.compartment, load.seal_id) == ("r1", "1", "S-0001")
    receive = by_type["RECEIVE"]
    assert (receive.blind_count, receive.expected_count, receive.location) == (5, 5, "OR-3")
    assert (receive.robot_id, receive.seal_id) == ("r1", "S-0001")
    waste = by_type["WASTE"]
    assert (waste.witness, waste.note) == ("n1", "residual 0.5 ml")
    assert set(waste.witness_auth) == {"badge", "pin"}
    rr = by_type["RETURN_RECEIVE"]
    assert (rr.actor, rr.witness, rr.seal_id, rr.location) == ("ph1", "ph2", "S-0002", "pharmacy")
    times = [e.occurred_at for e in w.events("ORD-77")]
    assert times == sorted(times) and times[0] > T0


def test_a_tablet_drug_leaves_no_empty_containers() -> None:
    w = World()
    cid = w.request("an1", drug_code=MORPHINE_ER.code, quantity=2)
    w.deliver(cid)
    w.book.administer(cid, w.auth("an1"), "M2609", 1, "P-0042", now=w.tick())
    w.refused(InvalidArgument, lambda: w.reconcile(cid, unused={"M2609": 1}, empties={"M2609": 1}))
    w.reconcile(cid, unused={"M2609": 1}, empties={})
    w.load_return(cid)
    case = w.return_receive(cid, unused={"M2609": 1}, empties={}).case
    assert case.state is CaseState.CLOSED
    assert [e.unit for e in w.events(cid)].count("empty:tablet") == 0


# -- authorization ------------------------------------------------------------------------------


def test_a_nurse_cannot_approve() -> None:
    w = World()
    cid = w.request("n1")
    err = w.refused(PermissionDenied, lambda: w.book.approve(cid, w.auth("n1"), now=w.tick()))
    assert "may not approve" in str(err)
    w.refused(PermissionDenied, lambda: w.book.approve(cid, w.auth("an1"), now=w.tick()))
    assert w.approve(cid, "ph3").case.approved_by == "ph3"


def test_only_ordering_roles_request_and_the_recipient_must_be_able_to_receive() -> None:
    w = World()
    w.refused(PermissionDenied, lambda: w.request("ph1"))
    w.refused(PermissionDenied, lambda: w.request("log1"))
    err = w.refused(InvalidArgument, lambda: w.request("n1", recipient="log1"))
    assert err.field == "recipient"  # type: ignore[attr-defined]
    err = w.refused(InvalidArgument, lambda: w.request("n1", alternates=("ph1",)))
    assert err.field == "alternates"  # type: ignore[attr-defined]
    err = w.refused(InvalidArgument, lambda: w.request("n1", quantity=0))
    assert err.field == "quantity"  # type: ignore[attr-defined]
    err = w.refused(InvalidArgument, lambda: w.request("n1", drug_code="nope"))
    assert err.field == "drug_code"  # type: ignore[attr-defined]
    err = w.refused(InvalidArgument, lambda: w.request("n1", prescription_no=" "))
    assert err.field == "prescription_no"  # type: ignore[attr-defined]


def test_the_picker_cannot_verify_their_own_pick() -> None:
    w = World()
    cid = w.request()
    w.approve(cid)
    w.pick(cid, "ph1")
    err = w.refused(PermissionDenied, lambda: w.verify(cid, "ph1"))
    assert "may take no part" in str(err)
    w.refused(PermissionDenied, lambda: w.verify(cid, "an1"))
    assert w.verify(cid, "ph2").case.verifier == "ph2"


def test_nobody_is_their_own_witness() -> None:
    w = World()
    cid = w.request()
    w.deliver(cid)
    # A pharmacist may not witness their own waste (nor may anyone else).
    err = w.refused(
        PermissionDenied,
        lambda: w.book.waste(cid, w.auth("ph1"), w.auth("ph1"), "F2506", 1, now=w.tick()),
    )
    assert "own second person" in str(err)
    w.refused(
        PermissionDenied,
        lambda: w.book.waste(cid, w.auth("an1"), w.auth("an1"), "F2506", 1, now=w.tick()),
    )
    # A witness is required, and a logistics person cannot be one.
    w.refused(
        InvalidArgument,
        lambda: w.book.waste(cid, w.auth("an1"), None, "F2506", 1, now=w.tick()),  # type: ignore[arg-type]
    )
    w.refused(
        PermissionDenied,
        lambda: w.book.waste(cid, w.auth("an1"), w.auth("log1"), "F2506", 1, now=w.tick()),
    )
    w.book.administer(cid, w.auth("an1"), "F2506", 5, "P-0042", now=w.tick())
    w.reconcile(cid)
    w.load_return(cid)
    # The pharmacist receiving a return cannot be their own witness either.
    w.refused(PermissionDenied, lambda: w.return_receive(cid, "ph1", "ph1"))
    assert w.return_receive(cid, "ph1", "an1").case.state is CaseState.CLOSED


def test_stale_or_forged_authentications_are_refused() -> None:
    w = World()
    cid = w.request()
    stale = w.auth("ph1", at=w.now - 500)
    w.refused(AuthenticationFailed, lambda: w.book.approve(cid, stale, now=w.tick()))
    forged = Authentication("ph1", (AuthFactor.BADGE, AuthFactor.PIN), w.now)
    w.refused(AuthenticationFailed, lambda: w.book.approve(cid, forged, now=w.tick()))


def test_the_compartment_opens_only_for_the_recipient_with_both_factors() -> None:
    w = World()
    cid = w.request("an1", recipient="an1", alternates=("n1",))
    w.approve(cid)
    w.pick(cid)
    w.verify(cid)
    w.load(cid)
    w.travel(cid)
    # Somebody else, even someone allowed to receive, is not the recipient.
    err = w.refused(
        PermissionDenied, lambda: w.book.open_for_recipient(cid, w.auth("an2"), now=w.tick())
    )
    assert "not the person" in str(err)
    # The alternate only once paged.
    w.refused(PermissionDenied, lambda: w.book.open_for_recipient(cid, w.auth("n1"), now=w.tick()))
    # A wrong PIN: the directory refuses the authentication itself.
    with pytest.raises(AuthenticationFailed):
        w.directory.authenticate("an1", "B-an1", "9999", w.now)
    # One factor only (made up, not issued by the directory): refused.
    one_factor = Authentication("an1", (AuthFactor.BADGE,), w.now)
    w.refused(AuthenticationFailed, lambda: w.book.open_for_recipient(cid, one_factor, now=w.now))
    # Not opened: no receipt.
    w.refused(
        FailedPrecondition,
        lambda: w.book.receive(cid, w.auth("an1"), {"F2506": 5}, now=w.tick()),
    )
    grant = w.book.open_for_recipient(cid, w.auth("an1"), now=w.tick())
    assert (grant.staff_id, grant.robot_id, grant.compartment) == ("an1", "r1", "1")
    assert grant.expires_at == grant.opened_at + 120
    # Open for an1 only: an2 still cannot open it meanwhile.
    w.refused(PermissionDenied, lambda: w.book.open_for_recipient(cid, w.auth("an2"), now=w.tick()))
    # The window runs out.
    w.tick(121)
    err = w.refused(
        FailedPrecondition,
        lambda: w.book.receive(cid, w.auth("an1"), {"F2506": 5}, now=w.now),
    )
    assert "open it again" in str(err)
    r = w.open_and_receive(cid, "an1", {"F2506": 5})
    assert (r.case.state, r.case.received_by) == (CaseState.RECEIVED, "an1")
    assert len(r.case.grants) == 2


def test_an_expired_lot_cannot_be_picked() -> None:
    w = World()
    cid = w.request()
    w.approve(cid)
    err = w.refused(FailedPrecondition, lambda: w.pick(cid, "ph1", [("F2502", 5)]))
    assert "expired" in str(err)
    err = w.refused(FailedPrecondition, lambda: w.pick(cid, "ph1", [("F2506", 3), ("F2502", 2)]))
    w.refused(NotFound, lambda: w.pick(cid, "ph1", [("NO-SUCH-LOT", 5)]))
    err = w.refused(InvalidArgument, lambda: w.pick(cid, "ph1", [("F2506", 4)]))
    assert err.field == "scanned"  # type: ignore[attr-defined]
    w.refused(PermissionDenied, lambda: w.pick(cid, "n1", [("F2506", 5)]))
    r = w.pick(cid, "ph1", [("F2506", 3), ("F2512", 2)])
    assert {lot: a.issued for lot, a in r.case.lots.items()} == {"F2506": 3, "F2512": 2}
    assert [e.lot for e in r.events] == ["F2506", "F2512"]


def test_two_people_force_open_a_faulted_robot() -> None:
    w = World()
    cid = w.request()
    w.approve(cid)
    w.pick(cid)
    w.verify(cid)
    w.load(cid, "ph1")
    w.book.depart(cid, now=w.tick())
    w.fault_and_start_recovery(cid)
    w.refused(
        PermissionDenied, lambda: w.recover(cid, lead="log1", second="ph2")
    )  # pharmacist leads
    w.refused(PermissionDenied, lambda: w.recover(cid, lead="ph2", second="ph2"))
    w.refused(PermissionDenied, lambda: w.recover(cid, lead="ph2", second="n1"))
    assert w.recover(cid, lead="ph2", second="log1").case.state is CaseState.RECOVERED


# -- the exceptions -----------------------------------------------------------------------------


def test_absent_recipient_alternate_then_back_to_the_pharmacy_every_unit_accounted_for() -> None:
    w = World()
    on_hand = w.stock.on_hand(FENTANYL.code)
    cid = w.request("an1", recipient="an1", alternates=("n1",), quantity=7)
    w.approve(cid)
    w.pick(cid)  # FEFO: 7 of F2506
    w.verify(cid)
    w.load(cid)
    w.travel(cid)
    assert w.book.timeouts_due(w.now) == []
    err = w.refused(FailedPrecondition, lambda: w.book.recipient_absent(cid, now=w.tick(300)))
    assert "s left" in str(err)
    w.tick(300)
    assert w.book.timeouts_due(w.now) == [cid]
    r = w.book.recipient_absent(cid, now=w.now)
    assert (r.case.state, r.case.alternate) == (CaseState.ALT_RECIPIENT_PAGED, "n1")
    assert r.case.custodian == "compartment:r1/1"  # custody has not moved
    w.refused(FailedPrecondition, lambda: w.book.recipient_absent(cid, now=w.tick(599 - 30)))
    r = w.book.recipient_absent(cid, now=w.tick(31))
    assert r.case.state is CaseState.RETURNING_TO_PHARMACY
    # Nobody at the OR can take it now.
    w.refused(FailedPrecondition, lambda: w.book.open_for_recipient(cid, w.auth("n1"), now=w.now))
    r = w.return_receive(cid, "ph1", "ph3", {"F2506": 7}, {})
    case = r.case
    assert (case.state, case.custodian) == (CaseState.CLOSED, VAULT)
    a = case.lots["F2506"]
    assert (a.issued, a.returned_unused, a.administered, a.balance) == (7, 7, 0, 0)
    assert w.stock.on_hand(FENTANYL.code) == on_hand
    rr = [e for e in r.events if e.event_type == "RETURN_RECEIVE"]
    assert [(e.from_custodian, int(e.quantity), e.blind_count) for e in rr] == [
        ("compartment:r1/1", 7, 7)
    ]
    assert open_balances(register(w.ledger.events, w.catalogue)) == {}
    assert verify(w.ledger.events).ok


def test_the_paged_alternate_takes_the_delivery() -> None:
    w = World(LifecycleSettings(recipient_timeout_s=60, alt_timeout_s=60))
    cid = w.request("n2", recipient="n2", alternates=("n1", "an2"))
    w.approve(cid)
    w.pick(cid)
    w.verify(cid)
    w.load(cid)
    w.travel(cid)
    w.tick(61)
    assert w.book.recipient_absent(cid, now=w.now, alternate="an2").case.alternate == "an2"
    w.refused(PermissionDenied, lambda: w.book.open_for_recipient(cid, w.auth("n1"), now=w.now))
    r = w.open_and_receive(cid, "an2")
    assert (r.case.state, r.case.custodian) == (CaseState.RECEIVED, "person:an2")


def test_robot_fault_recovery_with_intact_seal_and_matching_count_continues() -> None:
    w = World()
    cid = w.request(quantity=6)
    w.approve(cid)
    w.pick(cid)
    w.verify(cid)
    w.load(cid, "ph1", "r1", "2")
    w.book.depart(cid, now=w.tick())
    r = w.book.robot_fault(cid, now=w.tick(), detail="lidar fault", location="L2-corridor-7")
    # Custody stays with the sealed compartment and its accountable pharmacist.
    assert (r.case.state, r.case.custodian, r.case.accountable) == (
        CaseState.DELIVERY_FAULT,
        "compartment:r1/2",
        "ph1",
    )
    assert r.events == ()
    w.refused(FailedPrecondition, lambda: w.recover(cid))  # nobody dispatched yet
    w.book.start_recovery(cid, now=w.tick(300))
    r = w.recover(cid, lead="ph2", second="log1", seal_intact=True, counts={"F2506": 6})
    assert (r.case.state, r.case.custodian, r.opened) == (CaseState.RECOVERED, "person:ph2", ())
    (override,) = r.events
    assert (override.event_type, override.from_custodian, override.to_custodian) == (
        "OVERRIDE",
        "compartment:r1/2",
        "person:ph2",
    )
    assert (override.actor, override.witness, override.location) == ("ph2", "log1", "L2-corridor-7")
    assert (override.blind_count, override.expected_count, override.seal_id) == (6, 6, "S-0001")
    # Redispatched on another robot; the return leg then uses that one.
    r = w.load(cid, "ph2", "r2", "1")
    assert (r.case.custodian, r.case.accountable) == ("compartment:r2/1", "ph2")
    w.travel(cid)
    w.open_and_receive(cid, "an1")
    w.book.store_in_or(cid, w.auth("an1"), now=w.tick())
    w.book.administer(cid, w.auth("an1"), "F2506", 2, "P-0042", now=w.tick())
    w.reconcile(cid, "an1")
    assert w.load_return(cid).case.custodian == "compartment:r2/1"
    case = w.return_receive(cid).case
    assert case.state is CaseState.CLOSED
    a = case.lots["F2506"]
    assert (a.issued, a.administered, a.returned_unused, a.balance, a.empties_balance) == (
        6,
        2,
        4,
        0,
        0,
    )
    assert open_balances(register(w.ledger.events, w.catalogue)) == {}


def test_recovered_drugs_can_be_hand_carried_or_returned_to_stock() -> None:
    w = World()
    carried = w.request("an1")
    back = w.request("an1", patient_ref="P-0043", case_ref="SURG-2")
    for cid, comp in ((carried, "1"), (back, "2")):
        w.approve(cid)
        w.pick(cid)
        w.verify(cid)
        w.load(cid, "ph1", "r1", comp)
        w.book.depart(cid, now=w.tick())
        w.fault_and_start_recovery(cid)
        w.recover(cid, lead="ph2", second="ph3")
    assert (
        w.book.hand_carry(carried, w.auth("ph2"), now=w.tick()).case.state is CaseState.HAND_CARRIED
    )
    # The carrier hands over: they authenticate as the second person.
    w.refused(
        InvalidArgument,
        lambda: w.book.receive(carried, w.auth("an1"), {"F2506": 5}, now=w.tick()),
    )
    w.refused(
        PermissionDenied,
        lambda: w.book.receive(
            carried, w.auth("an1"), {"F2506": 5}, now=w.tick(), witness_auth=w.auth("n1")
        ),
    )
    r = w.book.receive(
        carried, w.auth("an1"), {"F2506": 5}, now=w.tick(), witness_auth=w.auth("ph2")
    )
    assert (r.case.state, r.case.custodian) == (CaseState.RECEIVED, "person:an1")
    assert r.events[0].from_custodian == "person:ph2" and r.events[0].robot_id == ""
    # The other goes back into stock.
    case = w.return_receive(back, "ph2", "ph3").case
    assert (case.state, case.lots["F2506"].returned_unused) == (CaseState.CLOSED, 5)
    # The carried case has no compartment kept: its return is by hand.
    w.book.store_in_or(carried, w.auth("an1"), now=w.tick())
    w.reconcile(carried, "an1")
    w.refused(FailedPrecondition, lambda: w.load_return(carried))
    # Returned by hand: the holder hands it back, here as the witness.
    w.refused(PermissionDenied, lambda: w.return_receive(carried, "ph1", "ph2"))
    assert w.return_receive(carried, "ph1", "an1").case.state is CaseState.CLOSED


def test_broken_seal_discrepancy_closes_with_reason_witness_and_another_pharmacist() -> None:
    w = World()
    cid = w.request(quantity=5)
    w.approve(cid)
    w.pick(cid)
    w.verify(cid)
    w.load(cid, "ph1")
    w.travel(cid)
    w.fault_and_start_recovery(cid)
    r = w.recover(cid, lead="ph2", second="log1", seal_intact=False, counts={"F2506": 4})
    assert (r.case.state, r.case.custodian) == (CaseState.DISCREPANCY_OPEN, "person:ph2")
    (d,) = r.opened
    assert (d.lot, d.expected, d.counted, d.missing, d.state) == (
        "F2506",
        5,
        4,
        1,
        DiscrepancyState.OPEN,
    )
    assert "seal broken" in d.problems
    opened = [e for e in r.events if e.event_type == "DISCREPANCY_OPEN"]
    assert [(e.from_custodian, e.to_custodian, int(e.quantity)) for e in opened] == [
        ("compartment:r1/1", f"discrepancy:{d.id}", 1)
    ]
    # Conservation while open: 5 issued = 4 held + 1 missing.
    case = r.case
    assert case.lots["F2506"].held + case.open_missing("F2506") == 5
    # Nothing moves on while it is open.
    w.refused(FailedPrecondition, lambda: w.book.hand_carry(cid, w.auth("ph2"), now=w.tick()))
    # A reason, a witness and a note for a loss; a write-off code that fits.
    w.refused(
        InvalidArgument,
        lambda: w.book.resolve(d.id, w.auth("ph2"), w.auth("ph3"), "LOSS", "", now=w.tick()),
    )
    w.refused(
        InvalidArgument,
        lambda: w.book.resolve(
            d.id, w.auth("ph2"), w.auth("ph3"), "SEAL_DAMAGED", "x", now=w.tick()
        ),
    )
    w.refused(
        PermissionDenied,
        lambda: w.book.resolve(d.id, w.auth("ph2"), w.auth("ph2"), "LOSS", "x", now=w.tick()),
    )
    w.refused(
        FailedPrecondition,
        lambda: w.book.approve_resolution(d.id, w.auth("ph1"), now=w.tick()),
    )
    note = "one ampoule missing; reported to security and the drug regulator (ref 2025-17)"
    r = w.book.resolve(d.id, w.auth("ph2"), w.auth("ph3"), ResolutionCode.LOSS, note, now=w.tick())
    assert r.events == () and r.case.discrepancies[d.id].state is DiscrepancyState.PROPOSED
    # Neither the resolver nor the witness approves; nor does a non-pharmacist.
    for who in ("ph2", "ph3", "an1"):
        approver = w.auth(who)
        w.refused(
            PermissionDenied,
            lambda: w.book.approve_resolution(d.id, approver, now=w.now),  # noqa: B023
        )
    r = w.book.approve_resolution(d.id, w.auth("ph1"), now=w.tick())
    assert r.case.state is CaseState.RECOVERED
    (ev,) = r.events
    assert (ev.event_type, ev.from_custodian, ev.to_custodian, int(ev.quantity)) == (
        "DISCREPANCY_RESOLVE",
        f"discrepancy:{d.id}",
        "loss",
        1,
    )
    assert (ev.actor, ev.witness, ev.reason) == ("ph2", "ph3", "LOSS")
    assert "approved by ph1" in ev.note and note in ev.note
    w.refused(
        FailedPrecondition, lambda: w.book.approve_resolution(d.id, w.auth("ph1"), now=w.tick())
    )
    case = w.return_receive(cid, "ph2", "ph3", {"F2506": 4}, {}).case
    assert case.state is CaseState.CLOSED
    a = case.lots["F2506"]
    assert (a.issued, a.returned_unused, a.lost, a.balance) == (5, 4, 1, 0)
    assert open_balances(register(w.ledger.events, w.catalogue)) == {}
    assert verify(w.ledger.events).ok


def test_a_different_seal_with_a_matching_count_is_a_discrepancy_too() -> None:
    w = World()
    cid = w.request(quantity=2)
    w.approve(cid)
    w.pick(cid)
    w.verify(cid)
    w.load(cid)
    w.book.depart(cid, now=w.tick())
    w.fault_and_start_recovery(cid)
    r = w.recover(cid, seal_seen="S-9999")
    (d,) = r.opened
    assert (d.missing, d.surplus, r.case.state) == (0, 0, CaseState.DISCREPANCY_OPEN)
    (ev,) = [e for e in r.events if e.event_type == "DISCREPANCY_OPEN"]
    assert (ev.from_custodian, ev.to_custodian, int(ev.quantity)) == (
        f"discrepancy:{d.id}",
        f"discrepancy:{d.id}",
        0,
    )
    w.book.resolve(d.id, w.auth("ph2"), w.auth("n1"), "SEAL_DAMAGED", "label torn", now=w.tick())
    w.book.reject_resolution(d.id, w.auth("ph3"), "photograph the seal first", now=w.tick())
    assert w.book.discrepancy(d.id).state is DiscrepancyState.OPEN
    w.book.resolve(d.id, w.auth("ph2"), w.auth("n1"), "SEAL_DAMAGED", "photo #12", now=w.tick())
    assert (
        w.book.approve_resolution(d.id, w.auth("ph3"), now=w.tick()).case.state
        is CaseState.RECOVERED
    )


def test_a_blind_count_mismatch_at_receipt_opens_a_discrepancy_and_the_case_goes_on() -> None:
    w = World()
    cid = w.request(quantity=5)
    w.approve(cid)
    w.pick(cid)
    w.verify(cid)
    w.load(cid)
    w.travel(cid)
    r = w.open_and_receive(cid, "an1", {"F2506": 4, "F9999": 1})
    assert (r.case.state, r.case.custodian) == (CaseState.RECEIVED, "person:an1")
    short, wrong_lot = r.opened
    assert (short.lot, short.missing, short.custodian) == ("F2506", 1, "compartment:r1/1")
    assert (wrong_lot.lot, wrong_lot.surplus, wrong_lot.missing) == ("F9999", 1, 0)
    assert "not issued" in wrong_lot.problems[0]
    receive = [e for e in r.events if e.event_type == "RECEIVE"]
    assert [(e.lot, int(e.quantity), e.blind_count, e.expected_count) for e in receive] == [
        ("F2506", 4, 4, 5)
    ]
    assert r.case.lots["F2506"].held == 4
    w.book.store_in_or(cid, w.auth("an1"), now=w.tick())
    # Recount in the OR: the fifth ampoule was under the tray.
    w.book.resolve(short.id, w.auth("an1"), w.auth("n1"), "FOUND", "under the tray", now=w.tick())
    w.book.resolve(
        wrong_lot.id, w.auth("an1"), w.auth("n1"), "COUNT_ERROR", "mis-scan", now=w.tick()
    )
    r = w.book.approve_resolution(short.id, w.auth("ph1"), now=w.tick())
    assert r.case.lots["F2506"].held == 5 and r.events[0].to_custodian == "person:an1"
    w.book.approve_resolution(wrong_lot.id, w.auth("ph1"), now=w.tick())
    w.book.administer(cid, w.auth("an1"), "F2506", 5, "P-0042", now=w.tick())
    w.reconcile(cid, "an1")
    w.load_return(cid)
    assert w.return_receive(cid).case.state is CaseState.CLOSED


def test_a_return_that_does_not_balance_stays_open_until_resolved() -> None:
    w = World()
    cid = w.request(quantity=5)
    w.deliver(cid)
    w.book.administer(cid, w.auth("an1"), "F2506", 4, "P-0042", now=w.tick())
    w.reconcile(cid, "an1", {"F2506": 1}, {"F2506": 4})
    w.load_return(cid)
    r = w.return_receive(cid, "ph1", "ph2", {"F2506": 1}, {"F2506": 3})
    assert (r.case.state, r.case.custodian) == (CaseState.DISCREPANCY_OPEN, VAULT)
    (d,) = r.opened
    assert (d.unit, d.empties, d.missing) == ("empty:ampoule", True, 1)
    w.book.resolve(
        d.id, w.auth("an1"), w.auth("n1"), "BROKEN", "dropped in the sharps bin", now=w.tick()
    )
    case = w.book.approve_resolution(d.id, w.auth("ph3"), now=w.tick()).case
    assert case.state is CaseState.CLOSED
    a = case.lots["F2506"]
    assert (a.opened, a.empties_returned, a.empties_written_off, a.balance) == (4, 3, 1, 0)


def test_a_reconciliation_that_does_not_match_opens_a_discrepancy() -> None:
    w = World()
    cid = w.request(quantity=5)
    w.deliver(cid)
    w.book.administer(cid, w.auth("an1"), "F2506", 2, "P-0042", now=w.tick())
    r = w.reconcile(cid, "n1", {"F2506": 2}, {"F2506": 2})
    (d,) = r.opened
    assert (d.step, d.missing, d.custodian) == ("reconcile", 1, "person:an1")
    assert r.case.state is CaseState.RECONCILIATION_SUBMITTED
    counts = [e for e in r.events if e.event_type == "COUNT"]
    assert [(e.unit, e.blind_count, e.expected_count) for e in counts] == [
        ("ampoule", 2, 3),
        ("empty:ampoule", 2, 2),
    ]
    w.load_return(cid)
    # Units found at the pharmacy: back to the vault once approved.
    r = w.return_receive(cid, unused={"F2506": 2})
    assert r.case.state is CaseState.DISCREPANCY_OPEN
    w.book.resolve(
        d.id, w.auth("n1"), w.auth("an1"), "FOUND", "in the pocket of the gown", now=w.tick()
    )
    r = w.book.approve_resolution(d.id, w.auth("ph1"), now=w.tick())
    assert r.case.state is CaseState.CLOSED and r.events[0].to_custodian == VAULT
    assert r.case.lots["F2506"].returned_unused == 3
    assert w.stock.lot(FENTANYL.code, "F2506").on_hand == 10 - 5 + 3


# -- robots and compartments --------------------------------------------------------------------


def test_the_compartment_is_kept_for_the_case_and_used_for_the_return_leg() -> None:
    w = World()
    first = w.request()
    w.deliver(first)
    other = w.request("n1", patient_ref="P-0099", case_ref="SURG-9")
    w.approve(other)
    w.pick(other)
    w.verify(other)
    err = w.refused(FailedPrecondition, lambda: w.load(other, "ph1", "r1", "1"))
    assert first in str(err)
    w.refused(
        InvalidArgument,
        lambda: w.book.load(other, w.auth("ph1"), "r2", "1", "S-0001", now=w.tick()),  # used seal
    )
    w.refused(PermissionDenied, lambda: w.load(other, "ph2", "r2", "1"))  # not the holder
    w.load(other, "ph1", "r2", "1")
    w.book.administer(first, w.auth("an1"), "F2506", 5, "P-0042", now=w.tick())
    w.reconcile(first)
    for robot, comp, field in (("r2", "1", "robot_id"), ("r1", "2", "compartment")):
        holder = w.auth("an1")
        err = w.refused(
            InvalidArgument,
            lambda: w.book.load_return(first, holder, robot, comp, "S-0777", now=w.now),  # noqa: B023
        )
        assert err.field == field  # type: ignore[attr-defined]
    w.refused(
        InvalidArgument,
        lambda: w.book.load_return(first, w.auth("an1"), "r1", "1", "S-0001", now=w.tick()),
    )
    w.refused(
        PermissionDenied,
        lambda: w.book.load_return(first, w.auth("n1"), "r1", "1", "S-0777", now=w.tick()),
    )
    assert w.load_return(first).case.custodian == "compartment:r1/1"


def test_handover_moves_custody_between_two_authenticated_people() -> None:
    w = World()
    cid = w.request(recipient="n1")
    w.deliver(cid)
    assert w.case(cid).custodian == "person:n1"
    w.refused(
        PermissionDenied, lambda: w.book.handover(cid, w.auth("n2"), w.auth("an1"), now=w.tick())
    )  # n2 does not hold it
    w.refused(
        PermissionDenied, lambda: w.book.handover(cid, w.auth("n1"), w.auth("ph1"), now=w.tick())
    )  # a pharmacist does not receive in the OR
    r = w.book.handover(cid, w.auth("n1"), w.auth("an1"), now=w.tick())
    (ev,) = r.events
    assert (ev.event_type, ev.from_custodian, ev.to_custodian, ev.actor, ev.witness) == (
        "HANDOVER",
        "person:n1",
        "person:an1",
        "an1",
        "n1",
    )
    assert (r.case.state, r.case.custodian) == (CaseState.IN_OR_CUSTODY, "person:an1")


def test_a_pick_is_handed_to_another_pharmacist_who_loads_it() -> None:
    w = World()
    cid = w.request()
    w.approve(cid)
    w.pick(cid, "ph1")
    w.verify(cid, "ph2")
    w.refused(
        PermissionDenied, lambda: w.book.handover(cid, w.auth("ph1"), w.auth("ph1"), now=w.tick())
    )
    w.refused(
        PermissionDenied, lambda: w.book.handover(cid, w.auth("ph1"), w.auth("n1"), now=w.tick())
    )  # a nurse does not take drugs in the pharmacy
    r = w.book.handover(cid, w.auth("ph1"), w.auth("ph3"), now=w.tick())
    (ev,) = r.events
    assert (ev.from_custodian, ev.to_custodian, ev.location) == (
        "person:ph1",
        "person:ph3",
        "pharmacy",
    )
    assert (r.case.state, r.case.holder) == (CaseState.VERIFIED, "ph3")
    w.refused(PermissionDenied, lambda: w.load(cid, "ph1"))  # no longer holds it
    assert w.load(cid, "ph3").case.accountable == "ph3"


def test_store_in_or_with_a_keeper_hands_custody_over() -> None:
    w = World()
    cid = w.request("n1", recipient="n1")
    w.approve(cid)
    w.pick(cid)
    w.verify(cid)
    w.load(cid)
    w.travel(cid)
    w.open_and_receive(cid, "n1")
    r = w.book.store_in_or(cid, w.auth("n1"), keeper_auth=w.auth("an2"), now=w.tick())
    assert (r.case.state, r.case.custodian) == (CaseState.IN_OR_CUSTODY, "person:an2")
    assert [e.event_type for e in r.events] == ["HANDOVER"]


def test_administering_and_wasting_stay_within_what_is_held() -> None:
    w = World()
    cid = w.request(quantity=2)
    w.deliver(cid)
    w.refused(
        FailedPrecondition,
        lambda: w.book.waste(
            cid, w.auth("an1"), w.auth("n1"), "F2506", 0, residual="1 ml", now=w.tick()
        ),
    )  # nothing administered yet: no residual
    w.refused(
        InvalidArgument,
        lambda: w.book.administer(cid, w.auth("an1"), "F2506", 1, "P-9999", now=w.tick()),
    )
    w.refused(
        InvalidArgument,
        lambda: w.book.administer(cid, w.auth("an1"), "F2512", 1, "P-0042", now=w.tick()),
    )
    w.refused(
        FailedPrecondition,
        lambda: w.book.administer(cid, w.auth("an1"), "F2506", 3, "P-0042", now=w.tick()),
    )
    w.refused(
        PermissionDenied,
        lambda: w.book.administer(cid, w.auth("n1"), "F2506", 1, "P-0042", now=w.tick()),
    )
    w.book.administer(cid, w.auth("an2"), "F2506", 2, "P-0042", now=w.tick())
    w.refused(
        FailedPrecondition,
        lambda: w.book.waste(cid, w.auth("an1"), w.auth("n1"), "F2506", 1, now=w.tick()),
    )
    w.book.waste(cid, w.auth("an1"), w.auth("n1"), "F2506", 0, residual="1 ml", now=w.tick())


def test_a_pick_can_be_put_back_and_requests_cancelled_before_it() -> None:
    w = World()
    before = w.stock.on_hand(FENTANYL.code)
    a = w.request()
    w.approve(a)
    w.pick(a)
    w.verify(a)
    assert w.return_receive(a, "ph1", "ph3").case.state is CaseState.CLOSED
    assert w.stock.on_hand(FENTANYL.code) == before
    b = w.request("n1")
    w.refused(PermissionDenied, lambda: w.book.cancel(b, w.auth("n2"), "not mine", now=w.tick()))
    assert (
        w.book.cancel(b, w.auth("n1"), "case postponed", now=w.tick()).case.state
        is CaseState.CANCELLED
    )
    c = w.request("n1")
    w.approve(c)
    assert (
        w.book.cancel(c, w.auth("ph2"), "duplicate", now=w.tick()).case.state is CaseState.CANCELLED
    )
    d = w.request("n1")
    assert (
        w.book.reject(d, w.auth("ph2"), "no red prescription", now=w.tick()).case.state
        is CaseState.REJECTED
    )
    w.refused(FailedPrecondition, lambda: w.approve(d))


def test_unknown_case_and_discrepancy_are_not_found() -> None:
    w = World()
    w.refused(NotFound, lambda: w.book.approve("CD-404", w.auth("ph1"), now=w.tick()))
    w.refused(NotFound, lambda: w.book.approve_resolution("CD-404-D1", w.auth("ph1"), now=w.tick()))
    with pytest.raises(NotFound):
        w.book.case("CD-404")


# -- the transition table -----------------------------------------------------------------------

D = Authentication("nobody", (), 0.0)  # never looked at: the state check comes first
STEP_CALLS: dict[str, Callable[[CustodyBook, str, float], object]] = {
    "approve": lambda b, c, t: b.approve(c, D, now=t),
    "reject": lambda b, c, t: b.reject(c, D, "x", now=t),
    "cancel": lambda b, c, t: b.cancel(c, D, "x", now=t),
    "pick": lambda b, c, t: b.pick(c, D, [], now=t),
    "verify": lambda b, c, t: b.verify(c, D, now=t),
    "load": lambda b, c, t: b.load(c, D, "r", "1", "s", now=t),
    "depart": lambda b, c, t: b.depart(c, now=t),
    "arrive": lambda b, c, t: b.arrive(c, now=t),
    "await_recipient": lambda b, c, t: b.await_recipient(c, now=t),
    "open_for_recipient": lambda b, c, t: b.open_for_recipient(c, D, now=t),
    "recipient_absent": lambda b, c, t: b.recipient_absent(c, now=t),
    "receive": lambda b, c, t: b.receive(c, D, {}, now=t),
    "store_in_or": lambda b, c, t: b.store_in_or(c, D, now=t),
    "handover": lambda b, c, t: b.handover(c, D, D, now=t),
    "administer": lambda b, c, t: b.administer(c, D, "x", 1, "p", now=t),
    "waste": lambda b, c, t: b.waste(c, D, D, "x", 1, now=t),
    "reconcile": lambda b, c, t: b.reconcile(c, D, {}, {}, now=t),
    "load_return": lambda b, c, t: b.load_return(c, D, "r", "1", "s", now=t),
    "return_receive": lambda b, c, t: b.return_receive(c, D, D, {}, {}, now=t),
    "robot_fault": lambda b, c, t: b.robot_fault(c, now=t, detail="x"),
    "start_recovery": lambda b, c, t: b.start_recovery(c, now=t),
    "recover": lambda b, c, t: b.recover(
        c, D, D, seal_intact=True, seal_id_seen="s", blind_count={}, now=t
    ),
    "hand_carry": lambda b, c, t: b.hand_carry(c, D, now=t),
}


class ProbingWorld(World):
    """After every step, every step the case's state does not allow is refused (and changes
    nothing); records every state seen."""

    def __init__(self) -> None:
        super().__init__(LifecycleSettings(recipient_timeout_s=60, alt_timeout_s=60))
        self.seen: set[CaseState] = set()
        original = self.book
        steps = {*STEP_CALLS, "request", "resolve", "approve_resolution", "reject_resolution"}

        class Probe:
            def __getattr__(probe, name: str) -> Any:
                attr = getattr(original, name)
                if name not in steps:
                    return attr

                def call(*args: Any, **kwargs: Any) -> Any:
                    result = attr(*args, **kwargs)
                    self.probe(getattr(result, "case_id", None) or result.case.id)
                    return result

                return call

        self.book = Probe()  # type: ignore[assignment]

    def probe(self, cid: str) -> None:
        state = self.real_book.case(cid).state
        self.seen.add(state)
        for step, call in STEP_CALLS.items():
            if state in STEP_STATES[step]:
                continue
            # Cheaper than snapshot(): a step refused on this case could only touch it.
            before = (len(self.ledger), self.stock.snapshot(), self.real_book.case(cid))
            with pytest.raises(FailedPrecondition, match=f"is {state.value}: cannot"):
                call(self.real_book, cid, self.now)
            assert (len(self.ledger), self.stock.snapshot(), self.real_book.case(cid)) == before


def _walk_every_path(w: World) -> list[str]:
    """Cases through every transition of the table; returns their ids."""
    cids: list[str] = []

    def new(**kw: Any) -> str:
        cid = w.request("an1", patient_ref=f"P-{len(cids):04d}", quantity=2, **kw)
        cids.append(cid)
        return cid

    def to_verified(cid: str) -> None:
        w.approve(cid)
        w.pick(cid)
        w.verify(cid)

    def to_waiting(cid: str) -> None:
        to_verified(cid)
        w.load(cid, "ph1", "r1", str(len(cids)))
        w.travel(cid)

    def finish_from_or(cid: str) -> None:
        w.book.store_in_or(cid, w.auth(w.case(cid).holder), now=w.tick())
        w.book.administer(cid, w.auth("an1"), "F2506", 1, f"P-{cids.index(cid):04d}", now=w.tick())
        w.reconcile(cid, "an1")
        if w.case(cid).reserved:
            w.load_return(cid)
            w.return_receive(cid)
        else:
            w.return_receive(cid, "ph1", w.case(cid).holder)

    # Happy path, then review outcomes and put-backs.
    c = new()
    to_waiting(c)
    w.open_and_receive(c)
    finish_from_or(c)
    w.book.reject(new(), w.auth("ph1"), "no", now=w.tick())
    w.book.cancel(new(), w.auth("an1"), "postponed", now=w.tick())
    c = new()
    w.approve(c)
    w.book.cancel(c, w.auth("ph1"), "duplicate", now=w.tick())
    c = new()
    w.approve(c)
    w.pick(c)
    w.return_receive(c)
    c = new()
    to_verified(c)
    w.return_receive(c)
    # Absent recipient: the alternate takes it; nobody comes and it goes back.
    c = new()
    to_waiting(c)
    w.book.recipient_absent(c, now=w.tick(61))
    w.open_and_receive(c, "n1")
    finish_from_or(c)
    c = new()
    to_waiting(c)
    w.book.recipient_absent(c, now=w.tick(61))
    w.book.recipient_absent(c, now=w.tick(61))
    w.return_receive(c, unused={"F2506": 2})
    # A fault in every robot state.
    for at in ("LOADED", "IN_TRANSIT", "ARRIVED", "AWAITING", "ALT", "RETURNING", "RETURN_LEG"):
        c = new()
        to_verified(c)
        w.load(c, "ph1", "r2", str(len(cids)))
        if at != "LOADED":
            w.book.depart(c, now=w.tick())
        if at not in ("LOADED", "IN_TRANSIT"):
            w.book.arrive(c, now=w.tick())
        if at in ("AWAITING", "ALT", "RETURNING", "RETURN_LEG"):
            w.book.await_recipient(c, now=w.tick())
        if at in ("ALT", "RETURNING"):
            w.book.recipient_absent(c, now=w.tick(61))
        if at == "RETURNING":
            w.book.recipient_absent(c, now=w.tick(61))
        if at == "RETURN_LEG":
            w.open_and_receive(c)
            w.book.store_in_or(c, w.auth("an1"), now=w.tick())
            w.reconcile(c, "an1")
            w.load_return(c)
        w.fault_and_start_recovery(c)
        if at == "IN_TRANSIT":  # broken seal: discrepancy, resolved, then hand carried
            r = w.recover(c, seal_intact=False)
            (d,) = r.opened
            w.book.resolve(d.id, w.auth("ph2"), w.auth("ph3"), "SEAL_DAMAGED", "ok", now=w.tick())
            w.book.approve_resolution(d.id, w.auth("ph1"), now=w.tick())
            w.book.hand_carry(c, w.auth("ph2"), now=w.tick())
            w.book.receive(c, w.auth("an1"), {"F2506": 2}, now=w.tick(), witness_auth=w.auth("ph2"))
            finish_from_or(c)
        elif at == "LOADED":  # redispatch
            w.recover(c)
            w.load(c, "ph2", "r3", "1")
            w.travel(c)
            w.open_and_receive(c)
            finish_from_or(c)
        elif at == "ARRIVED":  # hand carried, then brought back to stock after all
            w.recover(c)
            w.book.hand_carry(c, w.auth("ph2"), now=w.tick())
            w.return_receive(c, "ph2", "ph3")
        elif at == "RETURN_LEG":
            w.recover(c, empties={"F2506": 0})
            w.return_receive(c, "ph2", "ph3")
        else:
            w.recover(c)
            w.return_receive(c, "ph2", "ph3")
    # A return that does not balance, resolved; a return carried by hand.
    c = new()
    to_waiting(c)
    w.open_and_receive(c)
    w.book.store_in_or(c, w.auth("an1"), now=w.tick())
    w.reconcile(c, "an1")
    r = w.return_receive(c, "ph1", "an1", unused={"F2506": 1})  # by hand, an1 handing back
    (d,) = r.opened
    w.book.resolve(d.id, w.auth("an1"), w.auth("n1"), "FOUND", "in the tray", now=w.tick())
    w.book.approve_resolution(d.id, w.auth("ph1"), now=w.tick())
    return cids


def test_every_transition_of_the_table_is_reachable_and_nothing_else_happens() -> None:
    w = ProbingWorld()
    cids = _walk_every_path(w)
    seen: set[tuple[CaseState, CaseState]] = set()
    for cid in cids:
        states = [h.state for h in w.real_book.case(cid).history]
        assert states[0] is CaseState.REQUESTED
        for a, b in itertools.pairwise(states):
            if a is not b:
                seen.add((a, b))
    table = {(a, b) for a, targets in TRANSITIONS.items() for b in targets}
    assert seen <= table, seen - table
    assert seen == table, f"never taken: {sorted(table - seen)}"
    # RETURN_RECEIVED is passed through within return_receive (-> CLOSED or DISCREPANCY_OPEN).
    assert w.seen == set(CaseState) - {CaseState.RETURN_RECEIVED}
    assert all(
        w.real_book.case(c).state in (CaseState.CLOSED, CaseState.REJECTED, CaseState.CANCELLED)
        for c in cids
    )
    assert open_balances(register(w.ledger.events, w.catalogue)) == {}
    assert verify(w.ledger.events).ok


def test_the_table_and_the_step_states_agree() -> None:
    assert set(TRANSITIONS) == set(CaseState)
    reachable = {CaseState.REQUESTED} | {b for targets in TRANSITIONS.values() for b in targets}
    assert reachable == set(CaseState)
    for state in (CaseState.REJECTED, CaseState.CANCELLED, CaseState.CLOSED):
        assert TRANSITIONS[state] == frozenset()
        assert all(state not in states for states in STEP_STATES.values())
    assert set(STEP_CALLS) == set(STEP_STATES)


# -- the day's register -------------------------------------------------------------------------


def test_the_days_register_balances_to_zero() -> None:
    w = World(LifecycleSettings(recipient_timeout_s=60, alt_timeout_s=60))
    start = {(s.drug_code, s.lot.lot): s.on_hand for s in w.stock.snapshot()}
    # 1: a normal case with waste and empties.
    a = w.request("an1", quantity=4)
    w.deliver(a)
    w.book.administer(a, w.auth("an1"), "F2506", 2, "P-0042", now=w.tick())
    w.book.waste(a, w.auth("an1"), w.auth("n1"), "F2506", 1, now=w.tick())
    w.reconcile(a)
    w.load_return(a)
    w.return_receive(a)
    # 2: nobody came; back to stock.
    b = w.request("n2", recipient="n2", alternates=("n1",), patient_ref="P-0050", quantity=3)
    w.approve(b)
    w.pick(b)
    w.verify(b)
    w.load(b, "ph1", "r2", "1")
    w.travel(b)
    w.book.recipient_absent(b, now=w.tick(61))
    w.book.recipient_absent(b, now=w.tick(61))
    w.return_receive(b)
    # 3: robot fault with a broken seal and an ampoule lost, the rest delivered by hand.
    c = w.request("an2", recipient="an2", patient_ref="P-0051", quantity=6)
    w.approve(c)
    w.pick(c, "ph3", [("F2506", 1), ("F2512", 5)])
    w.verify(c, "ph1")
    w.load(c, "ph3", "r3", "1")
    w.book.depart(c, now=w.tick())
    w.fault_and_start_recovery(c)
    r = w.recover(c, lead="ph2", second="log1", seal_intact=False, counts={"F2506": 1, "F2512": 4})
    seal_only, short = r.opened  # a broken seal puts every lot in question
    assert (seal_only.lot, seal_only.missing, short.lot, short.missing) == ("F2506", 0, "F2512", 1)
    w.book.resolve(seal_only.id, w.auth("ph2"), w.auth("ph1"), "SEAL_DAMAGED", "ok", now=w.tick())
    w.book.resolve(short.id, w.auth("ph2"), w.auth("ph1"), "LOSS", "reported, ref 17", now=w.tick())
    w.book.approve_resolution(seal_only.id, w.auth("ph3"), now=w.tick())
    assert w.case(c).state is CaseState.DISCREPANCY_OPEN
    w.book.approve_resolution(short.id, w.auth("ph3"), now=w.tick())
    w.book.hand_carry(c, w.auth("ph2"), now=w.tick())
    w.book.receive(
        c, w.auth("an2"), {"F2506": 1, "F2512": 4}, now=w.tick(), witness_auth=w.auth("ph2")
    )
    w.book.store_in_or(c, w.auth("an2"), now=w.tick())
    w.book.administer(c, w.auth("an2"), "F2512", 3, "P-0051", now=w.tick())
    w.reconcile(c, "an2")
    w.return_receive(c, "ph1", "an2")
    # 4: tablets.
    e = w.request("an1", drug_code=MORPHINE_ER.code, quantity=2, patient_ref="P-0052")
    w.deliver(e)
    w.book.administer(e, w.auth("an1"), "M2609", 2, "P-0052", now=w.tick())
    w.reconcile(e, unused={"M2609": 0}, empties={})
    w.load_return(e)
    w.return_receive(e, unused={}, empties={})

    cases = [w.case(x) for x in (a, b, c, e)]
    assert all(k.state is CaseState.CLOSED for k in cases)
    net = register(w.ledger.events, w.catalogue)
    # Every person, compartment and discrepancy ends the day with nothing.
    assert open_balances(net) == {}
    # The vault lost exactly what was administered, wasted, broken or lost, lot by lot...
    used: dict[tuple[str, str], int] = defaultdict(int)
    empties: dict[tuple[str, str], int] = defaultdict(int)
    for k in cases:
        for lot, acct in k.lots.items():
            used[(k.drug_code, lot)] += acct.administered + acct.wasted + acct.broken + acct.lost
            empties[(k.drug_code, lot)] += acct.opened
    for (drug, lot), n in used.items():
        unit = w.catalogue.get(drug).unit
        assert net.get((VAULT, drug, lot, unit), Decimal(0)) == -n
        # ... which is what its stock says.
        assert start[(drug, lot)] - w.stock.lot(drug, lot).on_hand == n
        # Every opened container came back to the pharmacy.
        if w.catalogue.get(drug).returns_empty_container:
            assert net.get((VAULT, drug, lot, f"empty:{unit}"), Decimal(0)) == empties[(drug, lot)]
    sinks: dict[str, Decimal] = defaultdict(Decimal)
    for (who, _, _, unit), q in net.items():
        if who.startswith(SINK_PREFIXES) and not unit.startswith("empty:"):
            sinks[who.split(":")[0]] += q
    assert dict(sinks) == {"patient": Decimal(2 + 3 + 2), "waste": Decimal(1), "loss": Decimal(1)}
    assert verify(w.ledger.events).ok


def test_clocked_sink_hands_a_steps_events_to_the_store_in_one_call() -> None:
    class Store:
        def __init__(self) -> None:
            self.ledger = Ledger(ManualClock(T0))
            self.calls: list[int] = []

        def append(self, draft: Any, clock: Any) -> CustodyEvent:
            self.calls.append(1)
            return self.ledger.append(draft)

        def append_many(self, drafts: Any, clock: Any) -> list[CustodyEvent]:
            self.calls.append(len(drafts))
            return [self.ledger.append(d) for d in drafts]

    w = World()
    store = Store()
    w.book = w.real_book = CustodyBook(
        w.catalogue, w.stock, w.directory, ClockedSink(store, w.clock)
    )
    cid = w.request()
    w.approve(cid)
    w.pick(cid, "ph1", [("F2506", 3), ("F2512", 2)])
    assert store.calls == [2]
    assert [e.event_type for e in store.ledger.events] == ["ISSUE", "ISSUE"]


def test_copies_of_a_case_share_nothing_mutable() -> None:
    w = World()
    cid = w.request(quantity=2)
    w.approve(cid)
    w.pick(cid)
    w.verify(cid)
    w.load(cid)
    w.travel(cid)
    r = w.open_and_receive(cid, "an1", {"F2506": 1})
    (d,) = r.opened
    w.book.resolve(d.id, w.auth("an1"), w.auth("n1"), "FOUND", "tray", now=w.tick())
    w.book.reject_resolution(d.id, w.auth("ph1"), "recount", now=w.tick())
    original = w.book.case(cid)
    copy_ = w.book.case(cid)
    assert copy_ == original and copy_.grants and copy_.discrepancies[d.id].rejected
    copy_.lots["F2506"].held += 1
    copy_.discrepancies[d.id].rejected.clear()
    copy_.discrepancies[d.id].state = DiscrepancyState.RESOLVED
    for name in ("seals", "grants", "history", "event_seqs"):
        getattr(copy_, name).clear()
    copy_.lots["X"] = copy_.lots["F2506"]
    copy_.discrepancies.clear()
    assert w.book.case(cid) == original
    assert w.book.discrepancy(d.id) == original.discrepancies[d.id]


def test_settings_are_checked() -> None:
    with pytest.raises(InvalidArgument):
        LifecycleSettings(open_window_s=0)
    with pytest.raises(InvalidArgument):
        LifecycleSettings(pharmacy_location=" ")
    assert dataclasses.replace(LifecycleSettings(), alt_timeout_s=5).alt_timeout_s == 5

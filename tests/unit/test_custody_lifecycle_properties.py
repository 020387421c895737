"""Property: over random sequences of custody steps, valid and invalid (wrong people, wrong
counts, expired lots, timeouts too early, robot faults, absent recipients, discrepancies), every
case has exactly one custodian, every unit of every lot is accounted for, a closed case balances
to zero, refused steps change nothing, the ledger verifies, and the ledger alone gives the same
custody balances as the cases."""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from fleet.custody.discrepancy import (
    DiscrepancyState,
    ResolutionCode,
    allowed_codes,
    discrepancy_ref,
)
from fleet.custody.ledger import verify
from fleet.custody.lifecycle import (
    STEP_STATES,
    TERMINAL_STATES,
    TRANSITIONS,
    VAULT,
    CaseState,
    CustodyCase,
    LifecycleSettings,
    patient_sink,
)
from fleet.domain.errors import DomainError
from tests.unit.test_custody_lifecycle import FENTANYL, MORPHINE_ER, PEOPLE, World, register

PHARMACISTS = ["ph1", "ph2", "ph3"]
OR_PEOPLE = ["an1", "an2", "n1", "n2"]
EVERYONE = sorted(PEOPLE)
ROBOTS = ["r1", "r2", "r3"]
COMPARTMENTS = ["1", "2"]
DISCREPANCY_STEPS = ["resolve", "approve_resolution", "reject_resolution"]
# How often a step is chosen among those the state allows (default 6): ending a case early, a
# fault or giving up on the recipient now and then, not at every chance.
WEIGHTS = {
    "reject": 1,
    "cancel": 1,
    "robot_fault": 1,
    "recipient_absent": 2,
    "handover": 2,
    "hand_carry": 3,
    "reject_resolution": 1,
}


def rare(data: st.DataObject, one_in: int) -> bool:
    """True about once in `one_in` draws. (The rare branch is the largest value: hypothesis
    favours 0, which would make a "rare" 0 common.)"""
    return bool(data.draw(st.integers(1, one_in)) == one_in)


def weight(case: CustodyCase, step: str, open_now: bool) -> int:
    if step == "return_receive" and case.state in (CaseState.PICKED, CaseState.VERIFIED):
        return 1  # a put-back
    if open_now and step == "receive":
        return 30  # someone stands at the open compartment
    return WEIGHTS.get(step, 6)


_VAULT_STATES = {
    CaseState.REQUESTED,
    CaseState.APPROVED,
    CaseState.REJECTED,
    CaseState.CANCELLED,
    CaseState.CLOSED,
}
_COMPARTMENT_STATES = set(STEP_STATES["robot_fault"]) | {
    CaseState.DELIVERY_FAULT,
    CaseState.RECOVERY_PENDING,
}


class CustodyLifecycle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.w = World(LifecycleSettings(recipient_timeout_s=300, alt_timeout_s=300))
        self.ids: list[str] = []
        self.patients = itertools.count(1)
        self.done = 0
        self.refused = 0

    # -- helpers --------------------------------------------------------------------------------

    def attempt(self, call: Callable[[], object]) -> None:
        """Run a step; if it is refused, nothing may have changed."""
        before = self.w.snapshot()
        try:
            call()
            self.done += 1
        except DomainError:
            self.refused += 1
            assert self.w.snapshot() == before

    def who(self, data: st.DataObject, likely: list[str]) -> str:
        pool = [p for p in likely if p] or EVERYONE
        if not rare(data, 10):
            return data.draw(st.sampled_from(pool))
        return data.draw(st.sampled_from(EVERYONE))

    def auth(self, data: st.DataObject, pid: str) -> Any:
        # Now and then an authentication that is too old for the step.
        if rare(data, 100):
            return self.w.auth(pid, at=self.w.now - 500)
        return self.w.auth(pid)

    def counts(self, data: st.DataObject, expected: dict[str, int]) -> dict[str, int]:
        """The expected counts, or now and then a unit short, one too many, or a lot never
        issued. (The odd cases are the largest draws: hypothesis favours small ones.)"""
        out = {lot: n for lot, n in expected.items() if n}
        kind = data.draw(st.integers(0, 11))
        held = sorted(lot for lot, n in out.items() if n)
        if kind >= 10 and held:
            lot = data.draw(st.sampled_from(held))
            out[lot] -= data.draw(st.integers(1, out[lot]))
        elif kind == 9 and expected:
            lot = data.draw(st.sampled_from(sorted(expected)))
            out[lot] = expected[lot] + 1
        elif kind == 8:
            out["X9999"] = 1
        return out

    # -- rules ----------------------------------------------------------------------------------

    @precondition(lambda self: len(self.ids) < 6)
    @rule(data=st.data())
    def request(self, data: st.DataObject) -> None:
        requester = self.who(data, OR_PEOPLE)
        recipient = data.draw(st.sampled_from([requester, *OR_PEOPLE]))
        alternates = [p for p in OR_PEOPLE if p != recipient][: data.draw(st.integers(0, 2))]
        drug = data.draw(st.sampled_from([FENTANYL, FENTANYL, MORPHINE_ER]))
        quantity = data.draw(st.sampled_from([1, 2, 3, 4, 5, 6, 7, 0]))
        now = self.w.tick(5)

        def call() -> None:
            r = self.w.book.request(
                self.auth(data, requester),
                prescription_no=f"RX-{len(self.ids)}",
                patient_ref=f"P-{next(self.patients):04d}",
                case_ref="SURG-1",
                or_station="OR-3",
                drug_code=drug.code,
                quantity=quantity,
                recipient=recipient if requester in OR_PEOPLE else None,
                alternates=alternates,
                now=now,
            )
            self.ids.append(r.case.id)

        self.attempt(call)

    @precondition(lambda self: bool(self.ids))
    @rule(data=st.data())
    def step(self, data: st.DataObject) -> None:
        """A step on one case: mostly one its state allows (weighted towards going on, so that
        cases get far), now and then any step at all."""
        live = [i for i in self.ids if self.w.real_book.case(i).state not in TERMINAL_STATES]
        pool = self.ids if not live or rare(data, 10) else live
        case = self.w.real_book.case(data.draw(st.sampled_from(pool)))
        allowed = [k for k, states in STEP_STATES.items() if case.state in states]
        if case.open_discrepancies():
            allowed += DISCREPANCY_STEPS
        open_now = case.grant is not None and case.grant.live(self.w.now)
        if allowed and not rare(data, 10):
            weighted = [k for k in sorted(allowed) for _ in range(weight(case, k, open_now))]
            name = data.draw(st.sampled_from(weighted))
        else:
            extra = DISCREPANCY_STEPS if case.discrepancies else []
            name = data.draw(st.sampled_from(sorted([*STEP_STATES, *extra])))
        # Time passes: mostly seconds, sometimes past a recipient timeout or an open window.
        waits = [1.0, 5.0, 20.0, 20.0, 20.0, *([] if open_now else [130.0, 310.0])]
        if open_now and rare(data, 10):
            waits = [130.0]  # the window runs out
        self.w.tick(data.draw(st.sampled_from(waits)))
        self.attempt(getattr(self, f"_{name}")(data, case))

    # -- one builder per step: returns the call to attempt ---------------------------------------

    def _approve(self, data: st.DataObject, c: CustodyCase) -> Callable[[], object]:
        a = self.auth(data, self.who(data, PHARMACISTS))
        return lambda: self.w.book.approve(c.id, a, now=self.w.now)

    def _reject(self, data: st.DataObject, c: CustodyCase) -> Callable[[], object]:
        a = self.auth(data, self.who(data, PHARMACISTS))
        return lambda: self.w.book.reject(c.id, a, "no", now=self.w.now)

    def _cancel(self, data: st.DataObject, c: CustodyCase) -> Callable[[], object]:
        a = self.auth(data, self.who(data, [c.requested_by, *PHARMACISTS]))
        return lambda: self.w.book.cancel(c.id, a, "postponed", now=self.w.now)

    def _pick(self, data: st.DataObject, c: CustodyCase) -> Callable[[], object]:
        a = self.auth(data, self.who(data, PHARMACISTS))
        lots = [lot for lot, *_ in ((s.lot.lot, s) for s in self.w.stock.lots(c.drug_code))]
        kind = data.draw(st.integers(0, 14))
        if kind == 14:
            scanned = [("F2502", c.quantity)]  # the expired lot
        elif kind == 13:
            scanned = [(data.draw(st.sampled_from(lots or ["F2506"])), c.quantity + 1)]
        elif kind == 12 and len(lots) > 1 and c.quantity > 1:
            scanned = [(lots[-1], 1), (lots[-2], c.quantity - 1)]
        else:
            try:
                today = self.w.real_book._today(self.w.now)
                scanned = [(p.lot, p.quantity) for p in self.w.book.suggest_pick(c.id, today)]
            except DomainError:
                scanned = [("F2506", max(c.quantity, 1))]
        return lambda: self.w.book.pick(c.id, a, scanned, now=self.w.now)

    def _verify(self, data: st.DataObject, c: CustodyCase) -> Callable[[], object]:
        a = self.auth(data, self.who(data, [p for p in PHARMACISTS if p != c.picker]))
        return lambda: self.w.book.verify(c.id, a, now=self.w.now)

    def _load(self, data: st.DataObject, c: CustodyCase) -> Callable[[], object]:
        a = self.auth(data, self.who(data, [c.holder]))
        robot = data.draw(st.sampled_from(ROBOTS))
        comp = data.draw(st.sampled_from(COMPARTMENTS))
        seal = "S-0001" if rare(data, 10) else self.w.seal()
        return lambda: self.w.book.load(c.id, a, robot, comp, seal, now=self.w.now)

    def _depart(self, data: st.DataObject, c: CustodyCase) -> Callable[[], object]:
        return lambda: self.w.book.depart(c.id, now=self.w.now)

    def _arrive(self, data: st.DataObject, c: CustodyCase) -> Callable[[], object]:
        return lambda: self.w.book.arrive(c.id, now=self.w.now)

    def _await_recipient(self, data: st.DataObject, c: CustodyCase) -> Callable[[], object]:
        return lambda: self.w.book.await_recipient(c.id, now=self.w.now)

    def _open_for_recipient(self, data: st.DataObject, c: CustodyCase) -> Callable[[], object]:
        a = self.auth(data, self.who(data, sorted(c.recipients())))
        return lambda: self.w.book.open_for_recipient(c.id, a, now=self.w.now)

    def _recipient_absent(self, data: st.DataObject, c: CustodyCase) -> Callable[[], object]:
        alternate = data.draw(st.sampled_from([None, None, "n2", "ph1"]))
        return lambda: self.w.book.recipient_absent(c.id, now=self.w.now, alternate=alternate)

    def _receive(self, data: st.DataObject, c: CustodyCase) -> Callable[[], object]:
        opened_for = c.grant.staff_id if c.grant is not None else c.recipient
        a = self.auth(data, self.who(data, [opened_for]))
        witness = None
        if c.state is CaseState.HAND_CARRIED or rare(data, 10):
            witness = self.auth(data, self.who(data, [c.holder]))
        counts = self.counts(data, {lot: x.held for lot, x in c.lots.items()})
        seen = data.draw(st.sampled_from([None, None, None, c.seal_id, "S-9999"]))
        return lambda: self.w.book.receive(
            c.id, a, counts, now=self.w.now, witness_auth=witness, seal_id_seen=seen
        )

    def _store_in_or(self, data: st.DataObject, c: CustodyCase) -> Callable[[], object]:
        a = self.auth(data, self.who(data, [c.holder]))
        keeper = None
        if data.draw(st.booleans()):
            keeper = self.auth(data, self.who(data, [p for p in OR_PEOPLE if p != c.holder]))
        return lambda: self.w.book.store_in_or(c.id, a, keeper_auth=keeper, now=self.w.now)

    def _handover(self, data: st.DataObject, c: CustodyCase) -> Callable[[], object]:
        giver = self.auth(data, self.who(data, [c.holder]))
        pool = (
            OR_PEOPLE
            if c.state
            in STEP_STATES["administer"]
            | {
                CaseState.RECEIVED,
                CaseState.RECONCILIATION_SUBMITTED,
            }
            else PHARMACISTS
        )
        receiver = self.auth(data, self.who(data, [p for p in pool if p != c.holder]))
        return lambda: self.w.book.handover(c.id, giver, receiver, now=self.w.now)

    def _lot(self, data: st.DataObject, c: CustodyCase) -> str:
        return data.draw(st.sampled_from(sorted(c.lots) or ["F2506"]))

    def _administer(self, data: st.DataObject, c: CustodyCase) -> Callable[[], object]:
        a = self.auth(data, self.who(data, ["an1", "an2"]))
        lot = self._lot(data, c)
        held = c.lots[lot].held if lot in c.lots else 1
        q = data.draw(st.integers(1, held + 1))
        patient = "P-9999" if rare(data, 10) else c.patient_ref
        return lambda: self.w.book.administer(c.id, a, lot, q, patient, now=self.w.now)

    def _waste(self, data: st.DataObject, c: CustodyCase) -> Callable[[], object]:
        actor = self.who(data, ["an1", "an2"])
        a = self.auth(data, actor)
        wit = self.auth(data, self.who(data, [p for p in OR_PEOPLE if p != actor]))
        lot = self._lot(data, c)
        held = c.lots[lot].held if lot in c.lots else 1
        q = data.draw(st.integers(0, held))
        residual = data.draw(st.sampled_from(["", "0.5 ml"]))
        return lambda: self.w.book.waste(c.id, a, wit, lot, q, residual=residual, now=self.w.now)

    def _reconcile(self, data: st.DataObject, c: CustodyCase) -> Callable[[], object]:
        actor = self.who(data, OR_PEOPLE)
        a = self.auth(data, actor)
        unused = self.counts(data, {lot: x.held for lot, x in c.lots.items()})
        empties = (
            self.counts(data, {lot: x.empties_held for lot, x in c.lots.items()})
            if c.returns_empty_container
            else {}
        )
        return lambda: self.w.book.reconcile(c.id, a, unused, empties, now=self.w.now)

    def _load_return(self, data: st.DataObject, c: CustodyCase) -> Callable[[], object]:
        a = self.auth(data, self.who(data, [c.holder]))
        same = not rare(data, 10)
        robot = c.robot_id if same else data.draw(st.sampled_from(ROBOTS))
        comp = c.compartment if same else data.draw(st.sampled_from(COMPARTMENTS))
        seal = self.w.seal()
        return lambda: self.w.book.load_return(c.id, a, robot, comp, seal, now=self.w.now)

    def _return_receive(self, data: st.DataObject, c: CustodyCase) -> Callable[[], object]:
        actor = self.who(data, PHARMACISTS)
        a = self.auth(data, actor)
        by_hand = c.custodian.startswith("person:") and c.holder != actor
        pool = [c.holder] if by_hand else [p for p in [*PHARMACISTS, "n1"] if p != actor]
        wit = self.auth(data, self.who(data, pool))
        unused = self.counts(data, {lot: x.held for lot, x in c.lots.items()})
        empties = (
            self.counts(data, {lot: x.empties_held for lot, x in c.lots.items()})
            if c.returns_empty_container
            else {}
        )
        return lambda: self.w.book.return_receive(c.id, a, wit, unused, empties, now=self.w.now)

    def _robot_fault(self, data: st.DataObject, c: CustodyCase) -> Callable[[], object]:
        return lambda: self.w.book.robot_fault(c.id, now=self.w.now, detail="stuck", location="L2")

    def _start_recovery(self, data: st.DataObject, c: CustodyCase) -> Callable[[], object]:
        return lambda: self.w.book.start_recovery(c.id, now=self.w.now)

    def _recover(self, data: st.DataObject, c: CustodyCase) -> Callable[[], object]:
        lead = self.who(data, PHARMACISTS)
        a = self.auth(data, lead)
        second = self.auth(data, self.who(data, [p for p in [*PHARMACISTS, "log1"] if p != lead]))
        intact = not rare(data, 5)
        seen = "S-9999" if rare(data, 5) else c.seal_id
        counts = self.counts(data, {lot: x.held for lot, x in c.lots.items()})
        empties = self.counts(data, {lot: x.empties_held for lot, x in c.lots.items()})
        if not c.returns_empty_container:
            empties = {}
        return lambda: self.w.book.recover(
            c.id,
            a,
            second,
            seal_intact=intact,
            seal_id_seen=seen,
            blind_count=counts,
            blind_count_empties=empties,
            now=self.w.now,
        )

    def _hand_carry(self, data: st.DataObject, c: CustodyCase) -> Callable[[], object]:
        a = self.auth(data, self.who(data, [c.holder]))
        return lambda: self.w.book.hand_carry(c.id, a, now=self.w.now)

    def _discrepancy(self, data: st.DataObject, c: CustodyCase, state: DiscrepancyState) -> str:
        ids = sorted(d.id for d in c.discrepancies.values() if d.state is state)
        return data.draw(st.sampled_from(ids or sorted(c.discrepancies) or ["none"]))

    def _resolve(self, data: st.DataObject, c: CustodyCase) -> Callable[[], object]:
        did = self._discrepancy(data, c, DiscrepancyState.OPEN)
        d = c.discrepancies.get(did)
        codes = sorted(allowed_codes(d)) if d is not None else []
        if not codes or rare(data, 10):
            codes = sorted(ResolutionCode)
        code = data.draw(st.sampled_from(codes))
        resolver = self.who(data, [*OR_PEOPLE, *PHARMACISTS])
        a = self.auth(data, resolver)
        wit = self.auth(
            data, self.who(data, [p for p in [*OR_PEOPLE, *PHARMACISTS] if p != resolver])
        )
        note = data.draw(st.sampled_from(["", "recounted with the charge nurse"]))
        return lambda: self.w.book.resolve(did, a, wit, code, note, now=self.w.now)

    def _approver(self, data: st.DataObject, c: CustodyCase, did: str) -> Any:
        d = c.discrepancies.get(did)
        r = d.resolution if d is not None else None
        busy = {r.resolver, r.witness} if r is not None else set()
        return self.auth(data, self.who(data, [p for p in PHARMACISTS if p not in busy]))

    def _approve_resolution(self, data: st.DataObject, c: CustodyCase) -> Callable[[], object]:
        did = self._discrepancy(data, c, DiscrepancyState.PROPOSED)
        a = self._approver(data, c, did)
        return lambda: self.w.book.approve_resolution(did, a, now=self.w.now)

    def _reject_resolution(self, data: st.DataObject, c: CustodyCase) -> Callable[[], object]:
        did = self._discrepancy(data, c, DiscrepancyState.PROPOSED)
        a = self._approver(data, c, did)
        return lambda: self.w.book.reject_resolution(did, a, "recount", now=self.w.now)

    # -- invariants -----------------------------------------------------------------------------

    @invariant()
    def the_ledger_verifies(self) -> None:
        assert verify(self.w.ledger.events).ok

    @invariant()
    def every_case_has_one_custodian_and_every_unit_is_accounted_for(self) -> None:
        for case in self.w.real_book.cases():
            check_case(case)
            check_register(self.w, case)

    @invariant()
    def the_stock_moved_exactly_as_the_cases_say(self) -> None:
        issued: dict[tuple[str, str], int] = defaultdict(int)
        returned: dict[tuple[str, str], int] = defaultdict(int)
        for case in self.w.real_book.cases():
            for lot, a in case.lots.items():
                issued[(case.drug_code, lot)] += a.issued
                returned[(case.drug_code, lot)] += a.returned_unused
        for s in self.w.stock.snapshot():
            key = (s.drug_code, s.lot.lot)
            assert (s.picked, s.returned) == (issued[key], returned[key])


def check_case(case: CustodyCase) -> None:
    # Exactly one custodian, of the kind the state says.
    kind = case.custodian.split(":")[0]
    assert case.custodian.count(":") == 1 and case.custodian.split(":")[1]
    if case.state in _VAULT_STATES or (
        case.state is CaseState.DISCREPANCY_OPEN and case.resume_state is CaseState.CLOSED
    ):
        assert case.custodian == VAULT
    elif case.state in _COMPARTMENT_STATES:
        assert kind == "compartment" and case.accountable
        assert case.custodian == f"compartment:{case.robot_id}/{case.compartment}"
    else:
        assert kind == "person" and case.holder in PEOPLE
    # Only table transitions.
    states = [h.state for h in case.history]
    assert states[0] is CaseState.REQUESTED
    for before, after in itertools.pairwise(states):
        assert before is after or after in TRANSITIONS[before], (before, after)
    # Conservation, lot by lot.
    for lot, a in case.lots.items():
        missing = case.open_missing(lot)
        missing_empties = case.open_missing(lot, empties=True)
        assert min(a.held, a.empties_held, a.administered, a.wasted, a.returned_unused) >= 0
        assert a.issued == (
            a.administered + a.wasted + a.broken + a.returned_unused + a.lost + a.held + missing
        )
        assert a.opened == a.empties_held + a.empties_returned + a.empties_written_off + (
            missing_empties
        )
        if not case.returns_empty_container:
            assert a.opened == 0
    if case.state is CaseState.CLOSED:
        assert not case.open_discrepancies()
        for a in case.lots.values():
            assert a.issued == a.administered + a.wasted + a.broken + a.returned_unused + a.lost
            assert a.balance == 0 and a.held == 0
            assert a.empties_returned + a.empties_written_off == a.opened
    assert sum(a.issued for a in case.lots.values()) in (0, case.quantity)


def check_register(w: World, case: CustodyCase) -> None:
    """The ledger alone (events of this case) gives the balances the case's counters give."""
    got = {
        (who, lot, unit): q
        for (who, _, lot, unit), q in register(w.events(case.ledger_order_id), w.catalogue).items()
    }
    want: dict[tuple[str, str, str], Decimal] = defaultdict(Decimal)
    u, e = case.unit, f"empty:{case.unit}"
    for lot, a in case.lots.items():
        if case.custodian != VAULT:
            want[(case.custodian, lot, u)] += a.held
            want[(case.custodian, lot, e)] += a.empties_held
        else:
            assert a.held == 0 and a.empties_held == 0
        want[(VAULT, lot, u)] += a.returned_unused - a.issued
        want[(VAULT, lot, e)] += a.empties_returned
        want[(patient_sink(case.patient_ref), lot, u)] += a.administered
        want[("waste", lot, u)] += a.wasted + a.broken
        want[("loss", lot, u)] += a.lost
    written_off: dict[str, int] = defaultdict(int)
    for d in case.discrepancies.values():
        if d.is_open:
            want[(discrepancy_ref(d.id), d.lot, d.unit)] += d.missing
        elif d.empties and d.destination in ("waste", "loss"):
            want[(d.destination, d.lot, d.unit)] += d.missing
            written_off[d.lot] += d.missing
    for lot, a in case.lots.items():
        assert a.empties_written_off == written_off[lot]
    assert got == {k: v for k, v in want.items() if v}


CustodyLifecycle.TestCase.settings = settings(
    max_examples=120,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestCustodyLifecycle = CustodyLifecycle.TestCase

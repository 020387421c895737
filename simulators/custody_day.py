"""A day of controlled-drug traffic in the fast twin: the `controlled-drugs` workload.

Simulated people (the demo staff of simulators/data/staff.yaml, authenticating with badge and
PIN) take each custody case through the whole lifecycle while the real dispatcher core and the
simulated robots carry it (issue 5):

    an anesthesiologist requests drugs for a surgical case in one of the ORs; a pharmacist
    approves and picks them (first expiry first out), a second pharmacist verifies; the case's
    order is placed (`CustodyDesk.send`); when the robot stands at the pharmacy hatch the
    pharmacist locks the drugs in its compartment under a new seal; the robot rides the clean
    lift to the OR; the anesthesiologist authenticates at the robot, the compartment opens for
    them, they count blind and receive; during surgery they administer part, waste the residual
    with an OR nurse as witness, and reconcile what is left and the empty ampoules; the same
    robot comes back for them (same compartment, new seal) and the pharmacist and a witness
    count them back into the vault: the case closes.

Exceptions, chosen per case with the run's seed: a recipient who does not come (the alternate
anesthesiologist is paged and comes, or nobody does and the robot takes the drugs back to the
pharmacy), and a robot that dies in a corridor with the drugs on board (custody stays with the
sealed compartment; two people recover the drugs with a blind count; the case is sent again on
another robot; the dead robot is repaired later).

Everything goes through `CustodyDesk` and `CustodyBook`; nothing here writes the ledger itself.
The people's PINs are read from the staff file (test data), as a person knows their own PIN.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import yaml

from fleet.custody.catalogue import Catalogue, load_catalogue
from fleet.custody.desk import CustodyDesk
from fleet.custody.ledger import CustodyEvent
from fleet.custody.lifecycle import CaseState, CustodyBook, LedgerSink, Leg, LifecycleSettings
from fleet.custody.people import Authentication, PinHashing, StaffDirectory, load_staff
from fleet.custody.register import day_register
from fleet.custody.stock import Lot, VaultStock
from fleet.dispatch import messages as m
from fleet.domain.errors import DomainError
from fleet.domain.order import Order, OrderState
from fleet.domain.priority import Priority

DATA = Path(__file__).parent / "data"
CATALOGUE_PATH = DATA / "controlled_drugs.yaml"
STAFF_PATH = DATA / "staff.yaml"

# PIN hashing in the simulation only: a day authenticates people a few hundred times, and the
# production cost (fleet.custody.people.DEFAULT_HASHING) would make that take minutes.
SIM_HASHING = PinHashing(cost=(1024, 8, 1))

PHARMACISTS = ("ph-chen", "ph-okafor", "ph-lindqvist")
ANESTHESIOLOGISTS = ("an-wang", "an-garcia")
OR_NURSES = ("orn-zhang", "orn-muller", "orn-patel")
LOGISTICS = "log-novak"
PHARMACY = "PHARMACY"

# Drugs the day requests (codes of simulators/data/controlled_drugs.yaml), and how many units.
DRUGS = ("86999900000101", "86999900000202", "86999900000303", "86999900000404")
UNITS = (2, 3, 4, 5)


@dataclass(frozen=True)
class CustodyDayConfig:
    """How busy the day is and how often things go wrong.

    `cases_per_hour`: requests across the OR suite (Poisson). `absent_share`: cases whose
    recipient does not come; of those, `alternate_comes_share` are received by the paged
    alternate, the rest go back to the pharmacy. `fault_share`: cases whose robot dies in
    transit with the drugs on board.
    """

    cases_per_hour: float = 3.0
    absent_share: float = 0.15
    alternate_comes_share: float = 0.5
    fault_share: float = 0.1
    repair_after_s: float = 1800.0


@dataclass
class _Plan:
    """What the simulated people will do for one case."""

    case_id: str
    or_station: str
    anesthesiologist: str
    alternate: str
    nurse: str
    absent: str = ""  # "", "alternate" (the alternate comes), "nobody"
    fault: bool = False
    faulted_robot: str = ""
    path: str = "normal"


@dataclass
class CustodyDayResult:
    """What the day did: cases per path and final state, the people's refused steps (should be
    none), the robots repaired, and the register of each day the ledger covers."""

    cases: dict[str, str] = field(default_factory=dict)  # case id -> final state
    paths: Counter[str] = field(default_factory=Counter)
    refused: list[str] = field(default_factory=list)
    ledger_events: int = 0
    registers_balanced: bool = False
    register_problems: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The custody part of the KPI report."""
        states = Counter(self.cases.values())
        return {
            "cases": len(self.cases),
            "cases_closed": states.get(CaseState.CLOSED.value, 0),
            "cases_by_state": dict(sorted(states.items())),
            "cases_by_path": dict(sorted(self.paths.items())),
            "refused_steps": len(self.refused),
            "refused_examples": self.refused[:10],
            "ledger_events": self.ledger_events,
            "register_balanced": self.registers_balanced,
            "register_problems": self.register_problems[:10],
        }


def staff_pins(path: Path = STAFF_PATH) -> dict[str, tuple[str, str]]:
    """Staff id -> (badge, PIN) from the demo staff file: what each simulated person knows."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return {p["id"]: (str(p["badge"]), str(p["pin"])) for p in data["staff"]}


def demo_vault(catalogue: Catalogue, today: date) -> VaultStock:
    """The pharmacy vault of the simulated day: two lots per drug, the older expiring first."""
    stock = VaultStock(catalogue)
    for i, drug in enumerate(catalogue):
        for j, months in enumerate((4, 14)):
            expiry = date(
                today.year + (today.month + months - 1) // 12,
                (today.month + months - 1) % 12 + 1,
                28,
            )
            lot = Lot(drug.code, f"L{i + 1:02d}{j + 1}-{today:%y%m}", expiry, "Demo Pharma")
            stock.receive(lot, 500, today)
    return stock


class CustodyDay:
    """Drives the simulated people of a controlled-drug day on a `FastTwin` (see module)."""

    def __init__(
        self,
        twin: Any,  # simulators.fast.FastTwin (not imported: fast imports this module)
        ledger: LedgerSink,
        hours: float,
        seed: int,
        config: CustodyDayConfig | None = None,
    ) -> None:
        self.twin = twin
        self.loop = twin.loop
        self.clock = twin.clock
        self.hours = hours
        self.config = config or CustodyDayConfig()
        self.rng = random.Random(f"custody-{seed}")
        self.catalogue = load_catalogue(CATALOGUE_PATH)
        self.directory = load_staff(STAFF_PATH, StaffDirectory(hashing=SIM_HASHING))
        self.pins = staff_pins()
        today = datetime.fromtimestamp(self.clock.now(), UTC).date()
        self.book = CustodyBook(
            self.catalogue,
            demo_vault(self.catalogue, today),
            self.directory,
            ledger,
            settings=LifecycleSettings(tz=UTC),
        )
        self.desk = CustodyDesk(self.book, twin.handle, pharmacy_station=PHARMACY)
        self.ledger = ledger
        self.plans: dict[str, _Plan] = {}
        self.refused: list[str] = []
        self._seals = itertools.count(1)
        self._ors = sorted(s for s in twin.building.stations if s.startswith("OR-"))
        twin.router.custody_watchers.append(self._on_secure_stop)
        twin.router.watchers.append(self._on_order)

    # ---- the day ----------------------------------------------------------------------

    def start(self) -> None:
        """Schedule the day's requests (Poisson over `hours`) and the desk's clock."""
        t = 0.0
        rate = self.config.cases_per_hour / 3600.0
        while rate > 0:
            t += self.rng.expovariate(rate)
            if t >= self.hours * 3600.0:
                break
            self.loop.call_later(t, self._request)
        self._tick()

    def open_cases(self) -> int:
        """Cases not yet CLOSED (nor rejected or cancelled)."""
        done = {CaseState.CLOSED, CaseState.REJECTED, CaseState.CANCELLED}
        return sum(1 for c in self.book.cases() if c.state not in done)

    def result(self, events: list[CustodyEvent]) -> CustodyDayResult:
        """The day's outcome, with the register of every day the ledger's events cover."""
        out = CustodyDayResult(refused=list(self.refused), ledger_events=len(events))
        for case in self.book.cases():
            out.cases[case.id] = case.state.value
            out.paths[self.plans[case.id].path if case.id in self.plans else "unknown"] += 1
        days = sorted({datetime.fromtimestamp(e.occurred_at, UTC).date() for e in events})
        out.registers_balanced = True
        for day in days:
            register = day_register(events, self.catalogue, day, "UTC")
            if not register.balanced:
                out.registers_balanced = False
                out.register_problems.extend(f"{day}: {p}" for p in register.problems())
        return out

    # ---- people -----------------------------------------------------------------------

    def _auth(self, staff_id: str) -> Authentication:
        badge, pin = self.pins[staff_id]
        return self.directory.authenticate(staff_id, badge, pin, self.clock.now())

    def _seal(self) -> str:
        return f"SEAL-{next(self._seals):05d}"

    def _do(self, what: str, case_id: str, step: Callable[[], object]) -> bool:
        """Run a person's step; a refusal is recorded (the day's people should never be
        refused: every refusal is a finding)."""
        try:
            step()
        except DomainError as exc:
            self.refused.append(f"{case_id} {what}: {type(exc).__name__}: {exc}")
            return False
        return True

    def _later(self, low: float, high: float, fn: Callable[[], None]) -> None:
        self.loop.call_later(self.rng.uniform(low, high), fn)

    def _tick(self) -> None:
        try:
            self.desk.tick(self.clock.now())
        except DomainError as exc:
            self.refused.append(f"desk tick: {exc}")
        self.loop.call_later(30.0, self._tick)

    # ---- one case, step by step --------------------------------------------------------

    def _request(self) -> None:
        rng = self.rng
        i = rng.randrange(len(ANESTHESIOLOGISTS))
        anesthesiologist, alternate = ANESTHESIOLOGISTS[i], ANESTHESIOLOGISTS[1 - i]
        or_station = rng.choice(self._ors)
        drug = rng.choice(DRUGS)
        units = rng.choice(UNITS)
        n = len(self.book.cases()) + 1
        day = datetime.fromtimestamp(self.clock.now(), UTC)
        absent = ""
        if rng.random() < self.config.absent_share:
            absent = "alternate" if rng.random() < self.config.alternate_comes_share else "nobody"
        fault = not absent and rng.random() < self.config.fault_share
        try:
            result = self.book.request(
                self._auth(anesthesiologist),
                prescription_no=f"麻精-{day:%Y%m%d}-{n:04d}",
                patient_ref=f"P-{rng.randrange(10_000, 99_999)}",
                case_ref=f"SURG-{day:%Y%m%d}-{or_station}-{n:03d}",
                or_station=or_station,
                drug_code=drug,
                quantity=units,
                now=self.clock.now(),
                alternates=(alternate,),
            )
        except DomainError as exc:
            self.refused.append(f"request: {exc}")
            return
        cid = result.case.id
        plan = _Plan(cid, or_station, anesthesiologist, alternate, rng.choice(OR_NURSES))
        plan.absent, plan.fault = absent, fault
        plan.path = (
            "fault"
            if fault
            else {
                "": "normal",
                "alternate": "alternate-received",
                "nobody": "returned-undelivered",
            }[absent]
        )
        self.plans[cid] = plan
        self._later(60, 240, lambda: self._approve(cid))

    def _approve(self, cid: str) -> None:
        ph = self.rng.choice(PHARMACISTS)
        if self._do(
            "approve", cid, lambda: self.book.approve(cid, self._auth(ph), now=self.clock.now())
        ):
            self._later(60, 180, lambda: self._pick(cid, ph))

    def _pick(self, cid: str, ph: str) -> None:
        today = datetime.fromtimestamp(self.clock.now(), UTC).date()

        def pick() -> None:
            scanned = [(p.lot, p.quantity) for p in self.book.suggest_pick(cid, today)]
            self.book.pick(cid, self._auth(ph), scanned, now=self.clock.now())

        if self._do("pick", cid, pick):
            checker = self.rng.choice([p for p in PHARMACISTS if p != ph])
            self._later(30, 120, lambda: self._verify(cid, checker))

    def _verify(self, cid: str, checker: str) -> None:
        if self._do(
            "verify", cid, lambda: self.book.verify(cid, self._auth(checker), now=self.clock.now())
        ):
            self._send(cid)

    def _send(self, cid: str) -> None:
        self._do(
            "send", cid, lambda: self.desk.send(cid, now=self.clock.now(), priority=Priority.URGENT)
        )

    # The fleet reports; people react a little later (never inside the core's own call).

    def _on_secure_stop(self, stop: m.SecureStop) -> None:
        self._desk_sees(lambda: self.desk.on_secure_stop(stop))
        trip = self.desk.trips.get(stop.order_id)
        if trip is None:
            return
        cid = trip.case_id
        if stop.kind == "PICKUP" and trip.leg is Leg.OUTBOUND:
            self._later(20, 60, lambda: self._load(cid))
        elif stop.kind == "PICKUP":
            self._later(30, 120, lambda: self._load_return(cid))
        elif stop.station == PHARMACY:
            self._later(30, 120, lambda: self._return_receive(cid))
        else:
            self._arrived(cid)

    def _on_order(self, order: Order) -> None:
        self._desk_sees(lambda: self.desk.on_order(order))
        trip = self.desk.trips.get(order.id)
        if trip is None:
            return
        plan = self.plans[trip.case_id]
        if (
            order.state is OrderState.PICKED_UP
            and trip.leg is Leg.OUTBOUND
            and plan.fault
            and not plan.faulted_robot
        ):
            plan.faulted_robot = order.robot_id or ""
            self._later(40, 120, lambda: self._robot_dies(plan))
        elif order.state is OrderState.FAILED:
            case = self.book.case(trip.case_id)
            if case.state is CaseState.RECOVERY_PENDING:  # the desk raised the alert
                self._later(420, 1200, lambda: self._recover(trip.case_id))
            # (A VERIFIED case whose trip ended unloaded: the desk sends it again itself.)

    def _desk_sees(self, report: Callable[[], None]) -> None:
        """The desk takes a fleet report (the service does the same on the core's task)."""
        try:
            report()
        except DomainError as exc:
            self.refused.append(f"desk: {type(exc).__name__}: {exc}")

    def _load(self, cid: str) -> None:
        holder = self.book.case(cid).holder.removeprefix("person:")
        self._do(
            "load",
            cid,
            lambda: self.desk.load(cid, self._auth(holder), self._seal(), now=self.clock.now()),
        )

    def _arrived(self, cid: str) -> None:
        plan = self.plans[cid]
        if plan.absent == "nobody":
            return  # the desk pages the alternate, then sends the robot back
        if plan.absent == "alternate":
            self._wait_for_page(cid, plan.alternate)
            return
        self._later(30, 240, lambda: self._receive(cid, plan.anesthesiologist))

    def _wait_for_page(self, cid: str, who: str) -> None:
        """The alternate comes once paged (checked every minute)."""
        if self.book.case(cid).state is CaseState.ALT_RECIPIENT_PAGED:
            self._later(60, 240, lambda: self._receive(cid, who))
        elif self.book.case(cid).state in (CaseState.AWAITING_RECIPIENT, CaseState.ARRIVED):
            self.loop.call_later(60.0, lambda: self._wait_for_page(cid, who))

    def _receive(self, cid: str, who: str) -> None:
        def receive() -> None:
            now = self.clock.now()
            self.desk.open_for_recipient(cid, self._auth(who), now=now)
            case = self.book.case(cid)
            counts = {lot: a.held for lot, a in case.lots.items()}
            self.book.receive(cid, self._auth(who), counts, now=now, seal_id_seen=case.seal_id)
            self.book.store_in_or(cid, self._auth(who), now=now)

        if self._do("receive", cid, receive):
            self._later(20 * 60, 90 * 60, lambda: self._surgery(cid, who))

    def _surgery(self, cid: str, who: str) -> None:
        plan = self.plans[cid]

        def use() -> None:
            case = self.book.case(cid)
            total = sum(a.held for a in case.lots.values())
            administer = max(1, total - 2)
            waste = 1 if total - administer >= 1 else 0
            for lot, account in sorted(case.lots.items()):
                take = min(account.held, administer)
                if take:
                    self.book.administer(
                        cid, self._auth(who), lot, take, case.patient_ref, now=self.clock.now()
                    )
                    administer -= take
            case = self.book.case(cid)
            for lot, account in sorted(case.lots.items()):
                if waste and account.held:
                    self.book.waste(
                        cid,
                        self._auth(who),
                        self._auth(plan.nurse),
                        lot,
                        1,
                        now=self.clock.now(),
                        residual="residual of the last ampoule",
                    )
                    waste = 0

        if self._do("administer/waste", cid, use):
            self._later(5 * 60, 20 * 60, lambda: self._reconcile(cid, who))

    def _reconcile(self, cid: str, who: str) -> None:
        plan = self.plans[cid]

        def reconcile() -> None:
            case = self.book.case(cid)
            unused = {lot: a.held for lot, a in case.lots.items()}
            empties = {lot: a.empties_held for lot, a in case.lots.items()}
            self.book.reconcile(
                cid,
                self._auth(who),
                unused,
                empties,
                now=self.clock.now(),
                witness_auth=self._auth(plan.nurse),
            )
            self.desk.request_return(cid, now=self.clock.now())

        self._do("reconcile", cid, reconcile)

    def _load_return(self, cid: str) -> None:
        holder = self.book.case(cid).holder.removeprefix("person:")
        self._do(
            "load_return",
            cid,
            lambda: self.desk.load_return(
                cid, self._auth(holder), self._seal(), now=self.clock.now()
            ),
        )

    def _return_receive(self, cid: str) -> None:
        ph, witness = self.rng.sample(PHARMACISTS, 2)

        def receive() -> None:
            case = self.book.case(cid)
            self.desk.return_receive(
                cid,
                self._auth(ph),
                self._auth(witness),
                {lot: a.held for lot, a in case.lots.items()},
                {lot: a.empties_held for lot, a in case.lots.items()},
                now=self.clock.now(),
                seal_id_seen=case.seal_id,
            )

        self._do("return_receive", cid, receive)

    # ---- the robot fault ----------------------------------------------------------------

    def _robot_dies(self, plan: _Plan) -> None:
        robot = self.twin.robots.get(plan.faulted_robot)
        case = self.book.case(plan.case_id)
        if robot is None or case.state is not CaseState.IN_TRANSIT:
            plan.path = "normal"  # it arrived before it could fail: an ordinary case
            plan.fault = False
            return
        robot.disconnect()

    def _recover(self, cid: str) -> None:
        plan = self.plans[cid]
        ph = self.rng.choice(PHARMACISTS)

        def recover() -> None:
            case = self.book.case(cid)
            counts = {lot: a.held for lot, a in case.lots.items()}
            self.book.recover(
                cid,
                self._auth(ph),
                self._auth(LOGISTICS),
                seal_intact=True,
                seal_id_seen=case.seal_id,
                blind_count=counts,
                now=self.clock.now(),
            )

        if self._do("recover", cid, recover):
            robot = self.twin.robots.get(plan.faulted_robot)
            if robot is not None:
                # The two people took the drugs out: the robot carries nothing when repaired.
                robot.forget_cargo()
                self.loop.call_later(self.config.repair_after_s, robot.connect)
            # Back to the pharmacy and on another robot.
            self._later(600, 1200, lambda: self._send(cid))


def place_custody_day(twin: Any, ledger: LedgerSink, hours: float, seed: int) -> CustodyDay:
    """Attach a controlled-drug day to `twin` and schedule it."""
    day = CustodyDay(twin, ledger, hours, seed)
    day.start()
    return day


__all__ = [
    "CustodyDay",
    "CustodyDayConfig",
    "CustodyDayResult",
    "demo_vault",
    "place_custody_day",
    "staff_pins",
]

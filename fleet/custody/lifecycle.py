"""The controlled-drug custody lifecycle: one case per request, as a state machine with only the
allowed transitions, every custody change recorded on the ledger (hospital-domain.md 1.2, 1.4).

Pure (DESIGN.md principle 1): no gRPC, database or scheduler imports, and no clock reads: every
step takes `now` (float seconds since the epoch) and the `Authentication`s (badge + PIN, from the
`StaffDirectory`) of the people acting *for this step*; `StepAuth` checks them against the
permission table and the two-person rules (`fleet.custody.permissions`).

Custody
-------
At every moment a case has exactly one custodian (`CustodyCase.custodian`), a ledger id:

- `vault:pharmacy`: before the pick, and after the pharmacy took a return (or a put-back) in;
- `person:<staff id>`: the person holding the drugs;
- `compartment:<robot>/<n>`: a locked, sealed robot compartment, with `accountable` the person
  who loaded it (the pharmacist outbound, the OR person on the return leg). A robot fault does
  not change custody: the sealed compartment and its accountable person keep it until two
  people force it open (`recover`).

Administered units leave custody (`patient:<ref>` is not a custodian), as do wasted units
(`waste`) and units written off as lost (`loss`). Units a count did not find leave the
custodian into the open discrepancy (`discrepancy:<id>`) until its resolution says where they
are (`fleet.custody.discrepancy`). Conservation, for each case and lot (`LotAccount`):

    issued = administered + wasted + broken + returned_unused + lost
             + held (in custody) + missing in open discrepancies
    opened containers = empties held + empties returned + empties written off
             + empties missing in open discrepancies

and at CLOSED nothing is held or missing: `issued = administered + wasted + broken +
returned_unused + lost` (broken and lost are non-zero only after a discrepancy was resolved as
BROKEN or LOSS) and every opened container came back (or was written off the same way).

States and transitions (`TRANSITIONS`; `STEP_STATES` says which step may run in which state)
-------------------------------------------------------------------------------------------
```
REQUESTED -approve-> APPROVED -pick-> PICKED -verify-> VERIFIED -load-> LOADED -depart->
IN_TRANSIT -arrive-> ARRIVED -await_recipient-> AWAITING_RECIPIENT -receive-> RECEIVED
-store_in_or-> IN_OR_CUSTODY [administer, waste: repeatable] -reconcile->
RECONCILIATION_SUBMITTED -load_return-> RETURN_IN_TRANSIT -return_receive-> RETURN_RECEIVED
-> CLOSED (balanced, no open discrepancy) | DISCREPANCY_OPEN -(all resolved)-> CLOSED

REQUESTED -reject-> REJECTED; REQUESTED/APPROVED -cancel-> CANCELLED
PICKED/VERIFIED -return_receive-> RETURN_RECEIVED (put back: the case was called off)
AWAITING_RECIPIENT -recipient_absent (after recipient_timeout_s)-> ALT_RECIPIENT_PAGED
ALT_RECIPIENT_PAGED -receive-> RECEIVED
ALT_RECIPIENT_PAGED -recipient_absent (after alt_timeout_s)-> RETURNING_TO_PHARMACY
RETURNING_TO_PHARMACY -return_receive-> RETURN_RECEIVED
LOADED/IN_TRANSIT/ARRIVED/AWAITING_RECIPIENT/ALT_RECIPIENT_PAGED/RETURNING_TO_PHARMACY/
RETURN_IN_TRANSIT -robot_fault-> DELIVERY_FAULT -start_recovery-> RECOVERY_PENDING
RECOVERY_PENDING -recover-> RECOVERED (seal intact, same seal id, counts match)
                          | DISCREPANCY_OPEN -(all resolved)-> RECOVERED
RECOVERED -load-> LOADED (redispatch, outbound leg only)
RECOVERED -hand_carry-> HAND_CARRIED -receive-> RECEIVED (outbound leg only)
RECOVERED/HAND_CARRIED -return_receive-> RETURN_RECEIVED (back to stock)
RECONCILIATION_SUBMITTED -return_receive-> RETURN_RECEIVED (returned by hand)
```
`handover` (person to person, both authenticated) and the discrepancy steps (`resolve`,
`approve_resolution`, `reject_resolution`) change no state, except that approving the last
open discrepancy of a case in DISCREPANCY_OPEN moves it on.

Ledger events (one per lot; units in the drug's unit, empty containers as `empty:<unit>`)
-------------------------------------------------------------------------------------------
| step            | event          | from -> to                                  |
| --------------- | -------------- | ------------------------------------------- |
| pick            | ISSUE          | vault:pharmacy -> person:<picker>           |
| verify          | VERIFY         | person:<holder> -> same (actor: verifier)   |
| load            | LOAD           | person:<loader> -> compartment:<robot>/<n>  |
| receive         | RECEIVE        | compartment (or carrier) -> person:<recip.> |
| store_in_or     | HANDOVER       | person -> person (only with a keeper)       |
| handover        | HANDOVER       | person:<giver> -> person:<taker> (actor:    |
|                 |                | the taker, witness: the giver)              |
| administer      | ADMINISTER     | person:<holder> -> patient:<ref>            |
| waste           | WASTE          | person:<holder> -> waste (witness)          |
| reconcile       | COUNT          | person:<holder> -> same (blind counts)      |
| load_return     | RETURN         | person:<holder> -> compartment              |
| return_receive  | RETURN_RECEIVE | compartment or person -> vault:pharmacy     |
| recover         | OVERRIDE       | compartment -> person:<pharmacist> (2 pers.)|
| (any count)     | DISCREPANCY_OPEN    | custodian -> discrepancy:<id> (missing) |
| approve_resol.  | DISCREPANCY_RESOLVE | discrepancy:<id> -> custodian/waste/loss|

Empty containers have no event of their own when they appear: an ADMINISTER or WASTE of a drug
with `returns_empty_container` leaves its `from_custodian` one `empty:<unit>` per unit (a WASTE
of quantity 0 records a residual volume alone, in `note`). With that rule every custodian's
balance follows from the events; at the end of a day with every case closed, people,
compartments and discrepancies hold nothing.

A discrepancy with nothing missing (surplus, seal only) is recorded with from = to =
`discrepancy:<id>` and quantity = the surplus (0 for seal only), so it moves nothing. Counting
events carry `blind_count` (what was entered) and `expected_count` (the record); the quantity
of a transfer is what changed hands (at most the expected). Every event carries the red
prescription number, `order_id` (the dispatcher's order id if given, else the case id), the
lot's expiry, `actor`/`actor_auth` and `witness`/`witness_auth` (staff ids and factor names),
`location` (the pharmacy, the OR station, or where a faulted robot stood), `occurred_at` = the
step's `now`, and on robot legs `robot_id`, `compartment`, `seal_id`. Approval of a resolution
records the resolver as actor and their witness as witness; the approving pharmacist is named in
`note`. Steps without a custody change (request, approve, reject, cancel, depart, arrive,
await_recipient, open_for_recipient, recipient_absent, robot_fault, start_recovery, hand_carry,
resolve, reject_resolution) write no event; they are in the case's `history`.

Atomicity: a refused step raises (InvalidArgument, FailedPrecondition, NotFound,
PermissionDenied, AuthenticationFailed) before anything changes: no event, no stock change, the
case as it was. A step's events go to the sink together (`append_many` when the sink has it).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, tzinfo
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Protocol

from fleet.clock import Clock
from fleet.custody.catalogue import Catalogue
from fleet.custody.discrepancy import (
    BACK_TO_CUSTODY,
    NOTE_REQUIRED,
    WRITE_OFF,
    Discrepancy,
    DiscrepancyState,
    LotCount,
    Resolution,
    ResolutionCode,
    allowed_codes,
    check_counts,
    compare_counts,
    discrepancy_ref,
    empty_unit,
    parse_code,
)
from fleet.custody.ledger import GENESIS_HASH, AuthFactor, CustodyEvent, EventDraft, EventType, seal
from fleet.custody.people import (
    Authentication,
    AuthenticationFailed,
    StaffDirectory,
    StaffMember,
)
from fleet.custody.permissions import Action, AuthorizedStep, StepAuth, allowed_actions
from fleet.custody.stock import MAX_UNITS, Pick, VaultStock, is_expired
from fleet.domain.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied

VAULT = "vault:pharmacy"
WASTE = "waste"
LOSS = "loss"

_IDENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")


def person_ref(staff_id: str) -> str:
    """A person as a custodian: `person:<staff id>`."""
    return f"person:{staff_id}"


def compartment_ref(robot_id: str, compartment: str) -> str:
    """A robot compartment as a custodian: `compartment:<robot>/<n>`."""
    return f"compartment:{robot_id}/{compartment}"


def patient_sink(ref: str) -> str:
    """Where administered units go: `patient:<ref>` (not a custodian)."""
    return f"patient:{ref}"


class CaseState(StrEnum):
    """Where a custody case stands (module docstring; hospital-domain.md 1.4)."""

    REQUESTED = "REQUESTED"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"
    CANCELLED = "CANCELLED"
    PICKED = "PICKED"
    VERIFIED = "VERIFIED"
    LOADED = "LOADED"
    IN_TRANSIT = "IN_TRANSIT"
    ARRIVED = "ARRIVED"
    AWAITING_RECIPIENT = "AWAITING_RECIPIENT"
    ALT_RECIPIENT_PAGED = "ALT_RECIPIENT_PAGED"
    RETURNING_TO_PHARMACY = "RETURNING_TO_PHARMACY"
    RECEIVED = "RECEIVED"
    IN_OR_CUSTODY = "IN_OR_CUSTODY"
    RECONCILIATION_SUBMITTED = "RECONCILIATION_SUBMITTED"
    RETURN_IN_TRANSIT = "RETURN_IN_TRANSIT"
    RETURN_RECEIVED = "RETURN_RECEIVED"
    CLOSED = "CLOSED"
    DELIVERY_FAULT = "DELIVERY_FAULT"
    RECOVERY_PENDING = "RECOVERY_PENDING"
    RECOVERED = "RECOVERED"
    HAND_CARRIED = "HAND_CARRIED"
    DISCREPANCY_OPEN = "DISCREPANCY_OPEN"


_C = CaseState
TRANSITIONS: Mapping[CaseState, frozenset[CaseState]] = MappingProxyType(
    {
        _C.REQUESTED: frozenset({_C.APPROVED, _C.REJECTED, _C.CANCELLED}),
        _C.APPROVED: frozenset({_C.PICKED, _C.CANCELLED}),
        _C.REJECTED: frozenset(),
        _C.CANCELLED: frozenset(),
        _C.PICKED: frozenset({_C.VERIFIED, _C.RETURN_RECEIVED}),
        _C.VERIFIED: frozenset({_C.LOADED, _C.RETURN_RECEIVED}),
        _C.LOADED: frozenset({_C.IN_TRANSIT, _C.DELIVERY_FAULT}),
        _C.IN_TRANSIT: frozenset({_C.ARRIVED, _C.DELIVERY_FAULT}),
        _C.ARRIVED: frozenset({_C.AWAITING_RECIPIENT, _C.DELIVERY_FAULT}),
        _C.AWAITING_RECIPIENT: frozenset({_C.RECEIVED, _C.ALT_RECIPIENT_PAGED, _C.DELIVERY_FAULT}),
        _C.ALT_RECIPIENT_PAGED: frozenset(
            {_C.RECEIVED, _C.RETURNING_TO_PHARMACY, _C.DELIVERY_FAULT}
        ),
        _C.RETURNING_TO_PHARMACY: frozenset({_C.RETURN_RECEIVED, _C.DELIVERY_FAULT}),
        _C.RECEIVED: frozenset({_C.IN_OR_CUSTODY}),
        _C.IN_OR_CUSTODY: frozenset({_C.RECONCILIATION_SUBMITTED}),
        _C.RECONCILIATION_SUBMITTED: frozenset({_C.RETURN_IN_TRANSIT, _C.RETURN_RECEIVED}),
        _C.RETURN_IN_TRANSIT: frozenset({_C.RETURN_RECEIVED, _C.DELIVERY_FAULT}),
        _C.RETURN_RECEIVED: frozenset({_C.CLOSED, _C.DISCREPANCY_OPEN}),
        _C.CLOSED: frozenset(),
        _C.DELIVERY_FAULT: frozenset({_C.RECOVERY_PENDING}),
        _C.RECOVERY_PENDING: frozenset({_C.RECOVERED, _C.DISCREPANCY_OPEN}),
        _C.RECOVERED: frozenset({_C.LOADED, _C.HAND_CARRIED, _C.RETURN_RECEIVED}),
        _C.HAND_CARRIED: frozenset({_C.RECEIVED, _C.RETURN_RECEIVED}),
        _C.DISCREPANCY_OPEN: frozenset({_C.RECOVERED, _C.CLOSED}),
    }
)

TERMINAL_STATES = frozenset({_C.REJECTED, _C.CANCELLED, _C.CLOSED})
# States whose custodian is a robot compartment: the robot steps and faults apply.
ROBOT_STATES = frozenset(
    {
        _C.LOADED,
        _C.IN_TRANSIT,
        _C.ARRIVED,
        _C.AWAITING_RECIPIENT,
        _C.ALT_RECIPIENT_PAGED,
        _C.RETURNING_TO_PHARMACY,
        _C.RETURN_IN_TRANSIT,
    }
)
_OR_SIDE = frozenset({_C.RECEIVED, _C.IN_OR_CUSTODY, _C.RECONCILIATION_SUBMITTED})

# Which step may run in which state. Discrepancy steps run in any state (while it is open).
STEP_STATES: Mapping[str, frozenset[CaseState]] = MappingProxyType(
    {
        "approve": frozenset({_C.REQUESTED}),
        "reject": frozenset({_C.REQUESTED}),
        "cancel": frozenset({_C.REQUESTED, _C.APPROVED}),
        "pick": frozenset({_C.APPROVED}),
        "verify": frozenset({_C.PICKED}),
        "load": frozenset({_C.VERIFIED, _C.RECOVERED}),
        "depart": frozenset({_C.LOADED}),
        "arrive": frozenset({_C.IN_TRANSIT}),
        "await_recipient": frozenset({_C.ARRIVED}),
        "open_for_recipient": frozenset({_C.AWAITING_RECIPIENT, _C.ALT_RECIPIENT_PAGED}),
        "recipient_absent": frozenset({_C.AWAITING_RECIPIENT, _C.ALT_RECIPIENT_PAGED}),
        "receive": frozenset({_C.AWAITING_RECIPIENT, _C.ALT_RECIPIENT_PAGED, _C.HAND_CARRIED}),
        "store_in_or": frozenset({_C.RECEIVED}),
        "handover": frozenset(
            {
                _C.PICKED,
                _C.VERIFIED,
                _C.RECEIVED,
                _C.IN_OR_CUSTODY,
                _C.RECONCILIATION_SUBMITTED,
                _C.RECOVERED,
                _C.HAND_CARRIED,
            }
        ),
        "administer": frozenset({_C.IN_OR_CUSTODY}),
        "waste": frozenset({_C.IN_OR_CUSTODY}),
        "reconcile": frozenset({_C.IN_OR_CUSTODY}),
        "load_return": frozenset({_C.RECONCILIATION_SUBMITTED}),
        "return_receive": frozenset(
            {
                _C.PICKED,
                _C.VERIFIED,
                _C.RECONCILIATION_SUBMITTED,
                _C.RETURN_IN_TRANSIT,
                _C.RETURNING_TO_PHARMACY,
                _C.RECOVERED,
                _C.HAND_CARRIED,
            }
        ),
        "robot_fault": ROBOT_STATES,
        "start_recovery": frozenset({_C.DELIVERY_FAULT}),
        "recover": frozenset({_C.RECOVERY_PENDING}),
        "hand_carry": frozenset({_C.RECOVERED}),
    }
)


class Leg(StrEnum):
    """Which way the drugs travel: to the OR, or back to the pharmacy."""

    OUTBOUND = "OUTBOUND"
    RETURN = "RETURN"


@dataclass(frozen=True, slots=True)
class LifecycleSettings:
    """Timings and names of the lifecycle.

    `open_window_s`: how long a compartment stays open for the recipient who authenticated.
    `recipient_timeout_s`: from `await_recipient` until the alternate may be paged.
    `alt_timeout_s`: from paging the alternate until the robot may take the drugs back.
    `tz`: the hospital's time zone, for the day on which a lot's expiry is judged.
    """

    open_window_s: float = 120.0
    recipient_timeout_s: float = 600.0
    alt_timeout_s: float = 600.0
    pharmacy_location: str = "pharmacy"
    tz: tzinfo = UTC

    def __post_init__(self) -> None:
        for name in ("open_window_s", "recipient_timeout_s", "alt_timeout_s"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise InvalidArgument(name, f"must be a positive number of seconds, got {value!r}")
        _text(self.pharmacy_location, "pharmacy_location")


@dataclass(slots=True)
class LotAccount:
    """One lot of a case: where its units went (whole units of the drug's unit).

    `held` units are with the case's custodian; `opened` counts units whose container (ampoule,
    vial, patch) must come back empty (administered or wasted whole units of a drug with
    `returns_empty_container`), `empties_held` of those are with the custodian.
    """

    lot: str
    expiry: date
    issued: int = 0
    administered: int = 0
    wasted: int = 0
    broken: int = 0
    returned_unused: int = 0
    lost: int = 0
    held: int = 0
    opened: int = 0
    empties_held: int = 0
    empties_returned: int = 0
    empties_written_off: int = 0

    @property
    def empty_containers_expected(self) -> int:
        """Opened containers that must come back (or be written off by a resolution)."""
        return self.opened

    @property
    def empty_containers_returned(self) -> int:
        return self.empties_returned

    @property
    def balance(self) -> int:
        """Issued units not administered, wasted, broken, returned or lost: what is in
        custody or missing in an open discrepancy. Zero at CLOSED."""
        return (
            self.issued
            - self.administered
            - self.wasted
            - self.broken
            - self.returned_unused
            - self.lost
        )

    @property
    def empties_balance(self) -> int:
        """Opened containers not returned or written off (zero at CLOSED)."""
        return self.opened - self.empties_returned - self.empties_written_off


@dataclass(frozen=True, slots=True)
class OpenGrant:
    """The compartment may open for `staff_id` from `opened_at` until `expires_at`: what the
    dispatcher tells the robot (open compartment, for that person, for that long)."""

    case_id: str
    staff_id: str
    robot_id: str
    compartment: str
    opened_at: float
    expires_at: float

    def live(self, now: float) -> bool:
        """Whether the compartment is open for the person at `now`."""
        return self.opened_at <= now <= self.expires_at


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """A step of a case: when, the state after it, the step's name, and the ledger seq of the
    step's last event (None for a step that recorded none)."""

    at: float
    state: CaseState
    step: str
    seq: int | None


@dataclass(slots=True)
class CustodyCase:
    """One controlled-drug request for one surgical case, from request to closing.

    Changed only by `CustodyBook`; what callers get is a copy. `lots` holds the account of
    every lot issued (`LotAccount`); `discrepancies` every discrepancy the case ever opened.
    `custodian` is the one holder (module docstring), `accountable` the person answerable for
    it (the loader for a compartment, the receiving pharmacist for the vault after a return).
    """

    id: str
    prescription_no: str
    patient_ref: str
    case_ref: str
    or_station: str
    requested_by: str
    drug_code: str
    quantity: int
    unit: str
    returns_empty_container: bool
    recipient: str
    alternates: tuple[str, ...]
    order_id: str
    created_at: float
    state: CaseState = CaseState.REQUESTED
    custodian: str = VAULT
    accountable: str = ""
    lots: dict[str, LotAccount] = field(default_factory=dict)
    approved_by: str = ""
    picker: str = ""
    verifier: str = ""
    reason: str = ""
    robot_id: str = ""
    compartment: str = ""
    seal_id: str = ""
    seals: list[str] = field(default_factory=list)
    reserved: bool = False
    leg: Leg | None = None
    awaiting_since: float | None = None
    alternate: str = ""
    alt_paged_at: float | None = None
    grant: OpenGrant | None = None
    grants: list[OpenGrant] = field(default_factory=list)
    received_by: str = ""
    fault_detail: str = ""
    fault_location: str = ""
    fault_state: CaseState | None = None
    resume_state: CaseState | None = None
    discrepancies: dict[str, Discrepancy] = field(default_factory=dict)
    history: list[HistoryEntry] = field(default_factory=list)
    event_seqs: list[int] = field(default_factory=list)
    closed_at: float | None = None

    def copy(self) -> CustodyCase:
        """A copy sharing nothing mutable with this case (cheaper than `copy.deepcopy`)."""
        return dataclasses.replace(
            self,
            lots={lot: dataclasses.replace(a) for lot, a in self.lots.items()},
            seals=list(self.seals),
            grants=list(self.grants),
            discrepancies={k: d.copy() for k, d in self.discrepancies.items()},
            history=list(self.history),
            event_seqs=list(self.event_seqs),
        )

    @property
    def ledger_order_id(self) -> str:
        """What the ledger's `order_id` holds: the dispatcher's order id, else the case id."""
        return self.order_id or self.id

    @property
    def holder(self) -> str:
        """The staff id of the person holding or answerable for the drugs ("" before pick)."""
        if self.custodian.startswith("person:"):
            return self.custodian.removeprefix("person:")
        return self.accountable

    @property
    def held(self) -> int:
        """Units in custody, all lots."""
        return sum(a.held for a in self.lots.values())

    def open_discrepancies(self) -> list[Discrepancy]:
        """Discrepancies not resolved yet."""
        return [d for d in self.discrepancies.values() if d.is_open]

    def open_missing(self, lot: str, *, empties: bool = False) -> int:
        """Units (or empty containers) of `lot` missing in open discrepancies."""
        return sum(
            d.missing
            for d in self.discrepancies.values()
            if d.is_open and d.lot == lot and d.empties == empties
        )

    def recipients(self) -> frozenset[str]:
        """Who may take the delivery now: the recipient, and once paged the alternate."""
        if self.state is CaseState.HAND_CARRIED:
            extra = {*self.alternates, self.alternate} - {""}
            return frozenset({self.recipient, *extra})
        if self.state is CaseState.ALT_RECIPIENT_PAGED:
            return frozenset({self.recipient, self.alternate})
        return frozenset({self.recipient})


@dataclass(frozen=True, slots=True)
class StepResult:
    """What a step did: the case after it (a copy), the ledger events it appended, and the
    discrepancies it opened (copies)."""

    case: CustodyCase
    events: tuple[CustodyEvent, ...]
    opened: tuple[Discrepancy, ...]


class LedgerSink(Protocol):
    """Where events go: the in-memory `Ledger`, or the store through `ClockedSink`. A sink
    that also has `append_many(drafts) -> list[CustodyEvent]` gets a step's events in one call
    (one transaction)."""

    def append(self, draft: EventDraft) -> CustodyEvent: ...


class _ClockedStore(Protocol):
    def append(self, draft: EventDraft, clock: Clock) -> CustodyEvent: ...

    def append_many(self, drafts: Sequence[EventDraft], clock: Clock) -> list[CustodyEvent]: ...


class ClockedSink:
    """A `LedgerSink` over a store whose appends also take the clock that stamps
    `recorded_at` (`fleet.store.ledger.LedgerStore`): a step's events go in one transaction."""

    def __init__(self, store: _ClockedStore, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    def append(self, draft: EventDraft) -> CustodyEvent:
        return self.store.append(draft, self.clock)

    def append_many(self, drafts: Sequence[EventDraft]) -> list[CustodyEvent]:
        return list(self.store.append_many(drafts, self.clock))


# -- argument checks ----------------------------------------------------------------------------


def _check_now(now: object) -> float:
    if isinstance(now, bool) or not isinstance(now, int | float) or not math.isfinite(now):
        raise InvalidArgument("now", f"must be a finite number of seconds, got {now!r}")
    return float(now)


def _text(value: object, field_name: str) -> str:
    if not isinstance(value, str) or not value.strip() or value != value.strip():
        raise InvalidArgument(
            field_name, f"must be non-empty text without surrounding spaces, got {value!r}"
        )
    return value


def _ident(value: object, field_name: str) -> str:
    if not isinstance(value, str) or not _IDENT.fullmatch(value):
        raise InvalidArgument(
            field_name,
            f"{value!r} is not an id (1 to 64 letters, digits, '.', '_', ':' or '-')",
        )
    return value


def _units(value: object, field_name: str = "quantity", *, minimum: int = 1) -> int:
    if type(value) is not int:
        raise InvalidArgument(field_name, f"must be a whole number of units (int), got {value!r}")
    if not minimum <= value <= MAX_UNITS:
        raise InvalidArgument(
            field_name, f"must be between {minimum} and {MAX_UNITS} units, got {value}"
        )
    return value


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _states(states: Iterable[CaseState]) -> str:
    wanted = set(states)
    return ", ".join(s.value for s in CaseState if s in wanted)


# -- one step in the making ---------------------------------------------------------------------


class _Work:
    """A step being prepared on a copy of the case: events, state moves and stock changes are
    collected and only applied by `CustodyBook._commit` once every check has passed."""

    def __init__(self, book: CustodyBook, case: CustodyCase, step: str, now: float) -> None:
        self.book = book
        self.case = case.copy()
        self.step = step
        self.now = now
        self.drafts: list[EventDraft] = []
        self.moves: list[CaseState] = []
        self.stock_ops: list[Callable[[], object]] = []
        self.opened: list[Discrepancy] = []

    def move(self, to: CaseState) -> None:
        frm = self.case.state
        if to not in TRANSITIONS[frm]:
            # The step's state check should have refused: this is a bug, not bad input.
            raise AssertionError(f"{self.step}: {frm.value} -> {to.value} is not a transition")
        self.case.state = to
        self.moves.append(to)

    def emit(
        self,
        event_type: EventType,
        lot: str,
        quantity: int,
        *,
        frm: str,
        to: str,
        by: AuthorizedStep | None = None,
        empties: bool = False,
        location: str = "",
        robot: bool = False,
        blind: int | None = None,
        expected: int | None = None,
        reason: str = "",
        note: str = "",
        actor: str = "",
        actor_auth: Sequence[AuthFactor | str] = (),
        witness: str = "",
        witness_auth: Sequence[AuthFactor | str] = (),
    ) -> EventDraft:
        case = self.case
        if by is not None:
            actor, actor_auth = by.actor.id, by.actor_auth
            witness, witness_auth = by.witness_id, by.witness_auth
        account = case.lots.get(lot)
        expiry = account.expiry if account is not None else self.book._lot_expiry(case, lot)
        draft = EventDraft(
            event_type=event_type,
            drug_code=case.drug_code,
            lot=lot,
            quantity=quantity,
            unit=empty_unit(case.unit) if empties else case.unit,
            expiry=expiry,
            from_custodian=frm,
            to_custodian=to,
            location=location or case.or_station,
            actor=actor,
            actor_auth=tuple(actor_auth),
            witness=witness,
            witness_auth=tuple(witness_auth),
            prescription=case.prescription_no,
            order_id=case.ledger_order_id,
            robot_id=case.robot_id if robot else "",
            compartment=case.compartment if robot else "",
            seal_id=case.seal_id if robot else "",
            blind_count=blind,
            expected_count=expected,
            reason=reason,
            note=note,
            occurred_at=self.now,
        )
        self.drafts.append(draft)
        return draft


# -- the book -----------------------------------------------------------------------------------


class CustodyBook:
    """Every custody case, the vault stock they draw on, and the ledger they write to.

    Single writer (like the rest of the core): the dispatcher calls one step at a time. Each
    step checks its state (`STEP_STATES`, FailedPrecondition naming the case, its state and the
    step), the people (`StepAuth`), then its arguments; only then does it append its events,
    change the stock and the case. See the module docstring for states and events.
    """

    def __init__(
        self,
        catalogue: Catalogue,
        stock: VaultStock,
        directory: StaffDirectory,
        ledger: LedgerSink,
        *,
        settings: LifecycleSettings | None = None,
        step_auth: StepAuth | None = None,
    ) -> None:
        self.catalogue = catalogue
        self.stock = stock
        self.directory = directory
        self.ledger = ledger
        self.settings = settings if settings is not None else LifecycleSettings()
        self.step_auth = step_auth if step_auth is not None else StepAuth(directory)
        self._cases: dict[str, CustodyCase] = {}
        self._discrepancy_case: dict[str, str] = {}
        self._next = 0

    # ---- saved state (fleet.custody.state) ----------------------------------------------------

    def export_state(self, *, omit: Collection[str] = ()) -> dict[str, Any]:
        """Everything the book needs to go on after a restart, as JSON-able data: every case
        (request order), the discrepancy index, the case counter and the vault stock (see
        `fleet.custody.state` for the shape). Cases named in `omit` are left out of `cases`
        (a caller that saved a closed case once need not export it again). Changes nothing.
        """
        from fleet.custody.state import FORMAT, encode_case

        skip = frozenset(omit)
        return {
            "format": FORMAT,
            "next_case": self._next,
            "cases": [encode_case(c) for cid, c in self._cases.items() if cid not in skip],
            "discrepancy_case": dict(self._discrepancy_case),
            "stock": self.stock.export_state(),
        }

    @classmethod
    def restore(
        cls,
        state: Mapping[str, Any],
        catalogue: Catalogue,
        directory: StaffDirectory,
        ledger: LedgerSink,
        *,
        settings: LifecycleSettings | None = None,
        step_auth: StepAuth | None = None,
    ) -> CustodyBook:
        """A book equal to the one `state` was exported from (`export_state`, all cases), on
        `catalogue`, `directory` and `ledger` (which come from their own sources). Raises
        `fleet.custody.state.CustodyStateError` naming the case (and drug, or discrepancy) for
        a case whose drug is not in `catalogue`, an index that does not match the cases, or a
        malformed state."""
        from fleet.custody.state import CustodyStateError, check_state, decode_case

        d = check_state(state)
        stock = VaultStock.restore(catalogue, d["stock"])
        book = cls(catalogue, stock, directory, ledger, settings=settings, step_auth=step_auth)
        if type(d["next_case"]) is not int or d["next_case"] < 0:
            raise CustodyStateError(f"custody state: next_case {d['next_case']!r} is not a count")
        book._next = d["next_case"]
        if not isinstance(d["cases"], list):
            raise CustodyStateError("custody state: cases must be a list")
        for i, item in enumerate(d["cases"]):
            case = decode_case(item, f"custody state cases[{i}]")
            if case.id in book._cases:
                raise CustodyStateError(f"custody state: case {case.id} is given twice")
            drug = catalogue.find(case.drug_code)
            if drug is None:
                raise CustodyStateError(
                    f"custody state: case {case.id} names drug {case.drug_code}, which is not "
                    "in the catalogue"
                )
            book._cases[case.id] = case
        index = d["discrepancy_case"]
        if not isinstance(index, Mapping):
            raise CustodyStateError("custody state: discrepancy_case must be an object")
        derived = {did: c.id for c in book._cases.values() for did in c.discrepancies}
        if dict(index) != derived:
            wrong = sorted(set(index.items()) ^ set(derived.items()))
            raise CustodyStateError(
                f"custody state: the discrepancy index does not match the cases: {wrong[:5]}"
            )
        book._discrepancy_case = dict(index)
        return book

    # ---- reading ------------------------------------------------------------------------------

    def case(self, case_id: str) -> CustodyCase:
        """A copy of the case; NotFound for an unknown id."""
        return self._get(case_id).copy()

    def cases(self) -> list[CustodyCase]:
        """Copies of every case, in the order they were requested."""
        return [c.copy() for c in self._cases.values()]

    def discrepancy(self, discrepancy_id: str) -> Discrepancy:
        """A copy of one discrepancy; NotFound for an unknown id."""
        case = self._get(self._case_of(discrepancy_id))
        return case.discrepancies[discrepancy_id].copy()

    def open_discrepancies(self) -> list[Discrepancy]:
        """Copies of every discrepancy not yet resolved, oldest first."""
        found = [d for c in self._cases.values() for d in c.open_discrepancies()]
        return [d.copy() for d in sorted(found, key=lambda d: d.opened_at)]

    def timeouts_due(self, now: float) -> list[str]:
        """Cases whose recipient (or alternate) has not come within the timeout at `now` and
        whose compartment is not open: call `recipient_absent` for each."""
        now = _check_now(now)
        s = self.settings
        due: list[str] = []
        for c in self._cases.values():
            if c.grant is not None and c.grant.live(now):
                continue
            since, wait = None, 0.0
            if c.state is CaseState.AWAITING_RECIPIENT:
                since, wait = c.awaiting_since, s.recipient_timeout_s
            elif c.state is CaseState.ALT_RECIPIENT_PAGED:
                since, wait = c.alt_paged_at, s.alt_timeout_s
            if since is not None and now >= since + wait:
                due.append(c.id)
        return due

    def suggest_pick(self, case_id: str, today: date) -> list[Pick]:
        """First-expiry-first-out lots for the case's quantity, without taking anything (the
        pharmacist then scans the boxes in hand: `pick`). FailedPrecondition when short."""
        case = self._get(case_id)
        if not isinstance(today, date) or isinstance(today, datetime):
            raise InvalidArgument("today", f"must be a date, got {today!r}")
        left = case.quantity
        picks: list[Pick] = []
        for lot in self.stock.lots(case.drug_code):
            if left == 0:
                break
            if lot.lot.expired(today):
                continue
            take = min(left, lot.on_hand)
            picks.append(Pick(case.drug_code, lot.lot.lot, lot.expiry, take))
            left -= take
        if left:
            have = case.quantity - left
            raise FailedPrecondition(
                f"case {case.id}: not enough {case.drug_code} in the vault: wanted "
                f"{case.quantity} {case.unit}, available {have} (expired lots left out)"
            )
        return picks

    # ---- request and review -------------------------------------------------------------------

    def request(
        self,
        requester_auth: Authentication,
        *,
        prescription_no: str,
        patient_ref: str,
        case_ref: str,
        or_station: str,
        drug_code: str,
        quantity: int,
        now: float,
        recipient: str | None = None,
        alternates: Sequence[str] = (),
        order_id: str = "",
        case_id: str | None = None,
    ) -> StepResult:
        """A new case: `quantity` units of `drug_code` for one patient (`patient_ref`) and
        surgical case (`case_ref`) at `or_station`, on red prescription `prescription_no`.

        `recipient` (default: the requester) takes the delivery; `alternates` may be paged
        when they do not come (`recipient_absent`). Both must be allowed to receive.
        """
        now = _check_now(now)
        step = self._auth(Action.REQUEST, requester_auth, now=now)
        prescription_no = _text(prescription_no, "prescription_no")
        patient_ref = _ident(patient_ref, "patient_ref")
        case_ref = _text(case_ref, "case_ref")
        or_station = _text(or_station, "or_station")
        drug = self.catalogue.find(drug_code) if isinstance(drug_code, str) else None
        if drug is None:
            raise InvalidArgument(
                "drug_code", f"{drug_code!r} is not in the controlled-drug catalogue"
            )
        quantity = _units(quantity)
        who = step.actor.id if recipient is None else self._receiver(recipient, "recipient")
        if isinstance(alternates, str):
            raise InvalidArgument("alternates", "must be a list of staff ids, not one string")
        alts: list[str] = []
        for alt in alternates:
            self._receiver(alt, "alternates")
            if alt == who or alt in alts:
                raise InvalidArgument("alternates", f"{alt!r} is named twice")
            alts.append(alt)
        if not isinstance(order_id, str):
            raise InvalidArgument("order_id", f"must be text, got {order_id!r}")
        if case_id is None:
            self._next += 1
            case_id = f"CD-{self._next:06d}"
            while case_id in self._cases:
                self._next += 1
                case_id = f"CD-{self._next:06d}"
        case_id = _ident(case_id, "case_id")
        if case_id in self._cases:
            raise InvalidArgument("case_id", f"case {case_id} exists already")
        case = CustodyCase(
            id=case_id,
            prescription_no=prescription_no,
            patient_ref=patient_ref,
            case_ref=case_ref,
            or_station=or_station,
            requested_by=step.actor.id,
            drug_code=drug.code,
            quantity=quantity,
            unit=drug.unit,
            returns_empty_container=drug.returns_empty_container,
            recipient=who,
            alternates=tuple(alts),
            order_id=order_id,
            created_at=now,
        )
        w = _Work(self, case, "request", now)
        w.moves.append(CaseState.REQUESTED)  # the initial state, not a transition
        return self._commit(w)

    def approve(self, case_id: str, pharmacist_auth: Authentication, *, now: float) -> StepResult:
        """A pharmacist's review accepts the request (REQUESTED -> APPROVED)."""
        w = self._work(case_id, "approve", now)
        step = self._auth(Action.APPROVE, pharmacist_auth, now=w.now)
        w.case.approved_by = step.actor.id
        w.move(CaseState.APPROVED)
        return self._commit(w)

    def reject(
        self, case_id: str, pharmacist_auth: Authentication, reason: str, *, now: float
    ) -> StepResult:
        """A pharmacist's review refuses the request, with a reason (-> REJECTED)."""
        w = self._work(case_id, "reject", now)
        step = self._auth(Action.REJECT, pharmacist_auth, now=w.now)
        w.case.reason = _text(reason, "reason")
        w.case.approved_by = step.actor.id
        w.move(CaseState.REJECTED)
        return self._commit(w)

    def cancel(
        self, case_id: str, actor_auth: Authentication, reason: str, *, now: float
    ) -> StepResult:
        """Call the request off before anything is picked: by the requester, or a pharmacist
        (-> CANCELLED). After the pick, the units go back with `return_receive`."""
        w = self._work(case_id, "cancel", now)
        member = self.directory.check_authentication(
            actor_auth, w.now, max_age_s=self.step_auth.max_age_s
        )
        action = Action.REQUEST if member.id == w.case.requested_by else Action.REJECT
        self._auth(action, actor_auth, now=w.now)
        w.case.reason = _text(reason, "reason")
        w.move(CaseState.CANCELLED)
        return self._commit(w)

    # ---- pharmacy -----------------------------------------------------------------------------

    def pick(
        self,
        case_id: str,
        picker_auth: Authentication,
        scanned: Sequence[tuple[str, int]],
        *,
        now: float,
    ) -> StepResult:
        """The pharmacist (发药人) takes the units from the vault, scanning each lot: `scanned`
        is `[(lot, units), ...]` adding up to the case's quantity (see `suggest_pick` for the
        first-expiry-first-out choice). An expired lot, a lot not in the vault or short on hand
        is refused and nothing is taken. Custody: vault -> the picker (ISSUE per lot)."""
        w = self._work(case_id, "pick", now)
        case = w.case
        step = self._auth(Action.PICK, picker_auth, now=w.now)
        lots = self._scanned(scanned)
        total = sum(lots.values())
        if total != case.quantity:
            raise InvalidArgument(
                "scanned", f"{total} {case.unit} scanned; case {case.id} is for {case.quantity}"
            )
        today = self._today(w.now)
        for lot, q in lots.items():
            held = self.stock.lot(case.drug_code, lot)
            if is_expired(held.expiry, today):
                raise FailedPrecondition(
                    f"lot {lot} of {case.drug_code} expired on {held.expiry.isoformat()}: "
                    f"expired stock cannot be picked"
                )
            if q > held.on_hand:
                raise FailedPrecondition(
                    f"lot {lot} of {case.drug_code}: wanted {q}, on hand {held.on_hand}"
                )
        picker = person_ref(step.actor.id)
        for lot, q in lots.items():
            expiry = self.stock.lot(case.drug_code, lot).expiry
            case.lots[lot] = LotAccount(lot, expiry, issued=q, held=q)
            w.emit(
                EventType.ISSUE,
                lot,
                q,
                frm=VAULT,
                to=picker,
                by=step,
                location=self.settings.pharmacy_location,
            )
            w.stock_ops.append(
                functools.partial(self.stock.pick_lot, case.drug_code, lot, q, today)
            )
        case.custodian, case.accountable, case.picker = picker, step.actor.id, step.actor.id
        w.move(CaseState.PICKED)
        return self._commit(w)

    def verify(self, case_id: str, verifier_auth: Authentication, *, now: float) -> StepResult:
        """A second pharmacist (复核人), not the picker, checks the pick (-> VERIFIED). No
        custody change: VERIFY per lot, from = to = the holder, actor = the verifier."""
        w = self._work(case_id, "verify", now)
        case = w.case
        step = self._auth(Action.VERIFY, verifier_auth, now=w.now, exclude={case.picker})
        for account in case.lots.values():
            w.emit(
                EventType.VERIFY,
                account.lot,
                account.held,
                frm=case.custodian,
                to=case.custodian,
                by=step,
                location=self.settings.pharmacy_location,
            )
        case.verifier = step.actor.id
        w.move(CaseState.VERIFIED)
        return self._commit(w)

    def load(
        self,
        case_id: str,
        loader_auth: Authentication,
        robot_id: str,
        compartment: str,
        seal_id: str,
        *,
        now: float,
        location: str = "",
    ) -> StepResult:
        """The pharmacist holding the drugs locks them in a robot compartment with a new seal
        (-> LOADED); custody passes to the compartment with the loader accountable (LOAD per
        lot). From RECOVERED this is a redispatch on the outbound leg (possibly another robot).

        The compartment is then kept for this case until the return is received: the return
        leg uses the same robot and compartment (`load_return`). That the robot carries
        nothing else on a controlled-drug trip is the dispatcher's rule.
        """
        w = self._work(case_id, "load", now)
        case = w.case
        if case.state is CaseState.RECOVERED and case.leg is Leg.RETURN:
            raise FailedPrecondition(
                f"case {case.id} is RECOVERED on the return leg: cannot load it again; "
                f"return it to the pharmacy (return_receive)"
            )
        step = self._auth(Action.LOAD, loader_auth, now=w.now, actor_in={case.holder})
        robot_id = _ident(robot_id, "robot_id")
        compartment = _ident(compartment, "compartment")
        seal_id = self._new_seal(seal_id)
        self._check_compartment_free(case.id, robot_id, compartment)
        if case.held == 0:
            raise FailedPrecondition(f"case {case.id} has no units in custody to load")
        to = compartment_ref(robot_id, compartment)
        case.robot_id, case.compartment, case.seal_id = robot_id, compartment, seal_id
        case.seals.append(seal_id)
        case.reserved, case.leg = True, Leg.OUTBOUND
        where = location or self._location(case)
        for account in case.lots.values():
            if account.held:
                w.emit(
                    EventType.LOAD,
                    account.lot,
                    account.held,
                    frm=case.custodian,
                    to=to,
                    by=step,
                    robot=True,
                    location=where,
                )
        case.custodian, case.accountable = to, step.actor.id
        w.move(CaseState.LOADED)
        return self._commit(w)

    # ---- the robot's outbound leg -------------------------------------------------------------

    def depart(self, case_id: str, *, now: float) -> StepResult:
        """The robot left with the sealed compartment (LOADED -> IN_TRANSIT)."""
        w = self._work(case_id, "depart", now)
        w.move(CaseState.IN_TRANSIT)
        return self._commit(w)

    def arrive(self, case_id: str, *, now: float) -> StepResult:
        """The robot reached the OR station (IN_TRANSIT -> ARRIVED)."""
        w = self._work(case_id, "arrive", now)
        w.move(CaseState.ARRIVED)
        return self._commit(w)

    def await_recipient(self, case_id: str, *, now: float) -> StepResult:
        """The robot docked and pages the recipient; the recipient timeout runs from `now`
        (ARRIVED -> AWAITING_RECIPIENT)."""
        w = self._work(case_id, "await_recipient", now)
        w.case.awaiting_since = w.now
        w.move(CaseState.AWAITING_RECIPIENT)
        return self._commit(w)

    def open_for_recipient(
        self, case_id: str, recipient_auth: Authentication, *, now: float
    ) -> OpenGrant:
        """The recipient (or, once paged, the alternate) authenticates at the robot with both
        factors: the compartment may open for them until `now + open_window_s`. No custody
        change yet (that is `receive`); the grant is kept in the case's `grants`."""
        w = self._work(case_id, "open_for_recipient", now)
        case = w.case
        step = self._auth(Action.RECEIVE, recipient_auth, now=w.now, actor_in=case.recipients())
        live = case.grant
        if live is not None and live.live(w.now) and live.staff_id != step.actor.id:
            raise FailedPrecondition(
                f"case {case.id}: the compartment is open for {live.staff_id} until "
                f"{_iso(live.expires_at)}"
            )
        grant = OpenGrant(
            case.id,
            step.actor.id,
            case.robot_id,
            case.compartment,
            w.now,
            w.now + self.settings.open_window_s,
        )
        case.grant = grant
        case.grants.append(grant)
        self._commit(w)
        return grant

    def recipient_absent(
        self, case_id: str, *, now: float, alternate: str | None = None
    ) -> StepResult:
        """Nobody came: after `recipient_timeout_s` the alternate is paged (the first of the
        request's `alternates`, or `alternate`) -> ALT_RECIPIENT_PAGED; after `alt_timeout_s`
        more the robot takes the drugs back -> RETURNING_TO_PHARMACY (then `return_receive`).
        Refused while the compartment is open for someone or before the timeout."""
        w = self._work(case_id, "recipient_absent", now)
        case = w.case
        if case.grant is not None and case.grant.live(w.now):
            raise FailedPrecondition(
                f"case {case.id}: the compartment is open for {case.grant.staff_id}"
            )
        s = self.settings
        if case.state is CaseState.AWAITING_RECIPIENT:
            assert case.awaiting_since is not None
            due = case.awaiting_since + s.recipient_timeout_s
            self._check_due(case, due, w.now, case.recipient)
            pick = alternate if alternate is not None else next(iter(case.alternates), None)
            if pick is None:
                raise InvalidArgument(
                    "alternate", f"case {case.id} names no alternate recipient: name one"
                )
            pick = self._receiver(pick, "alternate")
            if pick == case.recipient:
                raise InvalidArgument("alternate", f"{pick} is the recipient who did not come")
            case.alternate, case.alt_paged_at = pick, w.now
            w.move(CaseState.ALT_RECIPIENT_PAGED)
        else:
            if alternate is not None:
                raise InvalidArgument(
                    "alternate", f"case {case.id} has paged {case.alternate} already"
                )
            assert case.alt_paged_at is not None
            due = case.alt_paged_at + s.alt_timeout_s
            self._check_due(case, due, w.now, case.alternate)
            case.grant = None
            case.leg = Leg.RETURN
            w.move(CaseState.RETURNING_TO_PHARMACY)
        return self._commit(w)

    def receive(
        self,
        case_id: str,
        recipient_auth: Authentication,
        blind_count: Mapping[str, int],
        *,
        now: float,
        witness_auth: Authentication | None = None,
        seal_id_seen: str | None = None,
    ) -> StepResult:
        """The recipient takes the delivery, entering a blind count by scanned lot
        (`{lot: units}`, typed without seeing the expected numbers) -> RECEIVED.

        From a compartment: only the person the compartment was opened for, within the open
        window. From HAND_CARRIED: the carrier hands it over and authenticates as
        `witness_auth`. Custody moves to the recipient for what they counted (at most the
        expected, RECEIVE per lot); a count that differs, a lot not issued, or a seal id that
        is not the one loaded (`seal_id_seen`) opens a discrepancy, and the case goes on.
        """
        w = self._work(case_id, "receive", now)
        case = w.case
        robot = case.state is not CaseState.HAND_CARRIED
        if not robot and witness_auth is None:
            raise InvalidArgument(
                "witness_auth",
                f"case {case.id} is hand carried: the carrier {case.holder} hands it over and "
                f"authenticates as the second person",
            )
        step = self._auth(
            Action.RECEIVE,
            recipient_auth,
            witness_auth,
            now=w.now,
            actor_in=case.recipients(),
        )
        if robot:
            grant = case.grant
            if grant is None or grant.staff_id != step.actor.id:
                raise FailedPrecondition(
                    f"case {case.id} is {case.state.value}: the compartment was not opened for "
                    f"{step.actor.id}; open it first (badge and PIN at the robot)"
                )
            if not grant.live(w.now):
                raise FailedPrecondition(
                    f"case {case.id}: the compartment's opening for {step.actor.id} ended at "
                    f"{_iso(grant.expires_at)}; open it again"
                )
        elif step.witness_id != case.holder:
            raise PermissionDenied(
                f"case {case.id} is carried by {case.holder}: they hand it over, not "
                f"{step.witness_id}"
            )
        counts = check_counts(blind_count, "blind_count")
        extra: tuple[str, ...] = ()
        if seal_id_seen is not None:
            seen = _text(seal_id_seen, "seal_id_seen")
            if not robot:
                raise InvalidArgument("seal_id_seen", "a hand-carried delivery has no seal")
            if seen != case.seal_id:
                extra = (f"seal {seen} seen, {case.seal_id} sealed",)
        frm, to = case.custodian, person_ref(step.actor.id)
        lines = compare_counts(
            {a.lot: a.held for a in case.lots.values()},
            counts,
            what=case.unit,
            extra_problems=extra,
        )
        self._transfer(w, lines, EventType.RECEIVE, frm, to, step, robot=robot)
        for a in case.lots.values():
            a.held = min(a.held, counts.get(a.lot, 0))
        self._open_for(w, lines, frm, step, empties=False)
        case.custodian, case.accountable = to, step.actor.id
        case.received_by, case.grant = step.actor.id, None
        w.move(CaseState.RECEIVED)
        return self._commit(w)

    # ---- the OR -------------------------------------------------------------------------------

    def store_in_or(
        self,
        case_id: str,
        holder_auth: Authentication,
        *,
        now: float,
        keeper_auth: Authentication | None = None,
    ) -> StepResult:
        """The holder puts the drugs in the OR's locked cabinet or anaesthesia drawer
        (RECEIVED -> IN_OR_CUSTODY). With `keeper_auth`, custody passes to that person (the
        anaesthesiologist of the case, say: HANDOVER per lot, both authenticated)."""
        w = self._work(case_id, "store_in_or", now)
        case = w.case
        if keeper_auth is None:
            self._auth(Action.RECEIVE, holder_auth, now=w.now, actor_in={case.holder})
        else:
            self._hand_over(w, self._giver_and_taker(w, holder_auth, keeper_auth, Action.RECEIVE))
        w.move(CaseState.IN_OR_CUSTODY)
        return self._commit(w)

    def handover(
        self,
        case_id: str,
        giver_auth: Authentication,
        receiver_auth: Authentication,
        *,
        now: float,
    ) -> StepResult:
        """Custody passes from the person holding the drugs to another, both authenticated
        (shift change, picker to loader, nurse to anaesthesiologist): HANDOVER per lot (units
        and empty containers). The receiver must be allowed to hold them where they are: a
        pharmacist in the pharmacy states, someone who may receive in the OR states."""
        w = self._work(case_id, "handover", now)
        action = Action.RECEIVE if w.case.state in _OR_SIDE else Action.LOAD
        self._hand_over(w, self._giver_and_taker(w, giver_auth, receiver_auth, action))
        return self._commit(w)

    def administer(
        self,
        case_id: str,
        anesthesiologist_auth: Authentication,
        lot: str,
        quantity: int,
        patient_ref: str,
        *,
        now: float,
        note: str = "",
    ) -> StepResult:
        """`quantity` whole units of `lot` given to the case's patient (ADMINISTER: custodian
        -> patient:<ref>). For a drug that leaves a container, as many empty containers must
        come back. A partial dose is a whole unit administered, its rest wasted as a residual
        (`waste` with quantity 0)."""
        w = self._work(case_id, "administer", now)
        case = w.case
        step = self._auth(Action.ADMINISTER, anesthesiologist_auth, now=w.now)
        account = self._account(case, lot)
        quantity = _units(quantity)
        if patient_ref != case.patient_ref:
            raise InvalidArgument(
                "patient_ref",
                f"case {case.id} is for patient {case.patient_ref}, not {patient_ref!r}",
            )
        if quantity > account.held:
            raise FailedPrecondition(
                f"case {case.id}: {quantity} {case.unit} of lot {lot} to administer, "
                f"{account.held} held"
            )
        w.emit(
            EventType.ADMINISTER,
            lot,
            quantity,
            frm=case.custodian,
            to=patient_sink(case.patient_ref),
            by=step,
            note=_note(note),
        )
        account.administered += quantity
        account.held -= quantity
        if case.returns_empty_container:
            account.opened += quantity
            account.empties_held += quantity
        return self._commit(w)

    def waste(
        self,
        case_id: str,
        actor_auth: Authentication,
        witness_auth: Authentication,
        lot: str,
        quantity: int,
        *,
        now: float,
        residual: str = "",
        note: str = "",
    ) -> StepResult:
        """Discard drug in front of a witness (not the actor): `quantity` whole units opened
        and not given, and/or the `residual` volume left in an administered unit ("0.5 ml";
        quantity 0 records the residual alone). WASTE: custodian -> waste."""
        w = self._work(case_id, "waste", now)
        case = w.case
        step = self._auth(Action.WASTE, actor_auth, witness_auth, now=w.now)
        account = self._account(case, lot)
        quantity = _units(quantity, minimum=0)
        if not isinstance(residual, str):
            raise InvalidArgument("residual", f"must be text, got {residual!r}")
        residual = residual.strip()
        if quantity == 0 and not residual:
            raise InvalidArgument(
                "quantity", "waste whole units (1 or more) or name the residual volume"
            )
        if quantity == 0 and account.administered == 0:
            raise FailedPrecondition(
                f"case {case.id}: no unit of lot {lot} was administered: no residual to waste"
            )
        if quantity > account.held:
            raise FailedPrecondition(
                f"case {case.id}: {quantity} {case.unit} of lot {lot} to waste, {account.held} held"
            )
        text = "; ".join(t for t in (f"residual {residual}" if residual else "", _note(note)) if t)
        w.emit(EventType.WASTE, lot, quantity, frm=case.custodian, to=WASTE, by=step, note=text)
        account.wasted += quantity
        account.held -= quantity
        if case.returns_empty_container:
            account.opened += quantity
            account.empties_held += quantity
        return self._commit(w)

    def reconcile(
        self,
        case_id: str,
        actor_auth: Authentication,
        unused_by_lot: Mapping[str, int],
        empty_containers_by_lot: Mapping[str, int],
        *,
        now: float,
        witness_auth: Authentication | None = None,
    ) -> StepResult:
        """End of the case: blind counts by lot of the unused units and of the empty containers
        (IN_OR_CUSTODY -> RECONCILIATION_SUBMITTED). COUNT per lot (no custody change); a count
        that differs from the record opens a discrepancy for that lot."""
        w = self._work(case_id, "reconcile", now)
        case = w.case
        step = self._auth(Action.RECONCILE, actor_auth, witness_auth, now=w.now)
        unused = check_counts(unused_by_lot, "unused_by_lot")
        empties = self._empties(case, empty_containers_by_lot, "empty_containers_by_lot")
        holder = case.custodian
        for is_empty, counted in ((False, unused), (True, empties)):
            if is_empty and not case.returns_empty_container:
                continue
            expected = {a.lot: (a.empties_held if is_empty else a.held) for a in case.lots.values()}
            lines = compare_counts(
                expected, counted, what=empty_unit(case.unit) if is_empty else case.unit
            )
            for line in lines:
                if line.issued and (line.expected or line.counted):
                    w.emit(
                        EventType.COUNT,
                        line.lot,
                        line.counted,
                        frm=holder,
                        to=holder,
                        by=step,
                        empties=is_empty,
                        blind=line.counted,
                        expected=line.expected,
                    )
                    account = case.lots[line.lot]
                    if is_empty:
                        account.empties_held = line.moved
                    else:
                        account.held = line.moved
            self._open_for(w, lines, holder, step, empties=is_empty)
        w.move(CaseState.RECONCILIATION_SUBMITTED)
        return self._commit(w)

    def load_return(
        self,
        case_id: str,
        loader_auth: Authentication,
        robot_id: str,
        compartment: str,
        seal_id: str,
        *,
        now: float,
    ) -> StepResult:
        """The holder locks the unused units and the empty containers in the compartment kept
        for this case, the same robot and compartment as the outbound leg, with a new seal
        (-> RETURN_IN_TRANSIT). RETURN per lot, units and empties as separate events."""
        w = self._work(case_id, "load_return", now)
        case = w.case
        step = self._auth(Action.RECONCILE, loader_auth, now=w.now, actor_in={case.holder})
        robot_id = _ident(robot_id, "robot_id")
        compartment = _ident(compartment, "compartment")
        if not case.reserved:
            raise FailedPrecondition(
                f"case {case.id} keeps no robot compartment (it came by hand): return it by "
                f"hand (return_receive)"
            )
        if robot_id != case.robot_id:
            raise InvalidArgument(
                "robot_id",
                f"the return leg of case {case.id} uses its outbound robot {case.robot_id} "
                f"(compartment {case.compartment}), not {robot_id}",
            )
        if compartment != case.compartment:
            raise InvalidArgument(
                "compartment",
                f"the return leg of case {case.id} uses compartment {case.compartment} of "
                f"robot {case.robot_id}, not {compartment}",
            )
        seal_id = self._new_seal(seal_id)
        to = compartment_ref(robot_id, compartment)
        case.seal_id = seal_id
        case.seals.append(seal_id)
        case.leg = Leg.RETURN
        for account in case.lots.values():
            for is_empty, n in ((False, account.held), (True, account.empties_held)):
                if n:
                    w.emit(
                        EventType.RETURN,
                        account.lot,
                        n,
                        frm=case.custodian,
                        to=to,
                        by=step,
                        empties=is_empty,
                        robot=True,
                    )
        case.custodian, case.accountable = to, step.actor.id
        w.move(CaseState.RETURN_IN_TRANSIT)
        return self._commit(w)

    def return_receive(
        self,
        case_id: str,
        pharmacist_auth: Authentication,
        witness_auth: Authentication,
        blind_count_unused: Mapping[str, int],
        blind_count_empties: Mapping[str, int],
        *,
        now: float,
        seal_id_seen: str | None = None,
    ) -> StepResult:
        """The pharmacy takes the return in, a pharmacist and a witness, with blind counts by
        lot of the unused units and of the empty containers (-> RETURN_RECEIVED). Unused units
        go back into the vault's stock (RETURN_RECEIVE per lot, units and empties apart).

        Then CLOSED when every count matched and no discrepancy of the case is open, else
        DISCREPANCY_OPEN until they are resolved. Also puts a pick back (PICKED, VERIFIED),
        takes back an undelivered or recovered delivery, and a return carried by hand; when a
        person holds the drugs, that person takes part (as the pharmacist or the witness).
        """
        w = self._work(case_id, "return_receive", now)
        case = w.case
        step = self._auth(Action.RETURN_RECEIVE, pharmacist_auth, witness_auth, now=w.now)
        if case.custodian.startswith("person:") and case.holder not in (
            step.actor.id,
            step.witness_id,
        ):
            raise PermissionDenied(
                f"case {case.id} is held by {case.holder}: they hand it back, as the pharmacist "
                f"taking it in or as the witness"
            )
        unused = check_counts(blind_count_unused, "blind_count_unused")
        empties = self._empties(case, blind_count_empties, "blind_count_empties")
        robot = case.custodian.startswith("compartment:")
        extra: tuple[str, ...] = ()
        if seal_id_seen is not None:
            seen = _text(seal_id_seen, "seal_id_seen")
            if not robot:
                raise InvalidArgument("seal_id_seen", f"case {case.id} comes back by hand")
            if seen != case.seal_id:
                extra = (f"seal {seen} seen, {case.seal_id} sealed",)
        frm = case.custodian
        for is_empty, counted in ((False, unused), (True, empties)):
            if is_empty and not case.returns_empty_container:
                continue
            expected = {a.lot: (a.empties_held if is_empty else a.held) for a in case.lots.values()}
            lines = compare_counts(
                expected,
                counted,
                what=empty_unit(case.unit) if is_empty else case.unit,
                extra_problems=extra,
            )
            self._transfer(
                w,
                lines,
                EventType.RETURN_RECEIVE,
                frm,
                VAULT,
                step,
                robot=robot,
                empties=is_empty,
                location=self.settings.pharmacy_location,
            )
            for line in lines:
                if not line.issued:
                    continue
                account = case.lots[line.lot]
                if is_empty:
                    account.empties_returned += line.moved
                    account.empties_held = 0
                else:
                    account.returned_unused += line.moved
                    account.held = 0
                    if line.moved:
                        self._stock_return(w, line.lot, line.moved)
            self._open_for(w, lines, frm, step, empties=is_empty)
        case.custodian, case.accountable = VAULT, step.actor.id
        case.reserved, case.grant = False, None
        w.move(CaseState.RETURN_RECEIVED)
        if case.open_discrepancies():
            case.resume_state = CaseState.CLOSED
            w.move(CaseState.DISCREPANCY_OPEN)
        else:
            self._close(w)
        return self._commit(w)

    # ---- faults -------------------------------------------------------------------------------

    def robot_fault(
        self, case_id: str, *, now: float, detail: str, location: str = ""
    ) -> StepResult:
        """The robot carrying the case cannot go on by itself (-> DELIVERY_FAULT). Custody does
        not change: the sealed compartment and its accountable person keep it. `location` is
        where the robot stands (recorded on the recovery's events)."""
        w = self._work(case_id, "robot_fault", now)
        case = w.case
        case.fault_detail = _text(detail, "detail")
        if not isinstance(location, str):
            raise InvalidArgument("location", f"must be text, got {location!r}")
        case.fault_location = location.strip()
        case.fault_state = case.state
        if case.state in (CaseState.RETURNING_TO_PHARMACY, CaseState.RETURN_IN_TRANSIT):
            case.leg = Leg.RETURN
        case.grant = None
        w.move(CaseState.DELIVERY_FAULT)
        return self._commit(w)

    def start_recovery(self, case_id: str, *, now: float) -> StepResult:
        """People are on their way to the faulted robot (DELIVERY_FAULT -> RECOVERY_PENDING)."""
        w = self._work(case_id, "start_recovery", now)
        w.move(CaseState.RECOVERY_PENDING)
        return self._commit(w)

    def recover(
        self,
        case_id: str,
        pharmacist_auth: Authentication,
        second_auth: Authentication,
        *,
        seal_intact: bool,
        seal_id_seen: str,
        blind_count: Mapping[str, int],
        now: float,
        blind_count_empties: Mapping[str, int] | None = None,
    ) -> StepResult:
        """Two people (a pharmacist leading, a second pharmacist or logistics person) force the
        faulted robot's compartment open, check the seal and blind count the contents by lot
        (OVERRIDE per lot: compartment -> the pharmacist). An intact seal with the id loaded
        and matching counts -> RECOVERED (then `load` again, `hand_carry` or `return_receive`);
        otherwise -> DISCREPANCY_OPEN until resolved, then RECOVERED."""
        w = self._work(case_id, "recover", now)
        case = w.case
        step = self._auth(Action.RECOVER, pharmacist_auth, second_auth, now=w.now)
        if not isinstance(seal_intact, bool):
            raise InvalidArgument("seal_intact", f"must be true or false, got {seal_intact!r}")
        seen = _text(seal_id_seen, "seal_id_seen")
        counts = check_counts(blind_count, "blind_count")
        empties = self._empties(case, blind_count_empties or {}, "blind_count_empties")
        problems: list[str] = []
        if not seal_intact:
            problems.append("seal broken")
        if seen != case.seal_id:
            problems.append(f"seal {seen} seen, {case.seal_id} sealed")
        frm, to = case.custodian, person_ref(step.actor.id)
        where = case.fault_location or case.or_station
        note = (
            f"forced opening after robot fault: {case.fault_detail}; seal "
            f"{'intact' if seal_intact else 'broken'}, {seen} seen"
        )
        for is_empty, counted in ((False, counts), (True, empties)):
            if is_empty and not case.returns_empty_container:
                continue
            expected = {a.lot: (a.empties_held if is_empty else a.held) for a in case.lots.values()}
            lines = compare_counts(
                expected,
                counted,
                what=empty_unit(case.unit) if is_empty else case.unit,
                extra_problems=tuple(problems),
            )
            self._transfer(
                w,
                lines,
                EventType.OVERRIDE,
                frm,
                to,
                step,
                robot=True,
                empties=is_empty,
                location=where,
                note=note,
            )
            for line in lines:
                if line.issued:
                    account = case.lots[line.lot]
                    if is_empty:
                        account.empties_held = line.moved
                    else:
                        account.held = line.moved
            self._open_for(w, lines, frm, step, empties=is_empty, location=where)
        case.custodian, case.accountable = to, step.actor.id
        case.reserved = False
        if w.opened:
            case.resume_state = CaseState.RECOVERED
            w.move(CaseState.DISCREPANCY_OPEN)
        else:
            w.move(CaseState.RECOVERED)
        return self._commit(w)

    def hand_carry(self, case_id: str, carrier_auth: Authentication, *, now: float) -> StepResult:
        """The pharmacist holding recovered drugs carries them to the OR by hand
        (RECOVERED -> HAND_CARRIED, outbound leg only); the recipient then takes them from the
        carrier with `receive`. No custody change."""
        w = self._work(case_id, "hand_carry", now)
        case = w.case
        if case.leg is Leg.RETURN:
            raise FailedPrecondition(
                f"case {case.id} is RECOVERED on the return leg: cannot hand carry it to the "
                f"OR; return it to the pharmacy (return_receive)"
            )
        self._auth(Action.LOAD, carrier_auth, now=w.now, actor_in={case.holder})
        w.move(CaseState.HAND_CARRIED)
        return self._commit(w)

    # ---- discrepancies ------------------------------------------------------------------------

    def resolve(
        self,
        discrepancy_id: str,
        resolver_auth: Authentication,
        witness_auth: Authentication,
        reason_code: str,
        note: str,
        *,
        now: float,
    ) -> StepResult:
        """Propose how a discrepancy ends: a reason code (`ResolutionCode`, see
        `fleet.custody.discrepancy` for what each does with missing units) and a note, by a
        resolver with a witness (OPEN -> PROPOSED). A pharmacist approves it
        (`approve_resolution`). No ledger event until then."""
        w = self._discrepancy_work(discrepancy_id, "resolve", now)
        d = w.case.discrepancies[discrepancy_id]
        if d.state is not DiscrepancyState.OPEN:
            raise FailedPrecondition(
                f"discrepancy {d.id} of case {d.case_id} is {d.state.value}: cannot resolve"
            )
        step = self._auth(Action.RESOLVE_DISCREPANCY, resolver_auth, witness_auth, now=w.now)
        code = parse_code(reason_code)
        if code not in allowed_codes(d):
            allowed = ", ".join(sorted(c.value for c in allowed_codes(d)))
            raise InvalidArgument(
                "reason_code", f"{code.value} cannot close {d.describe()} (allowed: {allowed})"
            )
        if not isinstance(note, str):
            raise InvalidArgument("note", f"must be text, got {note!r}")
        if code in NOTE_REQUIRED and not note.strip():
            raise InvalidArgument("note", f"{code.value} needs a note saying what happened")
        d.resolution = Resolution(
            code=code,
            note=note.strip(),
            resolver=step.actor.id,
            resolver_auth=tuple(str(f) for f in step.actor_auth),
            witness=step.witness_id,
            witness_auth=tuple(str(f) for f in step.witness_auth),
            proposed_at=w.now,
        )
        d.state = DiscrepancyState.PROPOSED
        return self._commit(w)

    def approve_resolution(
        self, discrepancy_id: str, pharmacist_auth: Authentication, *, now: float
    ) -> StepResult:
        """A pharmacist who is neither the resolver nor their witness approves the proposed
        resolution (PROPOSED -> RESOLVED): missing units go where the code says
        (DISCREPANCY_RESOLVE: discrepancy:<id> -> the custodian, waste or loss). Units found
        while the drugs are sealed in a compartment wait until it is opened. When it was the
        last open discrepancy of a case in DISCREPANCY_OPEN, the case moves on (CLOSED, or
        RECOVERED after a recovery)."""
        w = self._discrepancy_work(discrepancy_id, "approve_resolution", now)
        case = w.case
        d = case.discrepancies[discrepancy_id]
        if d.state is not DiscrepancyState.PROPOSED or d.resolution is None:
            raise FailedPrecondition(
                f"discrepancy {d.id} of case {d.case_id} is {d.state.value}: nothing proposed "
                f"to approve"
            )
        r = d.resolution
        step = self._auth(
            Action.APPROVE_RESOLUTION, pharmacist_auth, now=w.now, exclude={r.resolver, r.witness}
        )
        ref = discrepancy_ref(d.id)
        quantity, dest = d.surplus, ref
        if d.missing:
            quantity = d.missing
            account = case.lots[d.lot]
            if r.code in BACK_TO_CUSTODY:
                dest = case.custodian
                if dest.startswith("compartment:"):
                    raise FailedPrecondition(
                        f"case {case.id} is sealed in {dest}: approve {d.id} once the "
                        f"compartment is opened"
                    )
                if dest == VAULT:
                    if d.empties:
                        account.empties_returned += quantity
                    else:
                        account.returned_unused += quantity
                        self._stock_return(w, d.lot, quantity)
                elif d.empties:
                    account.empties_held += quantity
                else:
                    account.held += quantity
            else:
                dest = WRITE_OFF[r.code]
                if d.empties:
                    account.empties_written_off += quantity
                elif r.code is ResolutionCode.BROKEN:
                    account.broken += quantity
                else:
                    account.lost += quantity
        factors = "+".join(str(f) for f in step.actor_auth)
        draft = w.emit(
            EventType.DISCREPANCY_RESOLVE,
            d.lot,
            quantity,
            frm=ref,
            to=dest,
            empties=d.empties,
            blind=d.counted,
            expected=d.expected,
            reason=r.code.value,
            note="; ".join(
                t
                for t in (
                    f"discrepancy {d.id}",
                    f"approved by {step.actor.id} ({factors})",
                    r.note,
                )
                if t
            ),
            actor=r.resolver,
            actor_auth=r.resolver_auth,
            witness=r.witness,
            witness_auth=r.witness_auth,
        )
        d.state = DiscrepancyState.RESOLVED
        d.approved_by, d.approved_auth = step.actor.id, tuple(str(f) for f in step.actor_auth)
        d.approved_at, d.destination, d.resolve_event_id = w.now, dest, draft.event_id
        if case.state is CaseState.DISCREPANCY_OPEN and not case.open_discrepancies():
            resume = case.resume_state or CaseState.CLOSED
            case.resume_state = None
            if resume is CaseState.CLOSED:
                self._close(w)
            else:
                w.move(resume)
        return self._commit(w)

    def reject_resolution(
        self, discrepancy_id: str, pharmacist_auth: Authentication, reason: str, *, now: float
    ) -> StepResult:
        """A pharmacist (not the resolver or witness) turns a proposal down with a reason
        (PROPOSED -> OPEN); the proposal is kept in `rejected`."""
        w = self._discrepancy_work(discrepancy_id, "reject_resolution", now)
        d = w.case.discrepancies[discrepancy_id]
        if d.state is not DiscrepancyState.PROPOSED or d.resolution is None:
            raise FailedPrecondition(
                f"discrepancy {d.id} of case {d.case_id} is {d.state.value}: nothing proposed "
                f"to reject"
            )
        r = d.resolution
        step = self._auth(
            Action.APPROVE_RESOLUTION, pharmacist_auth, now=w.now, exclude={r.resolver, r.witness}
        )
        d.rejected.append((r, step.actor.id, _text(reason, "reason")))
        d.resolution = None
        d.state = DiscrepancyState.OPEN
        return self._commit(w)

    # ---- internals ----------------------------------------------------------------------------

    def _get(self, case_id: str) -> CustodyCase:
        case = self._cases.get(case_id) if isinstance(case_id, str) else None
        if case is None:
            raise NotFound(f"no custody case {case_id!r}")
        return case

    def _case_of(self, discrepancy_id: str) -> str:
        case_id = (
            self._discrepancy_case.get(discrepancy_id) if isinstance(discrepancy_id, str) else None
        )
        if case_id is None:
            raise NotFound(f"no discrepancy {discrepancy_id!r}")
        return case_id

    def _work(self, case_id: str, step: str, now: float) -> _Work:
        """Start `step` on a copy of the case; FailedPrecondition in a state it cannot run in."""
        now = _check_now(now)
        case = self._get(case_id)
        allowed = STEP_STATES[step]
        if case.state not in allowed:
            raise FailedPrecondition(
                f"case {case.id} is {case.state.value}: cannot {step.replace('_', ' ')} "
                f"(only when {_states(allowed)})"
            )
        return _Work(self, case, step, now)

    def _discrepancy_work(self, discrepancy_id: str, step: str, now: float) -> _Work:
        now = _check_now(now)
        return _Work(self, self._get(self._case_of(discrepancy_id)), step, now)

    def _auth(
        self,
        action: Action,
        actor_auth: Authentication,
        witness_auth: Authentication | None = None,
        *,
        now: float,
        exclude: Collection[str] = (),
        actor_in: Collection[str] | None = None,
    ) -> AuthorizedStep:
        """The step's people, checked (StepAuth), each with both factors: a controlled-drug
        custody step takes badge and PIN (hospital-domain.md 1.1, 1.4)."""
        for name, auth in (("actor_auth", actor_auth), ("witness_auth", witness_auth)):
            if auth is not None and not isinstance(auth, Authentication):
                raise InvalidArgument(name, f"must be an Authentication, got {auth!r}")
        step = self.step_auth.check(
            action, actor_auth, witness_auth, now=now, exclude=exclude, actor_in=actor_in
        )
        for auth in (actor_auth, witness_auth):
            if auth is not None and len(set(auth.factors)) < 2:
                raise AuthenticationFailed(
                    auth.staff_id, "a controlled-drug custody step needs two factors"
                )
        return step

    def _receiver(self, staff_id: object, field_name: str) -> str:
        """A staff id that may receive controlled drugs (InvalidArgument otherwise)."""
        if not isinstance(staff_id, str) or staff_id not in self.directory:
            raise InvalidArgument(field_name, f"no staff member {staff_id!r}")
        member = self.directory.get(staff_id)
        if Action.RECEIVE not in allowed_actions(member, self.step_auth.table):
            raise InvalidArgument(
                field_name, f"{member.describe()} may not receive controlled drugs"
            )
        return staff_id

    def _scanned(self, scanned: object) -> dict[str, int]:
        if isinstance(scanned, str | bytes) or not isinstance(scanned, Sequence) or not scanned:
            raise InvalidArgument("scanned", "must be a non-empty list of (lot, units)")
        lots: dict[str, int] = {}
        for item in scanned:
            if not isinstance(item, tuple | list) or len(item) != 2:
                raise InvalidArgument("scanned", f"{item!r} is not a (lot, units) pair")
            lot = _text(item[0], "scanned")
            lots[lot] = lots.get(lot, 0) + _units(item[1], "scanned")
        return lots

    def _empties(self, case: CustodyCase, value: object, field_name: str) -> dict[str, int]:
        counts = check_counts(value, field_name)
        if not case.returns_empty_container and any(counts.values()):
            raise InvalidArgument(
                field_name, f"{case.drug_code} ({case.unit}) leaves no container to return"
            )
        return counts

    def _account(self, case: CustodyCase, lot: object) -> LotAccount:
        account = case.lots.get(lot) if isinstance(lot, str) else None
        if account is None:
            issued = ", ".join(case.lots) or "none"
            raise InvalidArgument(
                "lot", f"lot {lot!r} was not issued to case {case.id} (issued: {issued})"
            )
        return account

    def _today(self, now: float) -> date:
        return datetime.fromtimestamp(now, self.settings.tz).date()

    def _lot_expiry(self, case: CustodyCase, lot: str) -> date | None:
        try:
            return self.stock.lot(case.drug_code, lot).expiry
        except NotFound:
            return None

    def _check_due(self, case: CustodyCase, due: float, now: float, waiting_for: str) -> None:
        if now < due:
            raise FailedPrecondition(
                f"case {case.id} is {case.state.value}: cannot give up on {waiting_for} "
                f"before {_iso(due)} ({due - now:.0f} s left)"
            )

    def _new_seal(self, seal_id: object) -> str:
        seal_id = _ident(seal_id, "seal_id")
        for other in self._cases.values():
            if seal_id in other.seals:
                raise InvalidArgument(
                    "seal_id", f"seal {seal_id} was used before (case {other.id}): use a new one"
                )
        return seal_id

    def _check_compartment_free(self, case_id: str, robot_id: str, compartment: str) -> None:
        for other in self._cases.values():
            if (
                other.id != case_id
                and other.reserved
                and other.robot_id == robot_id
                and other.compartment == compartment
            ):
                raise FailedPrecondition(
                    f"compartment {compartment} of robot {robot_id} is kept for case "
                    f"{other.id} ({other.state.value}) until its return is received"
                )

    def _stock_return(self, w: _Work, lot: str, quantity: int) -> None:
        # Checked now so that the stock cannot refuse once the events are on the ledger (a
        # step returns to each lot at most once, so no earlier op of the step counts here).
        outstanding = self.stock.lot(w.case.drug_code, lot).outstanding
        if quantity > outstanding:
            raise FailedPrecondition(
                f"lot {lot} of {w.case.drug_code}: cannot return {quantity}, only "
                f"{outstanding} picked and not returned"
            )
        w.stock_ops.append(
            functools.partial(self.stock.return_units, w.case.drug_code, lot, quantity)
        )

    def _giver_and_taker(
        self, w: _Work, giver_auth: Authentication, taker_auth: Authentication, action: Action
    ) -> AuthorizedStep:
        """The two people of a hand-over: the taker may do `action` where the drugs are (the
        actor), the giver is the person holding them (recorded as the witness). Both present
        two factors; nobody hands over to themselves."""
        step = self._auth(action, taker_auth, now=w.now)
        giver = self._auth_person(giver_auth, "giver_auth", w.now)
        if giver.id == step.actor.id:
            raise PermissionDenied(f"{giver.describe()} may not hand over to themselves")
        if giver.id != w.case.holder:
            raise PermissionDenied(
                f"case {w.case.id} is held by {w.case.holder}: only they can hand it over, not "
                f"{giver.id}"
            )
        return dataclasses.replace(step, witness=giver, witness_auth=giver_auth.factors)

    def _auth_person(self, auth: Authentication, field_name: str, now: float) -> StaffMember:
        """The person behind a fresh two-factor authentication from the directory."""
        if not isinstance(auth, Authentication):
            raise InvalidArgument(field_name, f"must be an Authentication, got {auth!r}")
        member = self.directory.check_authentication(auth, now, max_age_s=self.step_auth.max_age_s)
        if len(set(auth.factors)) < 2:
            raise AuthenticationFailed(
                auth.staff_id, "a controlled-drug custody step needs two factors"
            )
        return member

    def _hand_over(self, w: _Work, step: AuthorizedStep) -> None:
        """Custody from the holder (`step.witness`, who gives) to `step.actor`, who takes."""
        case = w.case
        to = person_ref(step.actor.id)
        for account in case.lots.values():
            for is_empty, n in ((False, account.held), (True, account.empties_held)):
                if n:
                    w.emit(
                        EventType.HANDOVER,
                        account.lot,
                        n,
                        frm=case.custodian,
                        to=to,
                        by=step,
                        empties=is_empty,
                        location=self._location(case),
                    )
        case.custodian, case.accountable = to, step.actor.id

    def _location(self, case: CustodyCase) -> str:
        pharmacy_side = case.state in (
            CaseState.PICKED,
            CaseState.VERIFIED,
            CaseState.RECOVERED,
            CaseState.HAND_CARRIED,
        )
        if pharmacy_side:
            return case.fault_location or self.settings.pharmacy_location
        return case.or_station

    def _transfer(
        self,
        w: _Work,
        lines: list[LotCount],
        event_type: EventType,
        frm: str,
        to: str,
        step: AuthorizedStep,
        *,
        robot: bool,
        empties: bool = False,
        location: str = "",
        note: str = "",
    ) -> None:
        """One event per issued lot of a count: `moved` units from `frm` to `to`, with the
        blind and the expected count."""
        for line in lines:
            if line.issued and (line.expected or line.counted):
                w.emit(
                    event_type,
                    line.lot,
                    line.moved,
                    frm=frm,
                    to=to,
                    by=step,
                    empties=empties,
                    robot=robot,
                    blind=line.counted,
                    expected=line.expected,
                    location=location,
                    note=note,
                )

    def _open_for(
        self,
        w: _Work,
        lines: list[LotCount],
        custodian: str,
        step: AuthorizedStep,
        *,
        empties: bool,
        location: str = "",
    ) -> None:
        """A discrepancy for every line of a count with a problem: missing units leave
        `custodian` into it (DISCREPANCY_OPEN)."""
        case = w.case
        for line in lines:
            if not line.problems:
                continue
            did = f"{case.id}-D{len(case.discrepancies) + 1}"
            d = Discrepancy(
                id=did,
                case_id=case.id,
                step=w.step,
                drug_code=case.drug_code,
                lot=line.lot,
                expiry=case.lots[line.lot].expiry
                if line.lot in case.lots
                else self._lot_expiry(case, line.lot),
                unit=empty_unit(case.unit) if empties else case.unit,
                empties=empties,
                expected=line.expected,
                counted=line.counted,
                problems=line.problems,
                custodian=custodian,
                opened_at=w.now,
                open_event_id="",
            )
            ref = discrepancy_ref(did)
            if d.missing:
                frm, to, quantity = custodian, ref, d.missing
            else:
                frm, to, quantity = ref, ref, d.surplus
            draft = w.emit(
                EventType.DISCREPANCY_OPEN,
                line.lot,
                quantity,
                frm=frm,
                to=to,
                by=step,
                empties=empties,
                blind=line.counted,
                expected=line.expected,
                reason="; ".join(line.problems),
                note=f"discrepancy {did}",
                location=location,
                robot=custodian.startswith("compartment:"),
            )
            d.open_event_id = draft.event_id
            case.discrepancies[did] = d
            w.opened.append(d)

    def _close(self, w: _Work) -> None:
        case = w.case
        for a in case.lots.values():
            if a.balance or a.held or a.empties_balance or a.empties_held:
                raise AssertionError(  # the steps keep the counts; this would be a bug
                    f"case {case.id} lot {a.lot} does not balance: {a}"
                )
        case.closed_at = w.now
        w.move(CaseState.CLOSED)

    def _commit(self, w: _Work) -> StepResult:
        """Apply a prepared step: events to the ledger, then the stock, then the case."""
        for draft in w.drafts:
            # Refuse a malformed event before any of the step's events is appended.
            seal(draft, seq=1, prev_hash=GENESIS_HASH, recorded_at=w.now)
        events = self._append(w.drafts)
        case = w.case
        last = events[-1].seq if events else None
        case.event_seqs.extend(e.seq for e in events)
        for state in w.moves or [case.state]:
            case.history.append(HistoryEntry(w.now, state, w.step, last))
        for op in w.stock_ops:
            op()
        self._cases[case.id] = case
        for d in w.opened:
            self._discrepancy_case[d.id] = case.id
        return StepResult(case.copy(), tuple(events), tuple(d.copy() for d in w.opened))

    def _append(self, drafts: list[EventDraft]) -> list[CustodyEvent]:
        if not drafts:
            return []
        many: Any = getattr(self.ledger, "append_many", None)
        if callable(many):
            return list(many(drafts))
        return [self.ledger.append(d) for d in drafts]


def _note(note: object) -> str:
    if not isinstance(note, str):
        raise InvalidArgument("note", f"must be text, got {note!r}")
    return note.strip()


__all__ = [
    "LOSS",
    "ROBOT_STATES",
    "STEP_STATES",
    "TERMINAL_STATES",
    "TRANSITIONS",
    "VAULT",
    "WASTE",
    "CaseState",
    "ClockedSink",
    "CustodyBook",
    "CustodyCase",
    "HistoryEntry",
    "LedgerSink",
    "Leg",
    "LifecycleSettings",
    "LotAccount",
    "OpenGrant",
    "StepResult",
    "compartment_ref",
    "patient_sink",
    "person_ref",
]

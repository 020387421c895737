"""The custody ledger: an append-only, hash-chained list of custody events, signed checkpoints,
and `verify`, which walks the chain and names the first bad record.

Pure: no database, gRPC, web or wall-clock access. Time comes from an injected `Clock`
(`fleet.clock`); storage lives in `fleet.store.ledger`.

Chain
-----
Records are numbered from 1 (`seq`); record 1's `prev_hash` is `GENESIS_HASH` (64 zeros), every
later record's `prev_hash` is the `hash` of the record before it, and

    hash = SHA-256(canonical_bytes(record)), as 64 lowercase hex digits.

`canonical_bytes` covers every field of the record except `hash` itself, `seq` and `prev_hash`
included, so changing any field, moving a record to another position or unlinking it from its
predecessor changes the hash.

Canonical encoding (format version 1)
-------------------------------------
One JSON object, UTF-8, keys sorted, no insignificant white space
(`json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`), holding every
field in `EVENT_FIELDS` plus `"v": 1`. Values are only strings, integers, `null` and arrays of
strings, never floating point numbers, so the bytes are the same in every language:

- `quantity`: a decimal string in plain notation without exponent or trailing zeros
  (`"10"`, `"2.5"`, `"0.125"`; at most 6 decimal places, never negative);
- times (`occurred_at`, `recorded_at`): RFC 3339 UTC with exactly six fractional digits,
  `"2025-03-01T08:30:00.000000Z"` (records hold them as integer microseconds since the epoch);
- `expiry`: `"YYYY-MM-DD"` or `null`;
- counts (`blind_count`, `expected_count`) and `corrects`: integers or `null`;
- `actor_auth`, `witness_auth`: arrays of factor names, sorted and without duplicates;
- absent text fields are `""`, never `null`.

With these value types the encoding equals RFC 8785 (JCS): the keys are ASCII and JSON string
escaping is the same (`\\"`, `\\\\`, `\\b \\f \\n \\r \\t`, other controls as `\\u00xx`).

Checkpoints
-----------
A checkpoint states "the ledger had `seq` records and record `seq` had hash `head_hash`" at
`signed_at`, signed with Ed25519 over `checkpoint_message(...)`, the canonical JSON of
`{"kind": "fleet.custody.checkpoint/v1", "seq", "head_hash", "time", "key_id"}`. A checkpoint is
what catches tampering that rewrites the chain consistently (recomputing every later hash) or
cuts records off its end; copy checkpoints somewhere the database's administrators cannot write
(a WORM bucket, another team's service) to make that evidence independent of the database.

Corrections
-----------
Nothing is ever edited. A mistake is corrected by a new `CORRECTION` event whose `corrects` is
the `seq` of an earlier event, with a `reason`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fleet.clock import Clock

FORMAT_VERSION = 1
GENESIS_HASH = "0" * 64
CHECKPOINT_KIND = "fleet.custody.checkpoint/v1"
MAX_QUANTITY = Decimal(10) ** 12
QUANTITY_PLACES = 6

_HEX64 = re.compile(r"[0-9a-f]{64}")
_EVENT_TYPES: frozenset[str] = frozenset()  # filled below, after EventType
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class EventType(StrEnum):
    """What happened to a custody unit (one drug lot quantity). The lifecycle rules of which
    event may follow which live elsewhere; the ledger only requires a known type."""

    RECEIPT = "RECEIPT"  # goods receipt into the pharmacy vault (入库验收), two people
    ISSUE = "ISSUE"  # issued from stock by the dispenser (发药人)
    VERIFY = "VERIFY"  # second check of an issue (复核人)
    LOAD = "LOAD"  # put into a robot compartment, locked and sealed
    UNLOAD = "UNLOAD"  # taken out of a robot compartment
    HANDOVER = "HANDOVER"  # custody passes from one custodian to another
    RECEIVE = "RECEIVE"  # recipient accepts a delivery (blind count)
    ADMINISTER = "ADMINISTER"  # given to a patient
    WASTE = "WASTE"  # residual discarded, witnessed
    RETURN = "RETURN"  # unused stock sent back to the pharmacy
    RETURN_RECEIVE = "RETURN_RECEIVE"  # pharmacy accepts a return (blind count, lot check)
    DESTROY = "DESTROY"  # destruction of stock or empty ampoules, witnessed
    COUNT = "COUNT"  # stock count (blind count vs expected)
    DISCREPANCY_OPEN = "DISCREPANCY_OPEN"
    DISCREPANCY_RESOLVE = "DISCREPANCY_RESOLVE"
    OVERRIDE = "OVERRIDE"  # forced compartment opening or manual recovery, two people
    CORRECTION = "CORRECTION"  # corrects the event named by `corrects`
    KEY_ROTATION = "KEY_ROTATION"  # the checkpoint signing key changed (`note`: new key id)


_EVENT_TYPES = frozenset(t.value for t in EventType)


class AuthFactor(StrEnum):
    """How a person proved who they are at a custody step."""

    BADGE = "badge"
    PIN = "pin"
    PASSWORD = "password"
    FINGERPRINT = "fingerprint"
    FACE = "face"
    OTP = "otp"


# Every field of a CustodyEvent except `hash`, in declaration order: what the hash covers.
EVENT_FIELDS: tuple[str, ...] = (
    "seq",
    "prev_hash",
    "event_id",
    "event_type",
    "drug_code",
    "lot",
    "expiry",
    "quantity",
    "unit",
    "from_custodian",
    "to_custodian",
    "location",
    "actor",
    "actor_auth",
    "witness",
    "witness_auth",
    "prescription",
    "order_id",
    "robot_id",
    "compartment",
    "seal_id",
    "blind_count",
    "expected_count",
    "corrects",
    "reason",
    "note",
    "occurred_at_us",
    "recorded_at_us",
)


@dataclass(frozen=True, slots=True)
class EventDraft:
    """What a caller records; `Ledger.append` (or the store) adds seq, prev hash, time, hash.

    Custodians are stable ids, by convention `person:<staff id>` or
    `compartment:<robot id>/<n>` (a sealed robot compartment; its accountable person is the
    `actor` who loaded it). `occurred_at` is the time the hand-over actually happened (seconds
    since the epoch, e.g. a device's time); None means the recording time.
    """

    event_type: EventType | str
    drug_code: str
    lot: str
    quantity: Decimal | int | str
    unit: str = "unit"
    expiry: date | None = None
    from_custodian: str = ""
    to_custodian: str = ""
    location: str = ""
    actor: str = ""
    actor_auth: Sequence[AuthFactor | str] = ()
    witness: str = ""
    witness_auth: Sequence[AuthFactor | str] = ()
    prescription: str = ""
    order_id: str = ""
    robot_id: str = ""
    compartment: str = ""
    seal_id: str = ""
    blind_count: int | None = None
    expected_count: int | None = None
    corrects: int | None = None
    reason: str = ""
    note: str = ""
    occurred_at: float | None = None
    event_id: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass(frozen=True, slots=True)
class CustodyEvent:
    """One record of the ledger, as stored. See the module docstring for the hash.

    Times are integer microseconds since the Unix epoch (exact in every database);
    `occurred_at` / `recorded_at` give them as float seconds.
    """

    seq: int
    prev_hash: str
    event_id: str
    event_type: str
    drug_code: str
    lot: str
    expiry: date | None
    quantity: Decimal
    unit: str
    from_custodian: str
    to_custodian: str
    location: str
    actor: str
    actor_auth: tuple[str, ...]
    witness: str
    witness_auth: tuple[str, ...]
    prescription: str
    order_id: str
    robot_id: str
    compartment: str
    seal_id: str
    blind_count: int | None
    expected_count: int | None
    corrects: int | None
    reason: str
    note: str
    occurred_at_us: int
    recorded_at_us: int
    hash: str

    @property
    def occurred_at(self) -> float:
        return self.occurred_at_us / 1_000_000

    @property
    def recorded_at(self) -> float:
        return self.recorded_at_us / 1_000_000

    @property
    def count_mismatch(self) -> bool:
        """A blind count was entered and differs from the expected count."""
        return (
            self.blind_count is not None
            and self.expected_count is not None
            and self.blind_count != self.expected_count
        )


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed statement of the ledger's head: record `seq` has hash `head_hash`.

    `id` is the store's row id (0 for one not stored yet); it is not signed.
    """

    seq: int
    head_hash: str
    signed_at_us: int
    key_id: str
    signature: str  # 128 hex digits (64-byte Ed25519 signature)
    id: int = 0


# -- canonical encoding and hashing -------------------------------------------------------------


def format_time_us(us: int) -> str:
    """Integer microseconds since the epoch as RFC 3339 UTC with six fractional digits."""
    seconds, micros = divmod(us, 1_000_000)
    return f"{_second_text(seconds)}.{micros:06d}Z"


@functools.lru_cache(maxsize=4096)
def _second_text(seconds: int) -> str:
    d = _EPOCH + timedelta(seconds=seconds)
    return f"{d.year:04d}-{d.month:02d}-{d.day:02d}T{d.hour:02d}:{d.minute:02d}:{d.second:02d}"


def to_micros(seconds: float) -> int:
    """Float seconds since the epoch to integer microseconds (rounded to nearest)."""
    return round(seconds * 1_000_000)


def format_quantity(q: Decimal) -> str:
    """A quantity in its canonical plain decimal form (`"10"`, `"2.5"`)."""
    text = format(q.normalize(), "f")
    return "0" if text in ("-0", "0") else text


def canonical_fields(ev: CustodyEvent) -> dict[str, Any]:
    """The JSON object whose canonical bytes are hashed (format version 1)."""
    return {
        "v": FORMAT_VERSION,
        "seq": ev.seq,
        "prev_hash": ev.prev_hash,
        "event_id": ev.event_id,
        "event_type": ev.event_type,
        "drug_code": ev.drug_code,
        "lot": ev.lot,
        "expiry": ev.expiry.isoformat() if ev.expiry is not None else None,
        "quantity": format_quantity(ev.quantity),
        "unit": ev.unit,
        "from_custodian": ev.from_custodian,
        "to_custodian": ev.to_custodian,
        "location": ev.location,
        "actor": ev.actor,
        "actor_auth": sorted(set(ev.actor_auth)),
        "witness": ev.witness,
        "witness_auth": sorted(set(ev.witness_auth)),
        "prescription": ev.prescription,
        "order_id": ev.order_id,
        "robot_id": ev.robot_id,
        "compartment": ev.compartment,
        "seal_id": ev.seal_id,
        "blind_count": ev.blind_count,
        "expected_count": ev.expected_count,
        "corrects": ev.corrects,
        "reason": ev.reason,
        "note": ev.note,
        "occurred_at": format_time_us(ev.occurred_at_us),
        "recorded_at": format_time_us(ev.recorded_at_us),
    }


def canonical_json(obj: dict[str, Any]) -> bytes:
    """Sorted-key, compact, UTF-8 JSON (RFC 8785 for objects without floating point values)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def canonical_bytes(ev: CustodyEvent) -> bytes:
    """The bytes `hash` is computed over: every field but `hash` (see the module docstring).

    Equal to `canonical_json(canonical_fields(ev))`, written out by hand for speed (a unit test
    holds the two equal); TypeError for a field of the wrong type.
    """
    s = _json_str
    n = _json_int
    expiry = "null" if ev.expiry is None else s(ev.expiry.isoformat())
    text = (
        f'{{"actor":{s(ev.actor)},"actor_auth":{_json_factors(ev.actor_auth)},'
        f'"blind_count":{n(ev.blind_count)},"compartment":{s(ev.compartment)},'
        f'"corrects":{n(ev.corrects)},"drug_code":{s(ev.drug_code)},'
        f'"event_id":{s(ev.event_id)},"event_type":{s(ev.event_type)},'
        f'"expected_count":{n(ev.expected_count)},"expiry":{expiry},'
        f'"from_custodian":{s(ev.from_custodian)},"location":{s(ev.location)},'
        f'"lot":{s(ev.lot)},"note":{s(ev.note)},'
        f'"occurred_at":"{format_time_us(_int(ev.occurred_at_us))}",'
        f'"order_id":{s(ev.order_id)},"prescription":{s(ev.prescription)},'
        f'"prev_hash":{s(ev.prev_hash)},"quantity":{s(format_quantity(ev.quantity))},'
        f'"reason":{s(ev.reason)},"recorded_at":"{format_time_us(_int(ev.recorded_at_us))}",'
        f'"robot_id":{s(ev.robot_id)},"seal_id":{s(ev.seal_id)},"seq":{n(ev.seq)},'
        f'"to_custodian":{s(ev.to_custodian)},"unit":{s(ev.unit)},"v":{FORMAT_VERSION},'
        f'"witness":{s(ev.witness)},"witness_auth":{_json_factors(ev.witness_auth)}}}'
    )
    return text.encode()


_json_str: Callable[[str], str] = json.encoder.encode_basestring


def _int(value: int) -> int:
    if type(value) is not int:
        raise TypeError(f"expected an integer, got {value!r}")
    return value


def _json_int(value: int | None) -> str:
    return "null" if value is None else str(_int(value))


def _json_factors(values: Sequence[str]) -> str:
    return "[" + ",".join(_json_str(v) for v in sorted(set(values))) + "]"


def compute_hash(ev: CustodyEvent) -> str:
    """SHA-256 of `canonical_bytes(ev)` as 64 lowercase hex digits (ignores `ev.hash`)."""
    try:
        return hashlib.sha256(canonical_bytes(ev)).hexdigest()
    except (TypeError, ValueError, AttributeError, OverflowError, UnicodeError):
        return "<unencodable>"  # a field of the wrong type cannot match any stored hash


# -- building records ---------------------------------------------------------------------------


def _quantity(value: Decimal | int | str) -> Decimal:
    if isinstance(value, (float, bool)):
        raise ValueError(f"quantity must be a Decimal, int or decimal string, not {value!r}")
    try:
        q = Decimal(value)
    except (InvalidOperation, ValueError, TypeError) as exc:
        raise ValueError(f"quantity {value!r} is not a decimal number") from exc
    if not q.is_finite() or q < 0 or q >= MAX_QUANTITY:
        raise ValueError(f"quantity {value!r} must be finite, >= 0 and < {MAX_QUANTITY}")
    if q != q.quantize(Decimal(1).scaleb(-QUANTITY_PLACES)):
        raise ValueError(f"quantity {value!r} has more than {QUANTITY_PLACES} decimal places")
    return Decimal(format_quantity(q))


def _factors(values: Sequence[AuthFactor | str], name: str) -> tuple[str, ...]:
    if isinstance(values, str):
        raise ValueError(f"{name} must be a list of factors, not the string {values!r}")
    out = set()
    for v in values:
        try:
            out.add(AuthFactor(v).value)
        except ValueError as exc:
            known = ", ".join(f.value for f in AuthFactor)
            raise ValueError(f"{name}: unknown factor {v!r} (known: {known})") from exc
    return tuple(sorted(out))


def seal(draft: EventDraft, *, seq: int, prev_hash: str, recorded_at: float) -> CustodyEvent:
    """The record `draft` becomes at position `seq` after the record with hash `prev_hash`.

    Raises ValueError naming the field for an invalid draft: unknown event type or auth factor,
    bad quantity, negative count, a `corrects` that is not an earlier record, a CORRECTION
    without `corrects` or `reason`, a bad prev hash.
    """
    if seq < 1:
        raise ValueError(f"seq must be >= 1, got {seq}")
    if not _HEX64.fullmatch(prev_hash):
        raise ValueError(f"prev_hash must be 64 lowercase hex digits, got {prev_hash!r}")
    try:
        event_type = EventType(draft.event_type).value
    except ValueError as exc:
        raise ValueError(f"event_type: unknown type {draft.event_type!r}") from exc
    for name in ("blind_count", "expected_count"):
        count = getattr(draft, name)
        if count is not None and (isinstance(count, bool) or count < 0):
            raise ValueError(f"{name} must be a count >= 0, got {count!r}")
    if draft.corrects is not None and not 1 <= draft.corrects < seq:
        raise ValueError(
            f"corrects must name an earlier record (1..{seq - 1}), got {draft.corrects}"
        )
    if event_type == EventType.CORRECTION and (draft.corrects is None or not draft.reason):
        raise ValueError("a CORRECTION needs `corrects` (the record it corrects) and a `reason`")
    if not draft.event_id:
        raise ValueError("event_id must not be empty")
    recorded_us = to_micros(recorded_at)
    occurred_us = recorded_us if draft.occurred_at is None else to_micros(draft.occurred_at)
    ev = CustodyEvent(
        seq=seq,
        prev_hash=prev_hash,
        event_id=draft.event_id,
        event_type=event_type,
        drug_code=draft.drug_code,
        lot=draft.lot,
        expiry=draft.expiry,
        quantity=_quantity(draft.quantity),
        unit=draft.unit,
        from_custodian=draft.from_custodian,
        to_custodian=draft.to_custodian,
        location=draft.location,
        actor=draft.actor,
        actor_auth=_factors(draft.actor_auth, "actor_auth"),
        witness=draft.witness,
        witness_auth=_factors(draft.witness_auth, "witness_auth"),
        prescription=draft.prescription,
        order_id=draft.order_id,
        robot_id=draft.robot_id,
        compartment=draft.compartment,
        seal_id=draft.seal_id,
        blind_count=draft.blind_count,
        expected_count=draft.expected_count,
        corrects=draft.corrects,
        reason=draft.reason,
        note=draft.note,
        occurred_at_us=occurred_us,
        recorded_at_us=recorded_us,
        hash="",
    )
    digest = compute_hash(ev)
    if digest == "<unencodable>":
        raise ValueError("the event has a field that cannot be encoded (text must be str)")
    return dataclasses.replace(ev, hash=digest)


@dataclass(frozen=True, slots=True)
class ChainHead:
    """Where the next record goes: after record `seq` (0: empty ledger) with hash `hash`."""

    seq: int = 0
    hash: str = GENESIS_HASH


class Ledger:
    """An in-memory ledger: `append` numbers, links, times and hashes each event.

    The database-backed ledger (`fleet.store.ledger.LedgerStore`) does the same inside a
    transaction; this one serves tests, replays and benchmarks.
    """

    def __init__(self, clock: Clock, events: Iterable[CustodyEvent] = ()) -> None:
        self._clock = clock
        self._events: list[CustodyEvent] = list(events)

    @property
    def events(self) -> list[CustodyEvent]:
        """A copy of the records in order."""
        return list(self._events)

    @property
    def head(self) -> ChainHead:
        if not self._events:
            return ChainHead()
        last = self._events[-1]
        return ChainHead(last.seq, last.hash)

    def __len__(self) -> int:
        return len(self._events)

    def append(self, draft: EventDraft) -> CustodyEvent:
        """Add `draft` as the next record and return it (ValueError for an invalid draft)."""
        head = self.head
        ev = seal(draft, seq=head.seq + 1, prev_hash=head.hash, recorded_at=self._clock.now())
        self._events.append(ev)
        return ev

    def checkpoint(self, key: Ed25519PrivateKey) -> Checkpoint:
        """A checkpoint of the current head, signed with `key` at the clock's time."""
        head = self.head
        return sign_checkpoint(head.seq, head.hash, self._clock.now(), key)


# -- checkpoints --------------------------------------------------------------------------------


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short stable name of a public key: the first 16 hex digits of SHA-256(raw key)."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def checkpoint_message(seq: int, head_hash: str, signed_at_us: int, key: str) -> bytes:
    """The bytes a checkpoint's signature covers (canonical JSON)."""
    return canonical_json(
        {
            "kind": CHECKPOINT_KIND,
            "seq": seq,
            "head_hash": head_hash,
            "time": format_time_us(signed_at_us),
            "key_id": key,
        }
    )


def sign_checkpoint(
    seq: int, head_hash: str, signed_at: float, key: Ed25519PrivateKey
) -> Checkpoint:
    """A checkpoint saying record `seq` has hash `head_hash`, signed at `signed_at` (seconds)."""
    if seq < 0:
        raise ValueError(f"checkpoint seq must be >= 0, got {seq}")
    if not _HEX64.fullmatch(head_hash):
        raise ValueError(f"head_hash must be 64 lowercase hex digits, got {head_hash!r}")
    us = to_micros(signed_at)
    kid = key_id(key.public_key())
    signature = key.sign(checkpoint_message(seq, head_hash, us, kid)).hex()
    return Checkpoint(
        seq=seq, head_hash=head_hash, signed_at_us=us, key_id=kid, signature=signature
    )


def checkpoint_signature_problem(cp: Checkpoint, public_key: Ed25519PublicKey) -> str | None:
    """Why `cp`'s signature does not hold under `public_key`, or None when it does."""
    expected_kid = key_id(public_key)
    if cp.key_id != expected_kid:
        return f"signed by key {cp.key_id!r}, not by the given public key {expected_kid!r}"
    try:
        signature = bytes.fromhex(cp.signature)
        public_key.verify(
            signature, checkpoint_message(cp.seq, cp.head_hash, cp.signed_at_us, cp.key_id)
        )
    except (ValueError, InvalidSignature):
        return "signature does not match its seq, head hash and time (checkpoint edited or forged)"
    return None


# -- verification -------------------------------------------------------------------------------


class ProblemKind(StrEnum):
    """What `verify` found wrong; see `Problem`."""

    CONTENT_CHANGED = "CONTENT_CHANGED"  # a field differs from what was hashed
    SEQ_CHANGED = "SEQ_CHANGED"  # the seq field was edited
    MISSING = "MISSING"  # a record was deleted
    INSERTED = "INSERTED"  # a record that is not part of the chain was added
    DUPLICATE_SEQ = "DUPLICATE_SEQ"  # two records claim one seq (inserted or reordered)
    REORDERED = "REORDERED"  # records are in the wrong order / swapped
    LINK_BROKEN = "LINK_BROKEN"  # prev_hash is not the previous record's hash
    INVALID_FIELD = "INVALID_FIELD"  # hashes hold but a field is not valid
    CHECKPOINT_SIGNATURE = "CHECKPOINT_SIGNATURE"  # a checkpoint's signature does not hold
    CHECKPOINT_MISMATCH = "CHECKPOINT_MISMATCH"  # the record differs from a signed checkpoint
    TRUNCATED = "TRUNCATED"  # a checkpoint covers records that are gone


@dataclass(frozen=True, slots=True)
class Problem:
    """The first bad record: its `seq` (for a checkpoint problem, the checkpoint's seq or the
    first missing record), what is wrong, and the checkpoint concerned if any."""

    seq: int
    kind: ProblemKind
    detail: str
    checkpoint_id: int | None = None

    def __str__(self) -> str:
        return f"record {self.seq}: {self.kind.value}: {self.detail}"


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """What `verify` checked and the first problem, if any."""

    records: int  # records read before stopping (all of them when ok)
    head: ChainHead  # the last good record
    checkpoints: int  # checkpoints that held (signature checked when signatures_checked)
    signatures_checked: bool
    problem: Problem | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    def summary(self) -> str:
        """One line for people: OK with the head, or the first problem."""
        if self.problem is not None:
            return f"TAMPERED: {self.problem}"
        sig = "signatures checked" if self.signatures_checked else "signatures NOT checked"
        return (
            f"OK: {self.records} records, head seq {self.head.seq} hash {self.head.hash}, "
            f"{self.checkpoints} checkpoints matched ({sig})"
        )


def _with_seq(ev: CustodyEvent, seq: int) -> CustodyEvent:
    return dataclasses.replace(ev, seq=seq)


def _belongs_at(ev: CustodyEvent, seq: int, prev_hash: str) -> bool:
    """`ev` is the genuine record for position `seq` after a record with hash `prev_hash`."""
    return ev.prev_hash == prev_hash and compute_hash(_with_seq(ev, seq)) == ev.hash


def _field_problem(ev: CustodyEvent) -> str | None:
    """A field a genuine record could not have (the hash holds, so it was appended like this)."""
    if ev.event_type not in _EVENT_TYPES:
        return f"unknown event type {ev.event_type!r}"
    if ev.corrects is not None and not 1 <= ev.corrects < ev.seq:
        return f"corrects {ev.corrects}, which is not an earlier record"
    return None


def verify(
    events: Iterable[CustodyEvent],
    checkpoints: Iterable[Checkpoint] = (),
    public_key: Ed25519PublicKey | None = None,
) -> VerifyReport:
    """Walk `events` (in stored order, i.e. by seq) and the `checkpoints`; stop at the first
    bad record and say what is wrong with it.

    Per position n (1, 2, ...) a record must hash to its `hash`, carry seq n, and link to the
    record before (`prev_hash`). A checkpoint at seq n must be signed by `public_key` (when
    given) and name record n's hash; a checkpoint beyond the last record means records were cut
    off the end. On a failure the rest of `events` is read to tell a swap or a deletion apart;
    otherwise memory is constant, so `events` may be a stream of millions of rows.

    What each tampering looks like (the seq named is the record that is wrong or missing):

    - a field edited (quantity, lot, ...) without recomputing hashes: CONTENT_CHANGED at it;
    - a row deleted: MISSING at its seq (at the end of the ledger only a checkpoint shows it:
      TRUNCATED);
    - a forged row inserted (with or without renumbering the rows after it): INSERTED or
      DUPLICATE_SEQ at the forged row's seq, or CONTENT_CHANGED / LINK_BROKEN when its hash is
      simply wrong;
    - two rows swapped (by position or by exchanging their seq values): REORDERED at the first;
    - a chain recomputed from an edit onwards: CHECKPOINT_MISMATCH at the first checkpoint after
      the edit; a checkpoint edited: CHECKPOINT_SIGNATURE.

    A forged row appended after the last checkpoint with a correctly computed hash cannot be
    told from a genuine one by a hash chain; the database's grants and triggers guard that.
    """
    pending = sorted(checkpoints, key=lambda c: (c.seq, c.id))
    signatures = public_key is not None
    cp_index = 0
    matched = 0

    def report(records: int, head: ChainHead, problem: Problem | None) -> VerifyReport:
        return VerifyReport(records, head, matched, signatures, problem)

    def check_checkpoint(cp: Checkpoint, head: ChainHead) -> Problem | None:
        if public_key is not None:
            why = checkpoint_signature_problem(cp, public_key)
            if why is not None:
                return Problem(
                    cp.seq, ProblemKind.CHECKPOINT_SIGNATURE, f"checkpoint #{cp.id}: {why}", cp.id
                )
        if cp.head_hash != head.hash:
            return Problem(
                cp.seq,
                ProblemKind.CHECKPOINT_MISMATCH,
                f"hash differs from signed checkpoint #{cp.id} "
                f"(signed {format_time_us(cp.signed_at_us)}): the chain up to here was rewritten "
                f"after the checkpoint (every hash recomputed)",
                cp.id,
            )
        return None

    head = ChainHead()
    prev_prev = GENESIS_HASH
    # Checkpoints of the empty ledger (seq 0).
    while cp_index < len(pending) and pending[cp_index].seq <= 0:
        problem = check_checkpoint(pending[cp_index], head)
        if problem is not None:
            return report(0, head, problem)
        matched += 1
        cp_index += 1

    it: Iterator[CustodyEvent] = iter(events)
    count = 0
    for ev in it:
        count += 1
        e = head.seq + 1
        p = head.hash
        problem = _check_record(ev, e, p, prev_prev, it)
        if problem is not None:
            return report(count, head, problem)
        prev_prev = head.hash
        head = ChainHead(e, ev.hash)
        while cp_index < len(pending) and pending[cp_index].seq <= e:
            cp = pending[cp_index]
            problem = check_checkpoint(cp, head)
            if problem is not None:
                if problem.kind is ProblemKind.CHECKPOINT_MISMATCH:
                    nxt = next(it, None)
                    if nxt is not None and nxt.hash == cp.head_hash:
                        problem = Problem(
                            e,
                            ProblemKind.INSERTED,
                            f"inserted: a forged record with seq {e} stands before the genuine "
                            f"record {e}, which signed checkpoint #{cp.id} names",
                            cp.id,
                        )
                return report(count, head, problem)
            matched += 1
            cp_index += 1

    if cp_index < len(pending):
        cp = pending[cp_index]
        if public_key is not None:
            why = checkpoint_signature_problem(cp, public_key)
            if why is not None:
                return report(
                    count,
                    head,
                    Problem(
                        cp.seq,
                        ProblemKind.CHECKPOINT_SIGNATURE,
                        f"checkpoint #{cp.id}: {why}",
                        cp.id,
                    ),
                )
        missing = f"{head.seq + 1}" if cp.seq == head.seq + 1 else f"{head.seq + 1}..{cp.seq}"
        return report(
            count,
            head,
            Problem(
                head.seq + 1,
                ProblemKind.TRUNCATED,
                f"missing: the ledger ends at record {head.seq} but signed checkpoint #{cp.id} "
                f"covers record {cp.seq}; records {missing} were deleted from the end",
                cp.id,
            ),
        )
    return report(count, head, None)


def _check_record(
    ev: CustodyEvent, e: int, p: str, prev_prev: str, rest: Iterator[CustodyEvent]
) -> Problem | None:
    """The problem of record `ev` read at position `e` after a record with hash `p`."""
    if compute_hash(ev) != ev.hash:
        return _diagnose_hash_mismatch(ev, e, p, prev_prev, rest)
    if ev.seq != e:
        if ev.seq < e:
            return Problem(
                ev.seq,
                ProblemKind.DUPLICATE_SEQ,
                f"seq {ev.seq} occurs again after record {e - 1}: a forged record with this seq "
                f"was inserted, or rows were reordered",
            )
        for later in rest:
            if later.seq == e:
                return Problem(
                    e,
                    ProblemKind.REORDERED,
                    f"found record {ev.seq} where record {e} belongs; record {e} comes later: "
                    f"rows were reordered",
                )
        missing = f"{e}" if ev.seq == e + 1 else f"{e}..{ev.seq - 1}"
        return Problem(
            e,
            ProblemKind.MISSING,
            f"missing: record {ev.seq} follows record {e - 1}; records {missing} were deleted",
        )
    if ev.prev_hash != p:
        return Problem(
            e,
            ProblemKind.LINK_BROKEN,
            f"prev hash {ev.prev_hash[:12]}… is not the hash of record {e - 1} ({p[:12]}…): "
            f"this record was forged, or the one before it was replaced",
        )
    why = _field_problem(ev)
    if why is not None:
        return Problem(e, ProblemKind.INVALID_FIELD, why)
    return None


def _diagnose_hash_mismatch(
    ev: CustodyEvent, e: int, p: str, prev_prev: str, rest: Iterator[CustodyEvent]
) -> Problem:
    """Why record `ev` at position `e` does not hash to its stored hash."""
    if ev.seq != e and compute_hash(_with_seq(ev, e)) == ev.hash:
        return Problem(
            e, ProblemKind.SEQ_CHANGED, f"its seq field was changed from {e} to {ev.seq}"
        )
    if e >= 2 and ev.prev_hash == prev_prev and compute_hash(_with_seq(ev, e - 1)) == ev.hash:
        return Problem(
            e - 1,
            ProblemKind.INSERTED,
            f"inserted: not part of the chain; the genuine record {e - 1} was renumbered to {e} "
            f"behind it",
        )
    if compute_hash(_with_seq(ev, e + 1)) == ev.hash:
        nxt = next(rest, None)
        if nxt is not None and _belongs_at(nxt, e, p):
            return Problem(
                e,
                ProblemKind.REORDERED,
                f"holds record {e + 1} and record {e + 1} holds record {e}: rows were swapped",
            )
        return Problem(
            e,
            ProblemKind.MISSING,
            f"missing: the record stored as {e} is record {e + 1} renumbered; record {e} "
            f"was deleted",
        )
    for offset, later in enumerate(rest, start=1):
        if _belongs_at(later, e, p):
            where = e + offset
            if offset == 1 and later.seq == e:
                return Problem(
                    e,
                    ProblemKind.INSERTED,
                    f"inserted: a forged record with seq {e} stands before the genuine record {e}",
                )
            return Problem(
                e,
                ProblemKind.REORDERED,
                f"the record that belongs at {e} is stored at position {where}: rows were "
                f"swapped or reordered",
            )
    return Problem(
        e,
        ProblemKind.CONTENT_CHANGED,
        "content changed: the stored hash does not match the record's fields (a field was "
        "edited after it was written)",
    )

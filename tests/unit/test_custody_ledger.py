"""The custody ledger, pure: canonical encoding, chaining, checkpoints, and `verify` against each
kind of tampering, on in-memory lists of records."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleet.clock import ManualClock
from fleet.custody import (
    GENESIS_HASH,
    CustodyEvent,
    EventDraft,
    EventType,
    Ledger,
    ProblemKind,
    canonical_bytes,
    compute_hash,
    seal,
    sign_checkpoint,
    verify,
)
from fleet.custody.keys import (
    generate_signing_key,
    load_public_key,
    load_signing_key,
    save_public_key,
    save_signing_key,
)
from fleet.custody.ledger import (
    EVENT_FIELDS,
    canonical_fields,
    canonical_json,
    format_time_us,
    key_id,
)

T0 = 1_740_817_800.0  # 2025-03-01T08:30:00Z


def draft(i: int = 0, **kw: object) -> EventDraft:
    fields: dict[str, object] = {
        "event_type": EventType.HANDOVER,
        "drug_code": "N01AH01",  # fentanyl
        "lot": f"LOT{i % 3}",
        "quantity": Decimal(i % 7 + 1),
        "unit": "ampoule",
        "expiry": date(2027, 6, 30),
        "from_custodian": "person:pharm-1",
        "to_custodian": "compartment:R7/2",
        "location": "pharmacy",
        "actor": "person:pharm-1",
        "actor_auth": ["badge", "fingerprint"],
        "witness": "person:pharm-2",
        "witness_auth": ["badge", "pin"],
        "order_id": f"O-{i}",
        "robot_id": "R7",
        "compartment": "2",
        "seal_id": f"S{i}",
        "event_id": f"ev-{i}",
    }
    fields.update(kw)
    return EventDraft(**fields)  # type: ignore[arg-type]


def build(n: int, start: float = T0) -> tuple[Ledger, ManualClock]:
    clock = ManualClock(start)
    ledger = Ledger(clock)
    for i in range(n):
        clock.advance_to(start + 1.5 * i)
        ledger.append(draft(i))
    return ledger, clock


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return generate_signing_key()


# -- canonical encoding -------------------------------------------------------------------------


def test_canonical_bytes_is_sorted_compact_json_of_every_field() -> None:
    ev = seal(draft(1, note='line\n"two"\tü'), seq=1, prev_hash=GENESIS_HASH, recorded_at=T0)
    raw = canonical_bytes(ev)
    assert raw == canonical_json(canonical_fields(ev))
    obj = json.loads(raw)
    assert list(obj) == sorted(obj)
    assert b" " not in raw.replace(b"person:", b"")  # no insignificant white space
    # every record field but `hash` is covered (times under their second-based names)
    expected = {f.removesuffix("_us") for f in EVENT_FIELDS} | {"v"}
    assert set(obj) == expected
    assert obj["v"] == 1
    assert obj["quantity"] == "2"
    assert obj["expiry"] == "2027-06-30"
    assert obj["recorded_at"] == "2025-03-01T08:30:00.000000Z"
    assert obj["actor_auth"] == ["badge", "fingerprint"]
    assert obj["note"] == 'line\n"two"\tü'
    assert ev.hash == hashlib.sha256(raw).hexdigest()


def test_canonical_encoding_fixed_formats() -> None:
    assert format_time_us(0) == "1970-01-01T00:00:00.000000Z"
    assert format_time_us(1_740_817_800_123_456) == "2025-03-01T08:30:00.123456Z"
    for given, text in [("2.50", "2.5"), ("100", "100"), ("0.000", "0"), ("1E+2", "100")]:
        ev = seal(draft(quantity=given), seq=1, prev_hash=GENESIS_HASH, recorded_at=T0)
        assert json.loads(canonical_bytes(ev))["quantity"] == text


def test_known_answer_hash() -> None:
    """A fixed record hashes to a fixed value: the encoding must never change silently."""
    ev = seal(
        EventDraft(
            EventType.RECEIPT, "N01AH01", "L1", 10, event_id="e1", actor="person:a", occurred_at=0
        ),
        seq=1,
        prev_hash=GENESIS_HASH,
        recorded_at=1.0,
    )
    assert canonical_bytes(ev) == (
        b'{"actor":"person:a","actor_auth":[],"blind_count":null,"compartment":"",'
        b'"corrects":null,"drug_code":"N01AH01","event_id":"e1","event_type":"RECEIPT",'
        b'"expected_count":null,"expiry":null,"from_custodian":"","location":"","lot":"L1",'
        b'"note":"","occurred_at":"1970-01-01T00:00:00.000000Z","order_id":"",'
        b'"prescription":"","prev_hash":"' + GENESIS_HASH.encode() + b'","quantity":"10",'
        b'"reason":"","recorded_at":"1970-01-01T00:00:01.000000Z","robot_id":"","seal_id":"",'
        b'"seq":1,"to_custodian":"","unit":"unit","v":1,"witness":"","witness_auth":[]}'
    )
    assert ev.hash == hashlib.sha256(canonical_bytes(ev)).hexdigest()


def test_every_field_changes_the_hash() -> None:
    ev = seal(draft(3, blind_count=4, expected_count=4), seq=2, prev_hash="a" * 64, recorded_at=T0)
    changes: dict[str, object] = {
        "seq": 3,
        "prev_hash": "b" * 64,
        "event_id": "other",
        "event_type": "WASTE",
        "drug_code": "X",
        "lot": "LOTX",
        "expiry": date(2027, 7, 1),
        "quantity": Decimal(99),
        "unit": "ml",
        "from_custodian": "person:x",
        "to_custodian": "person:y",
        "location": "OR-3",
        "actor": "person:z",
        "actor_auth": ("pin",),
        "witness": "",
        "witness_auth": (),
        "prescription": "RX1",
        "order_id": "O-x",
        "robot_id": "R8",
        "compartment": "1",
        "seal_id": "S-x",
        "blind_count": 3,
        "expected_count": 5,
        "corrects": 1,
        "reason": "typo",
        "note": "n",
        "occurred_at_us": ev.occurred_at_us + 1,
        "recorded_at_us": ev.recorded_at_us + 1,
    }
    assert set(changes) == set(EVENT_FIELDS)
    for name, value in changes.items():
        assert compute_hash(dataclasses.replace(ev, **{name: value})) != ev.hash, name


# -- chaining and drafts ------------------------------------------------------------------------


def test_append_numbers_links_and_times_records() -> None:
    ledger, _ = build(3)
    events = ledger.events
    assert [e.seq for e in events] == [1, 2, 3]
    assert events[0].prev_hash == GENESIS_HASH
    assert events[1].prev_hash == events[0].hash
    assert events[2].prev_hash == events[1].hash
    assert events[2].recorded_at == pytest.approx(T0 + 3.0)
    assert events[0].occurred_at == events[0].recorded_at
    assert ledger.head.seq == 3 and ledger.head.hash == events[2].hash
    assert verify(events).ok


def test_occurred_at_is_the_given_time() -> None:
    ledger = Ledger(ManualClock(T0 + 60))
    ev = ledger.append(draft(occurred_at=T0))
    assert ev.occurred_at == T0 and ev.recorded_at == T0 + 60


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"event_type": "TELEPORT"}, "event_type"),
        ({"quantity": -1}, "quantity"),
        ({"quantity": 1.5}, "quantity"),
        ({"quantity": "1.0000001"}, "decimal places"),
        ({"quantity": "NaN"}, "quantity"),
        ({"actor_auth": ["retina"]}, "actor_auth"),
        ({"actor_auth": "badge"}, "actor_auth"),
        ({"blind_count": -2}, "blind_count"),
        ({"corrects": 1}, "corrects"),
        ({"event_type": EventType.CORRECTION}, "CORRECTION"),
        ({"event_id": ""}, "event_id"),
    ],
)
def test_invalid_drafts_are_refused(change: dict[str, object], message: str) -> None:
    ledger = Ledger(ManualClock(T0))
    with pytest.raises(ValueError, match=message):
        ledger.append(draft(**change))  # type: ignore[arg-type]
    assert len(ledger) == 0


def test_a_correction_is_a_new_event_naming_an_earlier_one() -> None:
    ledger, _ = build(2)
    fix = ledger.append(
        draft(9, event_type=EventType.CORRECTION, corrects=1, reason="wrong lot", lot="LOT2")
    )
    assert fix.seq == 3 and fix.corrects == 1
    assert ledger.events[0].lot == "LOT0"  # the original is untouched
    assert verify(ledger.events).ok
    with pytest.raises(ValueError, match="corrects"):
        ledger.append(draft(10, event_type=EventType.CORRECTION, corrects=4, reason="x"))


def test_blind_count_mismatch_is_visible() -> None:
    ledger = Ledger(ManualClock(T0))
    ev = ledger.append(draft(event_type=EventType.RECEIVE, blind_count=4, expected_count=5))
    assert ev.count_mismatch
    assert not ledger.append(draft(1, blind_count=5, expected_count=5)).count_mismatch


# -- checkpoints and keys -----------------------------------------------------------------------


def test_checkpoint_signature_and_key_files(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    ledger, _ = build(4)
    cp = ledger.checkpoint(key)
    assert (
        cp.seq == 4 and cp.head_hash == ledger.head.hash and cp.key_id == key_id(key.public_key())
    )
    save_signing_key(key, tmp_path / "k.pem")
    save_public_key(key.public_key(), tmp_path / "k.pub")
    assert (tmp_path / "k.pem").stat().st_mode & 0o777 == 0o600
    loaded = load_signing_key(tmp_path / "k.pem")
    public = load_public_key(tmp_path / "k.pub")
    assert key_id(loaded.public_key()) == key_id(public) == cp.key_id
    assert key_id(load_public_key(tmp_path / "k.pem")) == cp.key_id
    report = verify(ledger.events, [cp], public)
    assert report.ok and report.checkpoints == 1 and report.signatures_checked
    with pytest.raises(FileExistsError):
        save_signing_key(key, tmp_path / "k.pem")
    (tmp_path / "bad.pub").write_text("not a key")
    with pytest.raises(ValueError, match=r"bad\.pub"):
        load_public_key(tmp_path / "bad.pub")


def test_checkpoint_of_empty_ledger(key: Ed25519PrivateKey) -> None:
    ledger = Ledger(ManualClock(T0))
    cp = ledger.checkpoint(key)
    assert cp.seq == 0 and cp.head_hash == GENESIS_HASH
    assert verify([], [cp], key.public_key()).ok


# -- verify: each tampering, named ---------------------------------------------------------------


def test_good_ledger_summary(key: Ed25519PrivateKey) -> None:
    ledger, _ = build(10)
    report = verify(ledger.events, [ledger.checkpoint(key)], key.public_key())
    assert report.ok and report.records == 10 and report.head.seq == 10
    assert report.summary().startswith("OK: 10 records, head seq 10")
    assert verify([]).ok


def test_changed_field_is_named() -> None:
    events, _ = build(6)
    evs = events.events
    evs[3] = dataclasses.replace(evs[3], quantity=Decimal(50))
    problem = verify(evs).problem
    assert problem is not None and problem.seq == 4
    assert problem.kind is ProblemKind.CONTENT_CHANGED
    assert str(problem).startswith("record 4: CONTENT_CHANGED")


def test_changed_seq_field_is_named() -> None:
    evs = build(6)[0].events
    evs[2] = dataclasses.replace(evs[2], seq=9)
    problem = verify(evs).problem
    assert problem is not None and (problem.seq, problem.kind) == (3, ProblemKind.SEQ_CHANGED)


def test_deleted_record_is_named() -> None:
    evs = build(6)[0].events
    del evs[2]
    problem = verify(evs).problem
    assert problem is not None and (problem.seq, problem.kind) == (3, ProblemKind.MISSING)
    assert "deleted" in problem.detail


def test_deleted_last_record_needs_a_checkpoint(key: Ed25519PrivateKey) -> None:
    ledger, _ = build(6)
    cp = ledger.checkpoint(key)
    evs = ledger.events[:-2]
    assert verify(evs).ok  # a hash chain alone cannot see its end cut off
    problem = verify(evs, [cp], key.public_key()).problem
    assert problem is not None and (problem.seq, problem.kind) == (5, ProblemKind.TRUNCATED)
    assert "5..6" in problem.detail


def test_inserted_forged_record_is_named() -> None:
    evs = build(6)[0].events
    # A careful forger: right seq, linked to its predecessor, correct hash.
    forged = seal(draft(99, event_id="forged"), seq=3, prev_hash=evs[1].hash, recorded_at=T0 + 3)
    problem = verify([*evs[:2], forged, *evs[2:]]).problem
    assert problem is not None and (problem.seq, problem.kind) == (3, ProblemKind.DUPLICATE_SEQ)
    # A careless one: a made-up hash.
    careless = dataclasses.replace(forged, hash="f" * 64)
    problem = verify([*evs[:2], careless, *evs[2:]]).problem
    assert problem is not None and (problem.seq, problem.kind) == (3, ProblemKind.INSERTED)


def test_inserted_forged_record_with_renumbering_is_named() -> None:
    evs = build(6)[0].events
    forged = seal(draft(99, event_id="forged"), seq=3, prev_hash=evs[1].hash, recorded_at=T0 + 3)
    shifted = [dataclasses.replace(e, seq=e.seq + 1) for e in evs[2:]]
    problem = verify([*evs[:2], forged, *shifted]).problem
    assert problem is not None and (problem.seq, problem.kind) == (3, ProblemKind.INSERTED)


def test_reordered_records_are_named() -> None:
    evs = build(8)[0].events
    swapped = list(evs)
    swapped[2], swapped[5] = swapped[5], swapped[2]
    problem = verify(swapped).problem
    assert problem is not None and (problem.seq, problem.kind) == (3, ProblemKind.REORDERED)
    # Swapped by exchanging their seq values (what a database row swap looks like)
    by_seq = list(evs)
    by_seq[2] = dataclasses.replace(evs[5], seq=3)
    by_seq[5] = dataclasses.replace(evs[2], seq=6)
    problem = verify(by_seq).problem
    assert problem is not None and (problem.seq, problem.kind) == (3, ProblemKind.REORDERED)
    adjacent = list(evs)
    adjacent[2] = dataclasses.replace(evs[3], seq=3)
    adjacent[3] = dataclasses.replace(evs[2], seq=4)
    problem = verify(adjacent).problem
    assert problem is not None and (problem.seq, problem.kind) == (3, ProblemKind.REORDERED)


def test_rewritten_chain_is_caught_by_checkpoint(key: Ed25519PrivateKey) -> None:
    ledger, _ = build(8)
    early = sign_checkpoint(3, ledger.events[2].hash, T0 + 10, key)
    late = ledger.checkpoint(key)
    # Edit record 5 and recompute every hash from there: the chain itself looks fine.
    evs = ledger.events[:4]
    for e in ledger.events[4:]:
        changed = e.quantity + 1 if e.seq == 5 else e.quantity
        redo = dataclasses.replace(e, quantity=changed, prev_hash=evs[-1].hash)
        evs.append(dataclasses.replace(redo, hash=compute_hash(redo)))
    assert verify(evs).ok
    report = verify(evs, [early, late], key.public_key())
    assert report.problem is not None
    assert (report.problem.seq, report.problem.kind) == (8, ProblemKind.CHECKPOINT_MISMATCH)
    assert report.checkpoints == 1  # the early one held


def test_edited_or_foreign_checkpoint_is_named(key: Ed25519PrivateKey) -> None:
    ledger, _ = build(5)
    cp = ledger.checkpoint(key)
    edited = dataclasses.replace(cp, seq=4, head_hash=ledger.events[3].hash)
    problem = verify(ledger.events, [edited], key.public_key()).problem
    assert problem is not None and (problem.seq, problem.kind) == (
        4,
        ProblemKind.CHECKPOINT_SIGNATURE,
    )
    other = generate_signing_key()
    problem = verify(ledger.events, [cp], other.public_key()).problem
    assert problem is not None and problem.kind is ProblemKind.CHECKPOINT_SIGNATURE
    assert "not by the given public key" in problem.detail
    # Without a public key only the head hash is compared.
    assert verify(ledger.events, [cp]).ok
    assert not verify(ledger.events, [cp]).signatures_checked


def test_forged_checkpoint_beyond_the_end_is_a_signature_problem(key: Ed25519PrivateKey) -> None:
    ledger, _ = build(3)
    cp = ledger.checkpoint(key)
    forged = dataclasses.replace(cp, seq=9)
    problem = verify(ledger.events, [forged], key.public_key()).problem
    assert problem is not None and problem.kind is ProblemKind.CHECKPOINT_SIGNATURE


def test_wrong_types_are_reported_not_raised() -> None:
    evs = build(3)[0].events
    evs[1] = dataclasses.replace(evs[1], quantity="lots")  # type: ignore[arg-type]
    problem = verify(evs).problem
    assert problem is not None and problem.seq == 2


def test_records_are_immutable() -> None:
    ev: CustodyEvent = build(1)[0].events[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        ev.quantity = Decimal(3)  # type: ignore[misc]

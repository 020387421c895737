"""Property: any single-field change, deletion, insertion or swap of a random ledger is detected,
and `verify` names the right record."""

from __future__ import annotations

import dataclasses
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fleet.clock import ManualClock
from fleet.custody import (
    CustodyEvent,
    EventDraft,
    EventType,
    Ledger,
    ProblemKind,
    canonical_bytes,
    seal,
    verify,
)
from fleet.custody.keys import generate_signing_key
from fleet.custody.ledger import EVENT_FIELDS, AuthFactor, canonical_fields, canonical_json

KEY = generate_signing_key()
PUBLIC = KEY.public_key()
T0 = 1_740_817_800.0

texts = st.text(max_size=12)
ids = st.text(alphabet="abcdefghij0123456789:-/", min_size=1, max_size=10)
factors = st.lists(st.sampled_from(list(AuthFactor)), max_size=3, unique=True)
counts = st.none() | st.integers(min_value=0, max_value=1000)

drafts = st.builds(
    EventDraft,
    event_type=st.sampled_from([t for t in EventType if t is not EventType.CORRECTION]),
    drug_code=ids,
    lot=ids,
    quantity=st.decimals(min_value=0, max_value=10_000, places=3, allow_nan=False),
    unit=st.sampled_from(["ampoule", "ml", "mg", "tablet"]),
    expiry=st.none() | st.dates(date(2024, 1, 1), date(2035, 12, 31)),
    from_custodian=ids,
    to_custodian=ids,
    location=texts,
    actor=ids,
    actor_auth=factors,
    witness=texts,
    witness_auth=factors,
    prescription=texts,
    order_id=texts,
    robot_id=texts,
    compartment=texts,
    seal_id=texts,
    blind_count=counts,
    expected_count=counts,
    reason=texts,
    note=texts,
    occurred_at=st.none() | st.floats(min_value=T0 - 86_400, max_value=T0),
    event_id=st.uuids().map(lambda u: u.hex),
)


@st.composite
def ledgers(draw: st.DrawFn, min_size: int = 1) -> list[CustodyEvent]:
    items = draw(st.lists(drafts, min_size=min_size, max_size=12))
    steps = draw(st.lists(st.floats(0, 3600), min_size=len(items), max_size=len(items)))
    clock = ManualClock(T0)
    ledger = Ledger(clock)
    for item, step in zip(items, steps, strict=True):
        clock.advance_to(clock.now() + step)
        ledger.append(item)
    return ledger.events


def _other_value(draw: st.DrawFn, ev: CustodyEvent, name: str) -> Any:
    """A different value for field `name` of `ev`."""
    value = getattr(ev, name)
    if name in ("seq", "occurred_at_us", "recorded_at_us"):
        return value + draw(st.integers(1, 10**6)) * draw(st.sampled_from([1, -1]))
    if name in ("prev_hash", "hash"):
        return draw(st.text(alphabet="0123456789abcdef", min_size=64, max_size=64))
    if name == "quantity":
        return value + draw(st.decimals(min_value=Decimal("0.001"), max_value=100, places=3))
    if name == "expiry":
        return (value or date(2030, 1, 1)) + timedelta(days=draw(st.integers(1, 400)))
    if name in ("actor_auth", "witness_auth"):
        return tuple(sorted(set(value) ^ {draw(st.sampled_from(list(AuthFactor))).value}))
    if name in ("blind_count", "expected_count", "corrects"):
        return draw(st.integers(0, 10**6).filter(lambda v: v != value))
    return draw(st.text(max_size=12).filter(lambda v: v != value))


@st.composite
def changed_field(draw: st.DrawFn) -> tuple[list[CustodyEvent], int, str]:
    events = draw(ledgers())
    i = draw(st.integers(0, len(events) - 1))
    name = draw(st.sampled_from([*EVENT_FIELDS, "hash"]))
    new = _other_value(draw, events[i], name)
    before = events[i]
    events[i] = dataclasses.replace(before, **{name: new})
    if name != "hash":
        assume(canonical_bytes(events[i]) != canonical_bytes(before))
    return events, i, name


FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(drafts)
def test_fast_encoding_equals_the_reference(d: EventDraft) -> None:
    ev = seal(d, seq=7, prev_hash="ab" * 32, recorded_at=T0)
    assert canonical_bytes(ev) == canonical_json(canonical_fields(ev))


@FAST
@given(ledgers())
def test_untouched_ledgers_verify(events: list[CustodyEvent]) -> None:
    cp = Ledger(ManualClock(T0), events).checkpoint(KEY)
    report = verify(events, [cp], PUBLIC)
    assert report.ok and report.records == len(events) and report.checkpoints == 1


@FAST
@given(changed_field())
def test_any_single_field_change_is_named(case: tuple[list[CustodyEvent], int, str]) -> None:
    events, i, name = case
    problem = verify(events).problem
    assert problem is not None, name
    assert problem.seq == i + 1, (name, str(problem))
    expected = ProblemKind.SEQ_CHANGED if name == "seq" else ProblemKind.CONTENT_CHANGED
    assert problem.kind is expected, (name, str(problem))


@FAST
@given(ledgers(), st.data())
def test_any_deletion_is_named(events: list[CustodyEvent], data: st.DataObject) -> None:
    cp = Ledger(ManualClock(T0), events).checkpoint(KEY)
    i = data.draw(st.integers(0, len(events) - 1))
    del events[i]
    problem = verify(events, [cp], PUBLIC).problem
    assert problem is not None and problem.seq == i + 1, str(problem)
    assert problem.kind in (ProblemKind.MISSING, ProblemKind.TRUNCATED)


@FAST
@given(ledgers(), drafts, st.data())
def test_any_insertion_is_named(
    events: list[CustodyEvent], extra: EventDraft, data: st.DataObject
) -> None:
    """A forged record inserted before record i+1 (not after the last checkpoint)."""
    cp = Ledger(ManualClock(T0), events).checkpoint(KEY)
    i = data.draw(st.integers(0, len(events) - 1))
    prev = events[i - 1].hash if i else "0" * 64
    forged = seal(extra, seq=i + 1, prev_hash=prev, recorded_at=T0)
    style = data.draw(st.sampled_from(["linked", "renumbered", "bad-hash"]))
    if style == "linked":
        tampered = [*events[:i], forged, *events[i:]]
    elif style == "renumbered":
        shifted = [dataclasses.replace(e, seq=e.seq + 1) for e in events[i:]]
        tampered = [*events[:i], forged, *shifted]
    else:
        bad = dataclasses.replace(
            forged, hash=data.draw(st.text("0123456789abcdef", min_size=64, max_size=64))
        )
        tampered = [*events[:i], bad, *events[i:]]
    problem = verify(tampered, [cp], PUBLIC).problem
    assert problem is not None and problem.seq == i + 1, (style, str(problem))
    assert problem.kind in (ProblemKind.INSERTED, ProblemKind.DUPLICATE_SEQ), (style, str(problem))


@FAST
@given(ledgers(min_size=2), st.data())
def test_any_swap_is_named(events: list[CustodyEvent], data: st.DataObject) -> None:
    i = data.draw(st.integers(0, len(events) - 2))
    j = data.draw(st.integers(i + 1, len(events) - 1))
    by_seq = data.draw(st.booleans())
    tampered = list(events)
    if by_seq:  # exchange the seq values, as swapping two database rows does
        tampered[i] = dataclasses.replace(events[j], seq=i + 1)
        tampered[j] = dataclasses.replace(events[i], seq=j + 1)
    else:  # exchange positions
        tampered[i], tampered[j] = events[j], events[i]
    problem = verify(tampered).problem
    assert problem is not None and problem.seq == i + 1, str(problem)
    assert problem.kind is ProblemKind.REORDERED, str(problem)

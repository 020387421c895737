"""The custody ledger in SQLite and PostgreSQL: tampering with the stored rows (with the
append-only triggers switched off, as a database administrator could) is caught by the real
`fleet custody verify` command, which names the first bad record; on PostgreSQL the database
itself refuses UPDATE and DELETE, and a restricted application role may only read and append."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, insert, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from fleet.cli import main
from fleet.clock import ManualClock
from fleet.custody import EventDraft, EventType, compute_hash, seal
from fleet.custody.keys import load_signing_key
from fleet.store.ledger import (
    _EVENTS,
    _event_values,
    connect_ledger,
    grant_append_only,
    open_ledger,
)

T0 = 1_740_817_800.0
N = 8


@dataclass
class Ledgered:
    url: str
    signing_key: Path
    public_key: Path


def _draft(i: int) -> EventDraft:
    return EventDraft(
        EventType.HANDOVER if i % 2 else EventType.ISSUE,
        "N01AH01",
        f"LOT{i % 3}",
        Decimal(i + 1),
        unit="ampoule",
        expiry=date(2027, 6, 30),
        from_custodian="person:pharm-1",
        to_custodian=f"compartment:R7/{i % 4 + 1}",
        location="pharmacy",
        actor="person:pharm-1",
        actor_auth=["badge", "pin"],
        witness="person:pharm-2",
        witness_auth=["badge", "fingerprint"],
        prescription=f"RX{i}",
        robot_id="R7",
        seal_id=f"S{i}",
        blind_count=i,
        expected_count=i,
    )


def _verify(ledger: Ledgered, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["custody", "verify", "--db", ledger.url, "--public-key", str(ledger.public_key)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.fixture
def ledger(store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Ledgered:
    """N records and a signed checkpoint at the head, made through the real commands."""
    made = Ledgered(store_url, tmp_path / "custody.key", tmp_path / "custody.pub")
    assert main(["custody", "keygen", "--signing-key", str(made.signing_key),
                 "--public-key", str(made.public_key)]) == 0  # fmt: skip
    store = open_ledger(store_url)
    clock = ManualClock(T0)
    try:
        for i in range(N):
            clock.advance_to(T0 + 60 * i)
            store.append(_draft(i), clock)
    finally:
        store.close()
    assert main(["custody", "checkpoint", "--db", store_url, "--signing-key",
                 str(made.signing_key)]) == 0  # fmt: skip
    code, out = _verify(made, capsys)
    assert code == 0, out
    assert f"OK: {N} records, head seq {N}" in out and "1 checkpoints matched" in out
    return made


def _admin_engine(url: str) -> Engine:
    return create_engine(url, poolclass=NullPool)


def _tamper(url: str, *statements: str) -> None:
    """Run `statements` as the owner with the append-only triggers off, then put them back."""
    engine = _admin_engine(url)
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                for table in ("custody_events", "custody_checkpoints"):
                    conn.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
            else:
                for table in ("custody_events", "custody_checkpoints"):
                    for op in ("update", "delete"):
                        conn.execute(text(f"DROP TRIGGER IF EXISTS {table}_no_{op}"))
            for statement in statements:
                conn.execute(text(statement))
            if conn.dialect.name == "postgresql":
                for table in ("custody_events", "custody_checkpoints"):
                    conn.execute(text(f"ALTER TABLE {table} ENABLE TRIGGER USER"))
    finally:
        engine.dispose()


def test_edited_quantity_is_named(ledger: Ledgered, capsys: pytest.CaptureFixture[str]) -> None:
    _tamper(ledger.url, "UPDATE custody_events SET quantity = '40' WHERE seq = 3")
    code, out = _verify(ledger, capsys)
    assert code == 1
    assert "record 3: CONTENT_CHANGED" in out


def test_deleted_row_is_named(ledger: Ledgered, capsys: pytest.CaptureFixture[str]) -> None:
    _tamper(ledger.url, "DELETE FROM custody_events WHERE seq = 3")
    code, out = _verify(ledger, capsys)
    assert code == 1
    assert "record 3: MISSING" in out and "deleted" in out


def test_deleted_tail_is_named_by_the_checkpoint(
    ledger: Ledgered, capsys: pytest.CaptureFixture[str]
) -> None:
    _tamper(ledger.url, f"DELETE FROM custody_events WHERE seq >= {N - 1}")
    code, out = _verify(ledger, capsys)
    assert code == 1
    assert f"record {N - 1}: TRUNCATED" in out


def test_inserted_forged_row_is_named(ledger: Ledgered, capsys: pytest.CaptureFixture[str]) -> None:
    """The forger renumbers the rows from 3 on and slips a well-formed, linked record in."""
    store = connect_ledger(ledger.url)
    try:
        before = store.events()
    finally:
        store.close()
    forged = seal(_draft(99), seq=3, prev_hash=before[1].hash, recorded_at=T0 + 130)
    _tamper(
        ledger.url,
        "UPDATE custody_events SET seq = seq + 1000000 WHERE seq >= 3",
        "UPDATE custody_events SET seq = seq - 1000000 + 1 WHERE seq >= 1000000",
    )
    engine = _admin_engine(ledger.url)
    try:
        with engine.begin() as conn:
            conn.execute(insert(_EVENTS), [_event_values(forged)])
    finally:
        engine.dispose()
    code, out = _verify(ledger, capsys)
    assert code == 1
    assert "record 3: INSERTED" in out


def test_forged_row_with_a_made_up_hash_is_named(
    ledger: Ledgered, capsys: pytest.CaptureFixture[str]
) -> None:
    forged = replace(
        seal(_draft(99), seq=N + 1, prev_hash="0" * 64, recorded_at=T0 + 999), hash="f" * 64
    )
    engine = _admin_engine(ledger.url)
    try:
        with engine.begin() as conn:  # INSERT needs no tampering with the triggers
            conn.execute(insert(_EVENTS), [_event_values(forged)])
    finally:
        engine.dispose()
    code, out = _verify(ledger, capsys)
    assert code == 1
    assert f"record {N + 1}: " in out


def test_swapped_rows_are_named(ledger: Ledgered, capsys: pytest.CaptureFixture[str]) -> None:
    _tamper(
        ledger.url,
        "UPDATE custody_events SET seq = -2 WHERE seq = 2",
        "UPDATE custody_events SET seq = 2 WHERE seq = 5",
        "UPDATE custody_events SET seq = 5 WHERE seq = -2",
    )
    code, out = _verify(ledger, capsys)
    assert code == 1
    assert "record 2: REORDERED" in out


def test_edited_checkpoint_is_named(ledger: Ledgered, capsys: pytest.CaptureFixture[str]) -> None:
    store = connect_ledger(ledger.url)
    try:
        third = store.events()[2].hash
    finally:
        store.close()
    _tamper(
        ledger.url,
        f"UPDATE custody_checkpoints SET seq = 3, head_hash = '{third}'",
    )
    code, out = _verify(ledger, capsys)
    assert code == 1
    assert "record 3: CHECKPOINT_SIGNATURE" in out


def test_rewritten_chain_is_named_by_the_checkpoint(
    ledger: Ledgered, capsys: pytest.CaptureFixture[str]
) -> None:
    """Edit record 4 and recompute every later hash: only the signed checkpoint shows it."""
    store = connect_ledger(ledger.url)
    try:
        events = store.events()
    finally:
        store.close()
    statements = []
    prev = events[2].hash
    for ev in events[3:]:
        quantity = ev.quantity + 5 if ev.seq == 4 else ev.quantity
        redone = replace(ev, quantity=quantity, prev_hash=prev)
        redone = replace(redone, hash=compute_hash(redone))
        statements.append(
            f"UPDATE custody_events SET quantity = '{quantity}', prev_hash = '{prev}', "
            f"hash = '{redone.hash}' WHERE seq = {ev.seq}"
        )
        prev = redone.hash
    _tamper(ledger.url, *statements)
    code, out = _verify(ledger, capsys)
    assert code == 1
    assert f"record {N}: CHECKPOINT_MISMATCH" in out


def test_verify_without_a_ledger_or_key(
    tmp_path: Path, ledger: Ledgered, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["custody", "verify", "--db", f"sqlite:///{tmp_path / 'none.db'}"]) == 2
    assert "no SQLite database" in capsys.readouterr().err
    code = main(["custody", "verify", "--db", ledger.url, "--public-key", str(tmp_path / "x")])
    assert code == 2
    # Without a public key the chain and checkpoint hashes are still checked.
    assert main(["custody", "verify", "--db", ledger.url]) == 0
    assert "NOT checked" in capsys.readouterr().out


def test_appends_and_checkpoints_go_through_the_store(ledger: Ledgered) -> None:
    store = open_ledger(ledger.url)
    try:
        clock = ManualClock(T0 + 10_000)
        fix = store.append(
            EventDraft(EventType.CORRECTION, "N01AH01", "LOT1", 2, corrects=2, reason="miscounted"),
            clock,
        )
        assert fix.seq == N + 1 and fix.corrects == 2
        again = store.append(
            EventDraft(EventType.COUNT, "N01AH01", "LOT1", 2, event_id=fix.event_id), clock
        )
        assert again == fix  # the same event id: the stored record, not a second one
        cp = store.checkpoint(load_signing_key(ledger.signing_key), clock)
        assert cp.seq == N + 1 and cp.id == 2
        assert store.events()[-1] == fix
        assert store.head().hash == fix.hash
        assert store.verify().ok
    finally:
        store.close()


def test_the_database_refuses_update_and_delete_even_for_the_owner(ledger: Ledgered) -> None:
    engine = _admin_engine(ledger.url)
    try:
        for statement in (
            "UPDATE custody_events SET quantity = '0' WHERE seq = 1",
            "DELETE FROM custody_events WHERE seq = 1",
            "UPDATE custody_checkpoints SET seq = 0",
            "DELETE FROM custody_checkpoints",
        ):
            with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
                conn.execute(text(statement))
        if engine.dialect.name == "postgresql":
            with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
                conn.execute(text("TRUNCATE custody_events"))
    finally:
        engine.dispose()


def test_concurrent_writers_form_one_chain(store_url: str) -> None:
    """Several writers (each its own engine, like separate dispatchers) append at once."""
    open_ledger(store_url).close()
    writers, per_writer = 4, 25
    errors: list[BaseException] = []

    def write(w: int) -> None:
        store = open_ledger(store_url)
        clock = ManualClock(T0 + w)
        try:
            for i in range(per_writer):
                store.append(_draft(w * 1000 + i), clock)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    store = connect_ledger(store_url)
    try:
        events = store.events()
        report = store.verify()
    finally:
        store.close()
    assert [e.seq for e in events] == list(range(1, writers * per_writer + 1))
    assert report.ok, report.summary()


# -- PostgreSQL: a restricted application role ---------------------------------------------------


@pytest.fixture
def app_role(pg_url: str) -> Iterator[str]:
    """A LOGIN role with only SELECT and INSERT on the ledger; its URL. Dropped afterwards."""
    admin = _admin_engine(pg_url)
    role = f"fleet_custody_app_{uuid.uuid4().hex[:8]}"
    try:
        with admin.connect() as conn:
            allowed = conn.execute(
                text("SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user")
            ).scalar_one()
        if not allowed:
            pytest.skip("the test user may not create roles")
        open_ledger(pg_url).close()
        with admin.begin() as conn:
            conn.execute(
                text(
                    "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '"
                    + role
                    + "') THEN CREATE ROLE "
                    + role
                    + " LOGIN; END IF; END $$"
                )
            )
        grant_append_only(admin, role)
        grant_append_only(admin, role)  # idempotent
        yield make_url(pg_url).set(username=role).render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            exists = conn.execute(
                text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}
            ).first()
            if exists:
                conn.execute(text(f"DROP OWNED BY {role}"))
                conn.execute(text(f"DROP ROLE {role}"))
        admin.dispose()


def test_restricted_role_can_only_read_and_append(app_role: str) -> None:
    store = connect_ledger(app_role)
    try:
        clock = ManualClock(T0)
        first = store.append(_draft(1), clock)
        store.append(_draft(2), clock)
        assert first.seq == 1 and store.verify().ok
        for statement in (
            "UPDATE custody_events SET quantity = '0' WHERE seq = 1",
            "DELETE FROM custody_events WHERE seq = 1",
            "TRUNCATE custody_events",
            "DELETE FROM custody_checkpoints",
            "ALTER TABLE custody_events DISABLE TRIGGER USER",
            "DROP TRIGGER custody_events_no_change ON custody_events",
        ):
            with pytest.raises(DBAPIError) as info, store.engine.begin() as conn:
                conn.execute(text(statement))
            message = str(info.value).lower()
            assert "permission denied" in message or "must be owner" in message, message
        assert [e.seq for e in store.events()] == [1, 2]
    finally:
        store.close()


def test_the_order_store_never_creates_ledger_tables_without_their_triggers(
    store_url: str,
) -> None:
    # fleet.store.ledger is imported (above), so its tables are registered with SQLModel: the
    # order store creating every registered table must install the append-only triggers too.
    from fleet.store import open_store

    store = open_store(store_url)
    store.close()
    engine = _admin_engine(store_url)
    try:
        with engine.begin() as conn:
            tables = set(
                conn.execute(
                    text(
                        "SELECT name FROM sqlite_master WHERE type = 'trigger'"
                        if conn.dialect.name == "sqlite"
                        else "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal"
                    )
                ).scalars()
            )
        assert {t for t in tables if t.startswith("custody_events")}, tables
        assert {t for t in tables if t.startswith("custody_checkpoints")}, tables
    finally:
        engine.dispose()

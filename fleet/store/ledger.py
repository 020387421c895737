"""The custody ledger in the database: append-only tables, a concurrency-safe append, ordered
reads, checkpoints, and the `fleet custody verify|checkpoint|keygen` commands' work.

Tables: `custody_events` (one row per `fleet.custody.CustodyEvent`, primary key `seq`) and
`custody_checkpoints`. Times are BIGINT microseconds and quantities canonical decimal strings,
so a row read back hashes exactly as it was written.

Append-only, enforced by the database:

- PostgreSQL: `BEFORE UPDATE OR DELETE` row triggers and a `BEFORE TRUNCATE` statement trigger
  on both tables raise an exception, for every role including the owner (a superuser can still
  disable triggers: that is what checkpoints and `verify` are for); `grant_append_only(role)`
  gives an application role SELECT and INSERT only (run the service as that role, migrations as
  the owner).
- SQLite: `BEFORE UPDATE` / `BEFORE DELETE` triggers that `RAISE(ABORT)`; anyone with the file
  can drop them, so again `verify` is the evidence.

Concurrent writers (several dispatchers on one PostgreSQL): an append takes
`pg_advisory_xact_lock(LEDGER_LOCK_KEY)` first, then reads the head, inserts and commits; the
lock is released by the commit or rollback (also when a process dies), so appends from every
instance form one queue and never fork the chain. A lock was chosen over optimistic "unique seq
and retry" because under contention retries redo the read and hash work and can starve a
writer, while the lock costs one round trip and the critical section is a few milliseconds.
The primary key on `seq` stays as the backstop: a writer that skipped the lock gets a unique
violation, not a fork, and `append` retries it. On SQLite the append starts with
`BEGIN IMMEDIATE` (the database's write lock) for the same effect between processes.
Each event's `event_id` is unique too, so re-sending an append whose commit outcome was unknown
returns the stored record instead of recording the event twice.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import BigInteger, Column, Connection, Table, insert, inspect, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Field, SQLModel, create_engine

from fleet.clock import Clock
from fleet.custody.ledger import (
    GENESIS_HASH,
    ChainHead,
    Checkpoint,
    CustodyEvent,
    EventDraft,
    VerifyReport,
    format_quantity,
    seal,
    sign_checkpoint,
    verify,
)
from fleet.store.sql_store import _parse_url, create_store_engine

# pg_advisory_xact_lock key serializing ledger appends ("custody" in ASCII, as a bigint).
LEDGER_LOCK_KEY = 0x637573746F6479
_SCHEMA_LOCK_KEY = LEDGER_LOCK_KEY + 1
_READ_BATCH = 5_000
_RETRIES = 50


class CustodyEventRow(SQLModel, table=True):
    """One ledger record (table `custody_events`); see `fleet.custody.CustodyEvent`."""

    __tablename__ = "custody_events"

    seq: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64)
    event_id: str = Field(max_length=64, unique=True)
    event_type: str
    drug_code: str
    lot: str
    expiry: str | None = Field(default=None, max_length=10)  # YYYY-MM-DD
    quantity: str  # canonical decimal string
    unit: str
    from_custodian: str
    to_custodian: str
    location: str
    actor: str
    actor_auth: str  # comma-joined factors, sorted
    witness: str
    witness_auth: str
    prescription: str
    order_id: str
    robot_id: str
    compartment: str
    seal_id: str
    blind_count: int | None = None
    expected_count: int | None = None
    corrects: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    reason: str
    note: str
    occurred_at_us: int = Field(sa_column=Column(BigInteger, nullable=False))
    recorded_at_us: int = Field(sa_column=Column(BigInteger, nullable=False))


class CustodyCheckpointRow(SQLModel, table=True):
    """A signed checkpoint of the ledger head (table `custody_checkpoints`)."""

    __tablename__ = "custody_checkpoints"

    id: int | None = Field(default=None, primary_key=True)
    seq: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
    head_hash: str = Field(max_length=64)
    signed_at_us: int = Field(sa_column=Column(BigInteger, nullable=False))
    key_id: str
    signature: str


_EVENTS: Table = CustodyEventRow.__table__  # type: ignore[attr-defined]
_CHECKPOINTS: Table = CustodyCheckpointRow.__table__  # type: ignore[attr-defined]
_TABLES = ("custody_events", "custody_checkpoints")

_PG_FUNCTION = """
CREATE OR REPLACE FUNCTION custody_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'custody ledger is append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END;
$$
"""


class LedgerError(RuntimeError):
    """The ledger could not be read or written (missing tables, lost race, bad database)."""


def install_ledger_schema(engine: Engine) -> None:
    """Create the ledger tables (if missing) and their append-only triggers (idempotent).

    Run as the tables' owner (the migration role), not as the application role.
    """
    SQLModel.metadata.create_all(engine, tables=[_EVENTS, _CHECKPOINTS])
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _SCHEMA_LOCK_KEY})
            conn.execute(text(_PG_FUNCTION))
            for table in _TABLES:
                existing = set(
                    conn.execute(
                        text(
                            "SELECT tgname FROM pg_trigger "
                            "WHERE tgrelid = CAST(:t AS regclass) AND NOT tgisinternal"
                        ),
                        {"t": table},
                    ).scalars()
                )
                if f"{table}_no_change" not in existing:
                    conn.execute(
                        text(
                            f"CREATE TRIGGER {table}_no_change BEFORE UPDATE OR DELETE ON {table} "
                            "FOR EACH ROW EXECUTE FUNCTION custody_append_only()"
                        )
                    )
                if f"{table}_no_truncate" not in existing:
                    conn.execute(
                        text(
                            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                            "FOR EACH STATEMENT EXECUTE FUNCTION custody_append_only()"
                        )
                    )
        elif conn.dialect.name == "sqlite":
            for table in _TABLES:
                for op in ("UPDATE", "DELETE"):
                    conn.execute(
                        text(
                            f"CREATE TRIGGER IF NOT EXISTS {table}_no_{op.lower()} "
                            f"BEFORE {op} ON {table} BEGIN "
                            f"SELECT RAISE(ABORT, 'custody ledger is append-only: {op} on "
                            f"{table} refused'); END"
                        )
                    )


def grant_append_only(engine: Engine, role: str) -> None:
    """PostgreSQL: let `role` read and append to the ledger but never change or delete rows
    (SELECT and INSERT granted, UPDATE, DELETE and TRUNCATE revoked). Run as the owner."""
    if engine.dialect.name != "postgresql":
        raise ValueError("roles and grants exist on PostgreSQL only")
    quoted = engine.dialect.identifier_preparer.quote(role)
    with engine.begin() as conn:
        for table in _TABLES:
            conn.execute(text(f"REVOKE ALL ON {table} FROM {quoted}"))
            conn.execute(text(f"GRANT SELECT, INSERT ON {table} TO {quoted}"))
        conn.execute(text(f"GRANT USAGE ON SEQUENCE custody_checkpoints_id_seq TO {quoted}"))


def open_ledger(url: str) -> LedgerStore:
    """Open the ledger at a database URL (the forms `fleet.store.open_store` takes), creating
    its tables and triggers if missing; the caller must be allowed to (the owner)."""
    engine = create_store_engine(url)
    try:
        install_ledger_schema(engine)
    except BaseException:
        engine.dispose()
        raise
    return LedgerStore(engine)


def connect_ledger(url: str) -> LedgerStore:
    """Open an existing ledger without creating or altering anything (a read-only verifier or
    the restricted application role). LedgerError if the database or its tables are missing."""
    parsed = _parse_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:") or (
            not database.startswith("file:") and not Path(database).is_file()
        ):
            raise LedgerError(f"no SQLite database at {database or ':memory:'!r}")
        engine = create_engine(parsed, connect_args={"check_same_thread": False})
    else:
        engine = create_engine(parsed, pool_pre_ping=True)
    try:
        names = set(inspect(engine).get_table_names())
    except Exception as exc:
        engine.dispose()
        raise LedgerError(
            f"cannot open {parsed.render_as_string(hide_password=True)}: {exc}"
        ) from exc
    missing = [t for t in _TABLES if t not in names]
    if missing:
        engine.dispose()
        raise LedgerError(
            f"no custody ledger in this database (missing tables: {', '.join(missing)})"
        )
    return LedgerStore(engine)


class LedgerStore:
    """The append-only custody ledger on a SQLAlchemy engine (SQLite or PostgreSQL).

    Safe for concurrent use from several threads, processes and hosts: appends serialize on a
    database lock (see the module docstring).
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def close(self) -> None:
        self.engine.dispose()

    # -- writing -----------------------------------------------------------------------------

    def append(self, draft: EventDraft, clock: Clock) -> CustodyEvent:
        """Append `draft` as the next record (time from `clock`) and return it, committed.

        ValueError for an invalid draft (nothing written). Appending an event whose
        `event_id` is already stored returns the stored record (an idempotent retry).
        """
        return self.append_many([draft], clock)[0]

    def append_many(self, drafts: Sequence[EventDraft], clock: Clock) -> list[CustodyEvent]:
        """Append `drafts` in order in one transaction (all or nothing) and return them."""
        if not drafts:
            return []
        last_error: Exception | None = None
        for attempt in range(_RETRIES):
            try:
                return self._append_once(drafts, clock)
            except IntegrityError as exc:
                stored = self._stored_by_event_id(drafts)
                if stored is not None:
                    return stored
                last_error = exc
            except OperationalError as exc:  # SQLite "database is locked" beyond its timeout
                if "locked" not in str(exc).lower() and "busy" not in str(exc).lower():
                    raise
                last_error = exc
            time.sleep(min(0.001 * 2**attempt, 0.1))
        raise LedgerError(f"append failed after {_RETRIES} attempts: {last_error}")

    def _append_once(self, drafts: Sequence[EventDraft], clock: Clock) -> list[CustodyEvent]:
        with self.engine.connect() as conn:
            _lock_for_append(conn)
            head = _read_head(conn)
            now = clock.now()
            events: list[CustodyEvent] = []
            seq, prev = head.seq, head.hash
            for draft in drafts:
                ev = seal(draft, seq=seq + 1, prev_hash=prev, recorded_at=now)
                events.append(ev)
                seq, prev = ev.seq, ev.hash
            conn.execute(insert(_EVENTS), [_event_values(ev) for ev in events])
            conn.commit()
            return events

    def _stored_by_event_id(self, drafts: Sequence[EventDraft]) -> list[CustodyEvent] | None:
        ids = [d.event_id for d in drafts]
        with self.engine.connect() as conn:
            rows = conn.execute(select(_EVENTS).where(_EVENTS.c.event_id.in_(ids))).mappings()
            found = {r["event_id"]: _event_from_row(r) for r in rows}
        if len(found) == len(ids):
            return [found[i] for i in ids]
        return None

    def checkpoint(self, key: Ed25519PrivateKey, clock: Clock) -> Checkpoint:
        """Sign the current head with `key` (an Ed25519 private key) and store the checkpoint.

        The head is read under the append lock, so the checkpoint names a record that is
        committed and nothing is appended between reading and storing it.
        """
        with self.engine.connect() as conn:
            _lock_for_append(conn)
            head = _read_head(conn)
            cp = sign_checkpoint(head.seq, head.hash, clock.now(), key)
            new_id = conn.execute(
                insert(_CHECKPOINTS)
                .values(
                    seq=cp.seq,
                    head_hash=cp.head_hash,
                    signed_at_us=cp.signed_at_us,
                    key_id=cp.key_id,
                    signature=cp.signature,
                )
                .returning(_CHECKPOINTS.c.id)
            ).scalar_one()
            conn.commit()
        return Checkpoint(
            seq=cp.seq,
            head_hash=cp.head_hash,
            signed_at_us=cp.signed_at_us,
            key_id=cp.key_id,
            signature=cp.signature,
            id=int(new_id),
        )

    # -- reading -----------------------------------------------------------------------------

    def head(self) -> ChainHead:
        with self.engine.connect() as conn:
            return _read_head(conn)

    def iter_events(self, from_seq: int = 1, batch: int = _READ_BATCH) -> Iterator[CustodyEvent]:
        """Every record with seq >= `from_seq` in seq order, read `batch` rows at a time."""
        after = from_seq - 1
        while True:
            with self.engine.connect() as conn:
                rows = (
                    conn.execute(
                        select(_EVENTS)
                        .where(_EVENTS.c.seq > after)
                        .order_by(_EVENTS.c.seq)
                        .limit(batch)
                    )
                    .mappings()
                    .all()
                )
            if not rows:
                return
            for r in rows:
                yield _event_from_row(r)
            after = int(rows[-1]["seq"])

    def events(self) -> list[CustodyEvent]:
        return list(self.iter_events())

    def checkpoints(self) -> list[Checkpoint]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(_CHECKPOINTS).order_by(_CHECKPOINTS.c.id)).mappings()
            return [
                Checkpoint(
                    seq=int(r["seq"]),
                    head_hash=r["head_hash"],
                    signed_at_us=int(r["signed_at_us"]),
                    key_id=r["key_id"],
                    signature=r["signature"],
                    id=int(r["id"]),
                )
                for r in rows
            ]

    def verify(self, public_key: Ed25519PublicKey | None = None) -> VerifyReport:
        """`fleet.custody.verify` over every stored record and checkpoint."""
        return verify(self.iter_events(), self.checkpoints(), public_key)


def _lock_for_append(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LEDGER_LOCK_KEY})
    elif conn.dialect.name == "sqlite":
        # pysqlite opens transactions lazily (a deferred BEGIN before the first write); taking
        # the write lock first makes read-head-then-insert atomic between processes.
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _read_head(conn: Connection) -> ChainHead:
    row = conn.execute(
        select(_EVENTS.c.seq, _EVENTS.c.hash).order_by(_EVENTS.c.seq.desc()).limit(1)
    ).first()
    if row is None:
        return ChainHead(0, GENESIS_HASH)
    return ChainHead(int(row[0]), str(row[1]))


def _event_values(ev: CustodyEvent) -> dict[str, Any]:
    return {
        "seq": ev.seq,
        "prev_hash": ev.prev_hash,
        "hash": ev.hash,
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
        "actor_auth": ",".join(ev.actor_auth),
        "witness": ev.witness,
        "witness_auth": ",".join(ev.witness_auth),
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
        "occurred_at_us": ev.occurred_at_us,
        "recorded_at_us": ev.recorded_at_us,
    }


def _split(joined: str) -> tuple[str, ...]:
    return tuple(joined.split(",")) if joined else ()


def _event_from_row(r: Any) -> CustodyEvent:
    """A record as stored. Values that do not parse are kept as read (wrong types do not hash),
    so a tampered row is reported by `verify`, not raised here."""
    expiry: Any = r["expiry"]
    if isinstance(expiry, str):
        with contextlib.suppress(ValueError):
            expiry = date.fromisoformat(expiry)
    quantity: Any = r["quantity"]
    with contextlib.suppress(ArithmeticError, ValueError, TypeError):
        quantity = Decimal(quantity)
    return CustodyEvent(
        seq=int(r["seq"]),
        prev_hash=r["prev_hash"],
        event_id=r["event_id"],
        event_type=r["event_type"],
        drug_code=r["drug_code"],
        lot=r["lot"],
        expiry=expiry,
        quantity=quantity,
        unit=r["unit"],
        from_custodian=r["from_custodian"],
        to_custodian=r["to_custodian"],
        location=r["location"],
        actor=r["actor"],
        actor_auth=_split(r["actor_auth"] or ""),
        witness=r["witness"],
        witness_auth=_split(r["witness_auth"] or ""),
        prescription=r["prescription"],
        order_id=r["order_id"],
        robot_id=r["robot_id"],
        compartment=r["compartment"],
        seal_id=r["seal_id"],
        blind_count=r["blind_count"],
        expected_count=r["expected_count"],
        corrects=r["corrects"],
        reason=r["reason"],
        note=r["note"],
        occurred_at_us=int(r["occurred_at_us"]),
        recorded_at_us=int(r["recorded_at_us"]),
        hash=r["hash"],
    )


# -- the `fleet custody` commands -----------------------------------------------------------


@dataclass(frozen=True)
class CommandResult:
    """An exit code and the lines to print (stdout when code is 0, else stderr)."""

    code: int
    lines: list[str]


def verify_command(url: str, public_key_path: str | None) -> CommandResult:
    """`fleet custody verify`: 0 and a summary for a good ledger; 1 naming the first bad
    record; 2 when the database or key cannot be read."""
    from fleet.custody.keys import load_public_key

    public_key = None
    try:
        if public_key_path:
            public_key = load_public_key(public_key_path)
        store = connect_ledger(url)
    except (OSError, ValueError, LedgerError) as exc:
        return CommandResult(2, [f"fleet custody verify: {exc}"])
    try:
        report = store.verify(public_key)
    finally:
        store.close()
    lines = [report.summary()]
    if report.ok and public_key is None and report.checkpoints:
        lines.append("warning: checkpoint signatures were not checked (no --public-key)")
    return CommandResult(0 if report.ok else 1, lines)


def checkpoint_command(url: str, signing_key_path: str, clock: Clock) -> CommandResult:
    """`fleet custody checkpoint`: sign and store the current head."""
    from fleet.custody.keys import load_signing_key

    try:
        key = load_signing_key(signing_key_path)
        store = open_ledger(url)
    except (OSError, ValueError, LedgerError) as exc:
        return CommandResult(2, [f"fleet custody checkpoint: {exc}"])
    try:
        cp = store.checkpoint(key, clock)
    finally:
        store.close()
    return CommandResult(
        0,
        [f"checkpoint #{cp.id}: seq {cp.seq} head {cp.head_hash} key {cp.key_id}"],
    )


def keygen_command(signing_key_path: str, public_key_path: str) -> CommandResult:
    """`fleet custody keygen`: a new Ed25519 key pair in two PEM files."""
    from fleet.custody.keys import generate_signing_key, save_public_key, save_signing_key
    from fleet.custody.ledger import key_id

    key = generate_signing_key()
    try:
        save_signing_key(key, signing_key_path)
        save_public_key(key.public_key(), public_key_path)
    except OSError as exc:
        return CommandResult(2, [f"fleet custody keygen: {exc}"])
    return CommandResult(
        0,
        [
            f"signing key {signing_key_path} (keep secret), public key {public_key_path}, "
            f"key id {key_id(key.public_key())}"
        ],
    )

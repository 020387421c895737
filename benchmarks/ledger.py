"""Custody ledger benchmark: appends per second on SQLite and PostgreSQL (one writer, and several
writers contending for the append lock), and the time `verify` takes over a large ledger, in
memory and read back from SQLite.

    .venv/bin/python -m benchmarks.ledger [--appends 2000] [--writers 4]
        [--verify-events 1000000] [--sqlite-verify-events 1000000] [--pg URL | --no-pg]

Each append is one committed transaction (the way the service records a custody event before
acknowledging it). Verify over SQLite reads the rows in batches of 5,000 through the store, so it
includes the database read and the row-to-record conversion. PostgreSQL runs in a throw-away
database made on the server named by --pg (default: the dev machine's server) and dropped after.
The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from fleet.clock import ManualClock, SystemClock
from fleet.custody.ledger import GENESIS_HASH, CustodyEvent, EventDraft, EventType, seal, verify
from fleet.store.ledger import open_ledger

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
T0 = 1_740_817_800.0


def draft(i: int) -> EventDraft:
    return EventDraft(
        EventType.HANDOVER,
        "N01AH01",
        f"LOT{i % 17}",
        Decimal(i % 10 + 1),
        unit="ampoule",
        expiry=date(2027, 6, 30),
        from_custodian="person:pharm-1",
        to_custodian=f"compartment:R{i % 12}/{i % 4 + 1}",
        location="pharmacy",
        actor="person:pharm-1",
        actor_auth=["badge", "fingerprint"],
        witness="person:pharm-2",
        witness_auth=["badge", "pin"],
        order_id=f"O-{i}",
        robot_id=f"R{i % 12}",
        compartment=str(i % 4 + 1),
        seal_id=f"S{i}",
        blind_count=i % 10 + 1,
        expected_count=i % 10 + 1,
        event_id=f"{i:032x}",
    )


def generate(n: int) -> Iterator[CustodyEvent]:
    """`n` chained records, one every 2 s."""
    prev = GENESIS_HASH
    for i in range(n):
        ev = seal(draft(i), seq=i + 1, prev_hash=prev, recorded_at=T0 + 2 * i)
        prev = ev.hash
        yield ev


def appends_per_second(url: str, count: int, writers: int) -> float:
    """Committed single-event appends per second with `writers` threads, each its own engine."""
    open_ledger(url).close()
    per_writer = max(1, count // writers)
    barrier = threading.Barrier(writers + 1)
    errors: list[BaseException] = []

    def work(w: int) -> None:
        store = open_ledger(url)
        clock = SystemClock()
        try:
            barrier.wait()
            for i in range(per_writer):
                store.append(draft(w * 10_000_000 + i), clock)
        except BaseException as exc:
            errors.append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=work, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    store = open_ledger(url)
    try:
        if not store.verify().ok:
            raise RuntimeError("ledger does not verify after the append benchmark")
    finally:
        store.close()
    return per_writer * writers / elapsed


def verify_in_memory(n: int) -> dict[str, float]:
    start = time.perf_counter()
    events = list(generate(n))
    generated = time.perf_counter() - start
    start = time.perf_counter()
    report = verify(events)
    elapsed = time.perf_counter() - start
    if not report.ok or report.records != n:
        raise RuntimeError(report.summary())
    return {"generate_s": round(generated, 2), "verify_s": round(elapsed, 2)}


def verify_sqlite(n: int, directory: str) -> dict[str, float]:
    url = f"sqlite:///{os.path.join(directory, 'verify.db')}"
    store = open_ledger(url)
    clock = ManualClock(T0)
    start = time.perf_counter()
    batch = 10_000
    for first in range(0, n, batch):
        store.append_many([draft(i) for i in range(first, min(n, first + batch))], clock)
    loaded = time.perf_counter() - start
    start = time.perf_counter()
    report = store.verify()
    elapsed = time.perf_counter() - start
    store.close()
    if not report.ok or report.records != n:
        raise RuntimeError(report.summary())
    return {"load_s": round(loaded, 2), "verify_s": round(elapsed, 2)}


def _pg_database(admin_url: str) -> str | None:
    """A fresh database on the server of `admin_url`, or None when none answers."""
    admin = make_url(admin_url)
    engine = create_engine(
        admin, isolation_level="AUTOCOMMIT", poolclass=NullPool, connect_args={"connect_timeout": 3}
    )
    name = f"fleet_bench_{uuid.uuid4().hex[:8]}"
    try:
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception:
        return None
    finally:
        engine.dispose()
    return admin.set(database=name).render_as_string(hide_password=False)


def _drop_pg_database(admin_url: str, url: str) -> None:
    name = make_url(url).database
    engine = create_engine(make_url(admin_url), isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    ram_gb = None
    with contextlib.suppress(ValueError, OSError):
        ram_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gb": ram_gb,
        "python": platform.python_version(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--appends", type=int, default=2000, help="appends per measurement")
    parser.add_argument("--writers", type=int, default=4, help="concurrent writers (4)")
    parser.add_argument("--verify-events", type=int, default=1_000_000)
    parser.add_argument("--sqlite-verify-events", type=int, default=1_000_000)
    parser.add_argument("--pg", default=DEFAULT_PG, metavar="URL", help="PostgreSQL admin URL")
    parser.add_argument("--no-pg", action="store_true", help="skip PostgreSQL")
    args = parser.parse_args(argv)

    result: dict[str, Any] = {"machine": machine(), "appends": args.appends}
    with tempfile.TemporaryDirectory(prefix="fleet-ledger-bench-") as directory:
        for writers in (1, args.writers):
            url = f"sqlite:///{os.path.join(directory, f'append{writers}.db')}"
            rate = appends_per_second(url, args.appends, writers)
            result[f"sqlite_appends_per_s_{writers}_writers"] = round(rate)
            print(f"SQLite, {writers} writer(s): {rate:,.0f} appends/s", flush=True)
        if not args.no_pg:
            for writers in (1, args.writers):
                pg = _pg_database(args.pg)
                if pg is None:
                    print(f"PostgreSQL: no server at {args.pg}; skipped", flush=True)
                    break
                try:
                    rate = appends_per_second(pg, args.appends, writers)
                finally:
                    _drop_pg_database(args.pg, pg)
                result[f"postgres_appends_per_s_{writers}_writers"] = round(rate)
                print(f"PostgreSQL, {writers} writer(s): {rate:,.0f} appends/s", flush=True)
        if args.verify_events:
            mem = verify_in_memory(args.verify_events)
            result["verify_in_memory"] = {"events": args.verify_events, **mem}
            print(f"verify {args.verify_events:,} in-memory records: {mem}", flush=True)
        if args.sqlite_verify_events:
            lite = verify_sqlite(args.sqlite_verify_events, directory)
            result["verify_sqlite"] = {"events": args.sqlite_verify_events, **lite}
            print(f"verify {args.sqlite_verify_events:,} SQLite records: {lite}", flush=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Fixtures for tests against real databases: a fresh SQLite file and a fresh PostgreSQL database.

PostgreSQL: the dev/CI machine runs a server on 127.0.0.1:5432 (trust auth, database `test`,
user `postgres` or `root`). `FLEET_TEST_POSTGRES_URL` overrides the administrative URL used to
create and drop the throw-away databases. When no server answers, PostgreSQL tests are skipped,
unless the environment variable `CI` is set (non-empty): then they fail, so CI never passes by
silently skipping them.

Reuse from other test modules:

- `store_url`: parametrized over `sqlite` and `postgres` (the latter marked `postgres`);
- `pg_url`: a fresh PostgreSQL database URL, dropped afterwards (tests using it are marked
  `postgres` automatically);
- `sql_store`: an open `SqlStore` on `store_url`, closed afterwards;
- `postgres_url_or_skip()` / `drop_postgres_database(url)`: the same outside fixtures
  (import them from `tests.integration.conftest`); databases not dropped explicitly are dropped
  at the end of the session.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from fleet.store import SqlStore, open_store

_ADMIN_CANDIDATES = (
    "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    "postgresql+psycopg://root@127.0.0.1:5432/test",
    "postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
    "postgresql+psycopg://root@127.0.0.1:5432/postgres",
)
_CONNECT_TIMEOUT_S = 3

# The administrative URL that worked, or the reason none did; probed once per session.
_admin: URL | str | None = None
# Databases created by postgres_url_or_skip() and not dropped yet.
_created: set[str] = set()


def _in_ci() -> bool:
    return bool(os.environ.get("CI"))


def _admin_engine(url: URL) -> Engine:
    return create_engine(
        url,
        isolation_level="AUTOCOMMIT",
        poolclass=NullPool,
        connect_args={"connect_timeout": _CONNECT_TIMEOUT_S},
    )


def _find_admin_url() -> URL | str:
    """The first administrative URL that answers, or a description of every failure."""
    override = os.environ.get("FLEET_TEST_POSTGRES_URL")
    candidates = [override] if override else list(_ADMIN_CANDIDATES)
    failures = []
    for candidate in candidates:
        url = make_url(candidate)
        if url.drivername in ("postgresql", "postgres"):
            url = url.set(drivername="postgresql+psycopg")
        engine = _admin_engine(url)
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return url
        except SQLAlchemyError as exc:
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            failures.append(f"{url.render_as_string(hide_password=True)}: {reason}")
        finally:
            engine.dispose()
    return "; ".join(failures)


def _admin_url_or_skip() -> URL:
    global _admin
    if _admin is None:
        _admin = _find_admin_url()
    if isinstance(_admin, URL):
        return _admin
    message = f"no PostgreSQL server answered ({_admin})"
    if _in_ci():
        pytest.fail(f"{message}; CI is set, so PostgreSQL tests must run, not be skipped")
    pytest.skip(message)


def postgres_url_or_skip() -> str:
    """Create a fresh, uniquely named PostgreSQL database and return its SQLAlchemy URL.

    Skips the calling test when no server answers (fails it when `CI` is set). Drop the
    database with `drop_postgres_database(url)`; the `pg_url` fixture does that for you.
    """
    admin = _admin_url_or_skip()
    name = f"fleet_test_{uuid.uuid4().hex[:8]}"
    engine = _admin_engine(admin)
    try:
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    _created.add(name)
    return admin.set(database=name).render_as_string(hide_password=False)


def drop_postgres_database(url: str) -> None:
    """Drop the database named in `url` (made by `postgres_url_or_skip`), closing its sessions."""
    admin = _admin_url_or_skip()
    name = make_url(url).database
    if not name or not name.startswith("fleet_test_"):
        raise ValueError(f"refusing to drop {name!r}: not a throw-away test database")
    engine = _admin_engine(admin)
    try:
        with engine.connect() as conn:
            version = conn.execute(text("SHOW server_version_num")).scalar_one()
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )
            force = " WITH (FORCE)" if int(version) >= 130000 else ""
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"{force}'))
    finally:
        engine.dispose()
    _created.discard(name)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Drop throw-away databases that a test created but did not drop."""
    if not isinstance(_admin, URL):
        return
    for name in list(_created):
        url = _admin.set(database=name).render_as_string(hide_password=False)
        # Best effort: never turn a finished run into an error here.
        with contextlib.suppress(SQLAlchemyError):
            drop_postgres_database(url)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses `pg_url` as a `postgres` test (store_url marks its own param)."""
    for item in items:
        if "pg_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database URL, dropped after the test."""
    url = postgres_url_or_skip()
    try:
        yield url
    finally:
        drop_postgres_database(url)


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of an empty database: a SQLite file in tmp_path, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fleet.db'}"
        return
    url = postgres_url_or_skip()
    try:
        yield url
    finally:
        drop_postgres_database(url)


@pytest.fixture
def sql_store(store_url: str) -> Iterator[SqlStore]:
    """An open `SqlStore` on `store_url`, closed after the test."""
    store = open_store(store_url)
    try:
        yield store
    finally:
        store.close()

"""The custody book's working state in the service's database (table `custody_state`).

One row per key: `case:<id>` for each custody case, `stock` for the vault, and `meta` for the
rest (format, case counter, discrepancy index) plus `ledger_seq`, the ledger record the saved
state reflects (`fleet.custody.state` makes and reads the bodies). Bodies are JSON text;
`updated_at` is the save's time (float seconds since the epoch).

`save(changed, meta)` upserts the changed rows and the meta row in one transaction, so a state
in the database is always one the book was in. Unlike the ledger, rows are updated in place:
on PostgreSQL the application role needs SELECT, INSERT and UPDATE on this table.
`custody_orders(case_ids)` reads which fleet orders carried those cases (any state), so the
custody desk can rebuild its trips after a restart.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Column, Text, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlmodel import Field, SQLModel, col

from fleet.custody.state import META_KEY, dumps
from fleet.store.sql_store import create_store_engine
from fleet.store.tables import OrderRow

_RETRIES = 20
_CHUNK = 500


class CustodyStateRow(SQLModel, table=True):
    """One row of the custody book's saved state (table `custody_state`)."""

    __tablename__ = "custody_state"

    key: str = Field(primary_key=True)
    body: str = Field(sa_column=Column(Text, nullable=False))
    updated_at: float


_TABLE = CustodyStateRow.__table__  # type: ignore[attr-defined]


class CustodyStateStore:
    """Save and load the custody book's state on a SQLAlchemy engine (SQLite or PostgreSQL).

    One writer at a time (the service's single state writer); safe to read from any thread.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        SQLModel.metadata.create_all(engine, tables=[_TABLE])

    def save(
        self, changed: Mapping[str, Mapping[str, Any]], meta: Mapping[str, Any], at: float = 0.0
    ) -> None:
        """Upsert the `changed` rows and the meta row in one transaction (all or nothing)."""
        values = [{"key": k, "body": dumps(v), "updated_at": at} for k, v in changed.items()]
        values.append({"key": META_KEY, "body": dumps(meta), "updated_at": at})
        last: Exception | None = None
        for attempt in range(_RETRIES):
            try:
                with self.engine.begin() as conn:
                    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
                    for i in range(0, len(values), _CHUNK):
                        stmt = insert(_TABLE).values(values[i : i + _CHUNK])
                        stmt = stmt.on_conflict_do_update(
                            index_elements=[_TABLE.c.key],
                            set_={
                                "body": stmt.excluded.body,
                                "updated_at": stmt.excluded.updated_at,
                            },
                        )
                        conn.execute(stmt)
                return
            except OperationalError as exc:  # SQLite "database is locked" beyond its timeout
                if "locked" not in str(exc).lower() and "busy" not in str(exc).lower():
                    raise
                last = exc
            time.sleep(min(0.001 * 2**attempt, 0.1))
        raise RuntimeError(f"saving the custody state failed after {_RETRIES} attempts: {last}")

    def load(self) -> dict[str, Any] | None:
        """`{"meta": <meta row>, "rows": {key: body}}` (every other row), or None when no state
        was ever saved (no meta row)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(_TABLE.c.key, _TABLE.c.body)).all()
        found = {str(k): json.loads(b) for k, b in rows}
        meta = found.pop(META_KEY, None)
        if meta is None:
            return None
        return {"meta": meta, "rows": found}

    def custody_orders(self, case_ids: Sequence[str]) -> list[str]:
        """Ids of the fleet orders (any state) that carry one of `case_ids`, oldest first."""
        found: list[tuple[float, str]] = []
        ids = list(case_ids)
        with self.engine.connect() as conn:
            for i in range(0, len(ids), _CHUNK):
                rows = conn.execute(
                    select(col(OrderRow.created_at), col(OrderRow.id)).where(
                        col(OrderRow.custody_case).in_(ids[i : i + _CHUNK])
                    )
                ).all()
                found.extend((float(t), str(oid)) for t, oid in rows)
        return [oid for _, oid in sorted(found, key=lambda r: (r[0], _number(r[1]), r[1]))]

    def close(self) -> None:
        self.engine.dispose()


def _number(order_id: str) -> int:
    tail = order_id.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def open_custody_state(url: str) -> CustodyStateStore:
    """The custody state store at a database URL (the forms `fleet.store.open_store` takes);
    the table is created if missing."""
    return CustodyStateStore(create_store_engine(url))


__all__ = ["CustodyStateRow", "CustodyStateStore", "open_custody_state"]

"""Durable storage of fleet state: SQLModel tables and `SqlStore` (SQLite default, PostgreSQL).

`open_store(url)` opens the store at a database URL; nothing is opened at import time.
"""

from fleet.store.sql_store import SqlStore, create_store_engine, open_store

__all__ = ["SqlStore", "create_store_engine", "open_store"]

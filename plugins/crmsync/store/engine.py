"""The link store's SQLAlchemy engine, built from an ordinary Airflow Connection.

Task code must not touch Airflow's ORM (a real Airflow 3 worker forbids it, and the
configured ``sql_alchemy_conn`` is a dummy inside a task), so the store is reached
through a Connection (default ``crmsync_store``) that names the same database as
Airflow's metadata: SQLite for the embedded default, PostgreSQL in production.
"""

from __future__ import annotations

import functools
from typing import Any
from urllib.parse import quote

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine

DEFAULT_CONN_ID = "crmsync_store"


def url_from_connection(conn: Any) -> str:
    """SQLAlchemy URL for an Airflow Connection of type sqlite or postgres."""
    extra = conn.extra_dejson if hasattr(conn, "extra_dejson") else {}
    if extra.get("sqlalchemy_url"):
        return str(extra["sqlalchemy_url"])
    ctype = (conn.conn_type or "").lower()
    if ctype == "sqlite":
        path = conn.host or conn.schema
        if not path:
            raise ValueError("the crmsync_store connection (sqlite) needs the database path in host")
        return f"sqlite:///{path}"
    if ctype in ("postgres", "postgresql"):
        auth = ""
        if conn.login:
            auth = quote(conn.login, safe="")
            if conn.password:
                auth += ":" + quote(conn.password, safe="")
            auth += "@"
        port = f":{conn.port}" if conn.port else ""
        return f"postgresql+psycopg2://{auth}{conn.host or 'localhost'}{port}/{conn.schema or ''}"
    raise ValueError(
        f"the crmsync_store connection has type {conn.conn_type!r}; use sqlite or postgres "
        "(or set extra.sqlalchemy_url)"
    )


def engine_for_url(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


@functools.cache
def store_engine(conn_id: str = DEFAULT_CONN_ID) -> Engine:
    """Engine of the link store (cached per process)."""
    from airflow.sdk import BaseHook

    return engine_for_url(url_from_connection(BaseHook.get_connection(conn_id)))

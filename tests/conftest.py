"""Shared fixtures: a real PostgreSQL server and a fresh database per test.

``TEST_DATABASE_URL`` points the suite at an existing server (CI uses the machine's
PostgreSQL on 127.0.0.1:5432); unset, the suite starts the engine's own embedded
PostgreSQL once for the session, in a thread with its own Trio run, because pytest-trio
runs each test in a fresh ``trio.run``.
"""

from __future__ import annotations

import os
import queue
import shutil
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import trio
import trio_asyncio
from trio_asyncio import aio_as_trio

from engine.embedded_postgres import open_embedded_postgres


def _embedded_server() -> Iterator[str]:
    base = Path(tempfile.mkdtemp(prefix="afterhours-test-pg-", dir="/tmp"))
    base.chmod(0o755)  # the postgres system user must traverse it when we run as root
    dsn_queue: queue.Queue[str | BaseException] = queue.Queue()
    done = threading.Event()

    async def serve() -> None:
        try:
            async with open_embedded_postgres(base / "postgres") as server:
                dsn_queue.put(server.dsn)
                await trio.to_thread.run_sync(done.wait)
        except BaseException as exc:
            dsn_queue.put(exc)
            raise

    thread = threading.Thread(target=trio.run, args=(serve,), daemon=True)
    thread.start()
    try:
        result = dsn_queue.get(timeout=60)
        if isinstance(result, BaseException):
            raise result
        yield result
    finally:
        done.set()
        thread.join(timeout=30)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server_dsn() -> Iterator[str]:
    """A DSN for a database on a real server, used only to create test databases."""
    configured = os.environ.get("TEST_DATABASE_URL")
    if configured:
        yield configured
    else:
        yield from _embedded_server()


@pytest.fixture
def base_dir() -> Iterator[Path]:
    """A fresh directory under /tmp, mode 0755: the embedded PostgreSQL runs as the
    `postgres` user when the tests run as root, and must traverse it (pytest's tmp_path
    lives under a 0700 directory)."""
    path = Path(tempfile.mkdtemp(prefix="afterhours-test-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def aio_loop() -> AsyncIterator[None]:
    async with trio_asyncio.open_loop():
        yield


def with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture
async def fresh_database(postgres_server_dsn: str, aio_loop: None) -> AsyncIterator[str]:
    """A new, empty database for one test; dropped afterwards."""
    name = f"afterhours_test_{uuid.uuid4().hex[:12]}"
    admin = await aio_as_trio(asyncpg.connect)(postgres_server_dsn)
    try:
        await aio_as_trio(admin.execute)(f'CREATE DATABASE "{name}"')
        yield with_database(postgres_server_dsn, name)
        await aio_as_trio(admin.execute)(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await aio_as_trio(admin.close)()


# The suite in two halves (`make test-fast`, `make test-engine`; `make test` runs both).
# The engine half is every test that needs PostgreSQL (the database fixtures) or starts
# processes (the CLI, the embedded server, nginx, a browser); the fast half is the rest:
# pure functions, Trio's mock clock, and in-process sockets on 127.0.0.1 (under a minute).
# Besides the database fixtures: modules that start processes, or whose PostgreSQL stands
# in for an outage in real time (a frozen or stopped server, for seconds).
_ENGINE_MODULES = frozenset({
    "test_cli", "test_doctor", "test_embedded_postgres", "test_nginx", "test_dashboard",
    "test_simulated_caller", "test_postgres_supervision", "test_demo_scripts",
    "test_store_hang", "test_store_outage", "test_routing", "test_observability",
})  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = getattr(getattr(item, "module", None), "__name__", "").rsplit(".", 1)[-1]
        if "postgres_server_dsn" in getattr(item, "fixturenames", ()) or (
            module in _ENGINE_MODULES
        ):
            item.add_marker(pytest.mark.engine)

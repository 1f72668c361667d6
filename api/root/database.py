"""The engine's database: DATABASE_URL's server, or the embedded PostgreSQL, supervised."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from engine.logs import mask_secret
from engine.postgres_supervisor import RestartPolicy, SupervisedPostgres, open_supervised_postgres

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from engine.config import Settings

log = logging.getLogger("afterhours")


@dataclass(frozen=True, slots=True)
class EngineDatabase:
    dsn: str
    embedded: SupervisedPostgres | None  # None with DATABASE_URL: not ours to restart


# Module-level so that a test can make the embedded server give up in seconds.
EMBEDDED_POSTGRES_RESTARTS = RestartPolicy()


@asynccontextmanager
async def open_engine_database(
    settings: Settings, on_give_up: Callable[[], None]
) -> AsyncIterator[EngineDatabase]:
    """``DATABASE_URL`` when set; otherwise the engine's own PostgreSQL under DATA_DIR,
    restarted when it dies; ``on_give_up`` is called if it keeps dying."""
    if settings.database_url is not None:
        yield EngineDatabase(settings.database_url, None)
        return
    async with open_supervised_postgres(
        settings.data_dir / "postgres",
        on_give_up=on_give_up,
        policy=EMBEDDED_POSTGRES_RESTARTS,
    ) as server:
        mask_secret(urlsplit(server.dsn).password or "")
        log.info("embedded PostgreSQL on 127.0.0.1:%d (data in %s)", server.port, server.data_dir)
        yield EngineDatabase(server.dsn, server)

"""Schema migrations: numbered SQL files applied at start, once, in order.

Files are ``sql/NNNN_name.sql``. All pending files are applied in one transaction under a
transaction-scoped advisory lock, so two engines starting together serialise: the second
waits, then finds nothing left to do. Each applied file is recorded with a checksum; an
applied file that was edited afterwards stops the engine (the schema and the code would
disagree silently otherwise).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from engine.errors import StartupError

if TYPE_CHECKING:
    from actors.store.db import Connection, Database

SQL_DIR = Path(__file__).parent / "sql"
MIGRATION_TIMEOUT_S = 120.0
# An arbitrary constant shared by every afterhours engine: "afth" in ASCII.
ADVISORY_LOCK_KEY = 0x61667468

_FILE_NAME = re.compile(r"(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql")

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer     PRIMARY KEY,
    name        text        NOT NULL,
    checksum    text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(StartupError):
    pass


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Path = SQL_DIR) -> list[Migration]:
    """The migration files in version order; numbering must run 1, 2, 3... without gaps."""
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_NAME.fullmatch(path.name)
        if match is None:
            raise MigrationError(f"migration file {path.name!r} is not named NNNN_name.sql")
        sql = path.read_text(encoding="utf-8")
        migrations.append(Migration(int(match["version"]), match["name"], sql))
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise MigrationError(f"migration versions must run 1..N without gaps, found {versions}")
    return migrations


async def apply_migrations(database: Database, migrations: list[Migration]) -> list[int]:
    """Apply what is pending; return the versions this call applied (empty if none)."""

    async def unit(connection: Connection) -> list[int]:
        await connection.execute("SELECT pg_advisory_xact_lock($1)", ADVISORY_LOCK_KEY)
        await connection.execute(_CREATE_TABLE)
        rows = await connection.fetch("SELECT version, name, checksum FROM schema_migrations")
        applied = {row["version"]: row["checksum"] for row in rows}
        _check_unchanged(migrations, applied)
        done = []
        for migration in migrations:
            if migration.version in applied:
                continue
            await connection.execute(migration.sql)
            await connection.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                migration.checksum,
            )
            done.append(migration.version)
        return done

    return await database.transaction(unit, timeout_s=MIGRATION_TIMEOUT_S)


def _check_unchanged(migrations: list[Migration], applied: dict[int, str]) -> None:
    for migration in migrations:
        checksum = applied.get(migration.version)
        if checksum is not None and checksum != migration.checksum:
            raise MigrationError(
                f"migration {migration.version:04d}_{migration.name}.sql was edited after it "
                "was applied to this database; add a new migration instead"
            )

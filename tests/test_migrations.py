"""Migrations against a real PostgreSQL: once, in order, idempotent, race-free."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from actors.store.db import open_database
from actors.store.migrations import (
    Migration,
    MigrationError,
    apply_migrations,
    load_migrations,
)

CONNECT_S = 10.0


async def test_migrations_apply_once_and_twice_is_a_no_op(fresh_database: str) -> None:
    migrations = load_migrations()
    async with open_database(fresh_database, connect_timeout_s=CONNECT_S) as db:
        first = await apply_migrations(db, migrations)
        second = await apply_migrations(db, migrations)
        recorded = await db.fetch(
            "SELECT version, checksum FROM schema_migrations ORDER BY version", timeout_s=5
        )
        has_event_log = await db.fetchval(
            "SELECT to_regclass('event_log') IS NOT NULL", timeout_s=5
        )
    assert first == [m.version for m in migrations]
    assert second == []
    assert [(r["version"], r["checksum"]) for r in recorded] == [
        (m.version, m.checksum) for m in migrations
    ]
    assert has_event_log


async def test_two_engines_starting_together_apply_each_migration_once(
    fresh_database: str,
) -> None:
    migrations = load_migrations()
    results: list[list[int]] = []

    async def engine_start() -> None:
        async with open_database(fresh_database, connect_timeout_s=CONNECT_S) as db:
            results.append(await apply_migrations(db, migrations))

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(engine_start)
    # Exactly one starter applied everything; the others waited on the lock, then saw it done.
    assert sorted(results, key=len) == [[], [], [], [m.version for m in migrations]]


async def test_an_edited_applied_migration_stops_the_engine(fresh_database: str) -> None:
    original = Migration(1, "things", "CREATE TABLE things (id int)")
    edited = Migration(1, "things", "CREATE TABLE things (id bigint)")
    async with open_database(fresh_database, connect_timeout_s=CONNECT_S) as db:
        await apply_migrations(db, [original])
        with pytest.raises(
            MigrationError, match=r"0001_things\.sql was edited after it was applied"
        ):
            await apply_migrations(db, [edited])


async def test_a_failing_migration_applies_nothing(fresh_database: str) -> None:
    good = Migration(1, "good", "CREATE TABLE good (id int)")
    bad = Migration(2, "bad", "CREATE TABLE broken (id no_such_type)")
    async with open_database(fresh_database, connect_timeout_s=CONNECT_S) as db:
        with pytest.raises(Exception, match="no_such_type"):
            await apply_migrations(db, [good, bad])
        # One transaction: the good one was rolled back with the bad one.
        assert await db.fetchval("SELECT to_regclass('good') IS NULL", timeout_s=5)


def test_migration_files_must_be_numbered_without_gaps(tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("select 1")
    (tmp_path / "0003_c.sql").write_text("select 1")
    with pytest.raises(MigrationError, match=r"without gaps, found \[1, 3\]"):
        load_migrations(tmp_path)


def test_migration_file_names_are_checked(tmp_path: Path) -> None:
    (tmp_path / "1_a.sql").write_text("select 1")
    with pytest.raises(MigrationError, match=r"not named NNNN_name\.sql"):
        load_migrations(tmp_path)


async def test_unreachable_database_is_one_clear_startup_error(aio_loop: None) -> None:
    from engine.errors import StartupError

    with pytest.raises(StartupError) as caught:
        async with open_database("postgresql://app:s3cret-pw@127.0.0.1:1/app", connect_timeout_s=5):
            pass
    message = str(caught.value)
    assert message.startswith("cannot reach the database at postgresql://app:***@127.0.0.1:1/app")
    assert "s3cret-pw" not in message


async def test_the_model_migration_adds_the_column_and_stores_languages_as_iso_639_1(
    fresh_database: str,
) -> None:
    migrations = load_migrations()
    model_migration = next(m for m in migrations if m.name == "project_model")
    before = [m for m in migrations if m.version < model_migration.version]
    async with open_database(fresh_database, connect_timeout_s=CONNECT_S) as db:
        await apply_migrations(db, before)
        for project_id, language in (("us-shop", "en-US"), ("fr-shop", "fr"), ("pt-shop", "pt-BR")):
            await db.execute(
                "INSERT INTO projects (id, name, timezone, language) VALUES ($1, 'n', 'UTC', $2)",
                project_id,
                language,
                timeout_s=5,
            )
        await apply_migrations(db, migrations)
        rows = await db.fetch("SELECT id, language, model FROM projects ORDER BY id", timeout_s=5)
    assert [(r["id"], r["language"], r["model"]) for r in rows] == [
        ("fr-shop", "fr", None),
        ("pt-shop", "pt", None),
        ("us-shop", "en", None),
    ]

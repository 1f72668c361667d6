"""The spool on its own: append, replay in order, survive torn writes and restarts."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from actors.store.spool import Spool
from engine.messages import CallUpdated, EventLogWritten, StoreWrite


def event(n: int) -> EventLogWritten:
    return EventLogWritten(
        event_id=f"00000000-0000-0000-0000-{n:012d}",
        timestamp=datetime(2026, 11, 26, tzinfo=UTC),
        level="info",
        type="test",
        message=f"event {n}",
    )


def replay_all(spool: Spool, chunk: int = 3) -> list[StoreWrite]:
    replayed: list[StoreWrite] = []
    while spool.pending:
        part = spool.peek(chunk)
        replayed.extend(part.records)
        spool.commit(part)
    return replayed


def test_records_come_back_in_order_with_their_types(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    records: list[StoreWrite] = [event(1), CallUpdated("CA1", status="completed"), event(2)]
    spool.append(records)
    spool.append([event(3)])
    assert spool.pending == 4
    assert replay_all(spool, chunk=2) == [*records, event(3)]
    assert spool.pending == 0
    assert (tmp_path / "records.jsonl").stat().st_size == 0  # emptied once all replayed


def test_a_restart_resumes_at_the_cursor(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append([event(n) for n in range(5)])
    spool.commit(spool.peek(2))
    spool.close()
    reopened = Spool(tmp_path)
    assert reopened.pending == 3
    assert replay_all(reopened) == [event(2), event(3), event(4)]


def test_a_torn_last_line_is_cut_and_earlier_records_kept(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append([event(1), event(2)])
    spool.close()
    with open(tmp_path / "records.jsonl", "ab") as file:
        file.write(b'{"record":"event_log","event_id":"0000')  # a crash mid-append
    reopened = Spool(tmp_path)
    assert reopened.pending == 2
    assert replay_all(reopened) == [event(1), event(2)]


def test_an_undecodable_line_is_kept_aside_not_lost(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append([event(1)])
    spool.close()
    with open(tmp_path / "records.jsonl", "ab") as file:
        file.write(b'{"record":"mystery"}\n')
    reopened = Spool(tmp_path)
    reopened.append([event(2)])
    assert replay_all(reopened) == [event(1), event(2)]
    assert reopened.statistics().rejected_total == 1
    assert '"line":"{\\"record\\":\\"mystery\\"}' in (tmp_path / "rejected.jsonl").read_text()


def test_statistics_report_backlog_and_the_largest_spool(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append([event(n) for n in range(10)])
    stats = spool.statistics()
    assert (stats.pending_records, stats.appended_total) == (10, 10)
    assert stats.pending_bytes == (tmp_path / "records.jsonl").stat().st_size
    replay_all(spool)
    stats = spool.statistics()
    assert (stats.pending_records, stats.replayed_total, stats.largest_backlog_records) == (
        0,
        10,
        10,
    )


def test_a_record_longer_than_the_read_window_round_trips(tmp_path: Path) -> None:
    long_transcript = [{"role": "caller", "text": "x" * (3 << 20)}]  # 3 MiB: a very long call
    records: list[StoreWrite] = [event(1), CallUpdated("CA1", transcript=long_transcript)]
    spool = Spool(tmp_path)
    spool.append(records)
    spool.close()
    with open(tmp_path / "records.jsonl", "ab") as file:
        file.write(b'{"record":"call","call_sid":"' + b"y" * (2 << 20))  # a torn, long append
    reopened = Spool(tmp_path)
    assert reopened.pending == 2
    assert replay_all(reopened) == records


def test_a_cursor_past_the_end_starts_from_the_beginning(tmp_path: Path) -> None:
    (tmp_path / "cursor").write_text("999999")  # a crash between truncate and cursor reset
    spool = Spool(tmp_path)
    spool.append([event(1)])
    assert replay_all(spool) == [event(1)]


def test_metadata_the_database_takes_as_text_is_spooled_as_text(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    record = EventLogWritten(
        event_id="00000000-0000-0000-0000-000000000001",
        timestamp=datetime(2026, 11, 26, tzinfo=UTC),
        level="info",
        type="test",
        message="m",
        metadata={"where": tmp_path},
    )
    spool.append([record])
    (replayed,) = replay_all(spool)
    assert isinstance(replayed, EventLogWritten)
    assert replayed.metadata == {"where": str(tmp_path)}


def test_an_undecodable_line_is_rejected_once_however_often_it_is_read(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.close()
    (tmp_path / "records.jsonl").write_bytes(b'{"record":"mystery"}\n')
    reopened = Spool(tmp_path)
    reopened.peek(10)
    reopened.peek(10)  # a replay that failed and is tried again
    assert reopened.statistics().rejected_total == 1
    assert len((tmp_path / "rejected.jsonl").read_text().splitlines()) == 1

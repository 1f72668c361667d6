"""The store's append-only spool: records that could not reach PostgreSQL yet.

Layout under ``DATA_DIR/spool/``:

* ``records.jsonl``: one JSON record per line (msgspec, tagged), appended and fsync'd
  before ``append`` returns, so a record handed to the spool survives a crash or a kill.
* ``cursor``: the byte offset up to which records have been written to PostgreSQL,
  replaced atomically (write, fsync, rename). Replay resumes there after a restart; a
  crash between a replayed batch and its cursor update replays that batch again, which
  the store's idempotent writes absorb.
* ``rejected.jsonl``: records PostgreSQL refused as invalid (not merely unreachable),
  each with the error, kept for an operator instead of being dropped or retried forever.

When the cursor reaches the end of the file, both are reset to empty. A torn last line
(a crash in the middle of an append) is cut off when the spool is opened: its append
never returned, so nobody was told it was safe.

This is synchronous file I/O on purpose: appends are small, happen only while the
database is away, and a synchronous append can run in cleanup code that is being
cancelled.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec

from engine.durable_files import fsync_directory, replace_atomically
from engine.messages import StoreWrite

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

# enc_hook=str like the database writer: metadata the database would take as text must
# not become unspoolable during an outage.
_encoder = msgspec.json.Encoder(enc_hook=str)
READ_CHUNK_BYTES = 1 << 20
_decoder: msgspec.json.Decoder[StoreWrite] = msgspec.json.Decoder(StoreWrite)


@dataclass(frozen=True, slots=True)
class SpoolChunk:
    records: list[StoreWrite]
    end_offset: int
    lines: int  # records plus undecodable lines moved to rejected.jsonl


@dataclass(frozen=True, slots=True)
class SpoolStatistics:
    pending_records: int
    pending_bytes: int
    appended_total: int
    replayed_total: int
    rejected_total: int
    largest_backlog_records: int


class Spool:
    def __init__(self, directory: Path) -> None:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._records_path = directory / "records.jsonl"
        self._cursor_path = directory / "cursor"
        self._rejected_path = directory / "rejected.jsonl"
        self._fd = os.open(self._records_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fsync_directory(directory)  # the new file's name is durable too
        self._cursor = self._read_cursor()
        self._cut_torn_tail()
        self._size = os.fstat(self._fd).st_size  # kept in step by append and commit
        self._pending_records = self._count_pending()
        self._appended_total = 0
        self._replayed_total = 0
        self._rejected_total = 0
        self._largest_backlog = self._pending_records
        self._rejected_lines: set[int] = set()  # end offsets of lines already rejected

    # -- writing ---------------------------------------------------------------------------

    def append(self, records: Iterable[StoreWrite]) -> None:
        """Append and fsync; returns only once the records are on disk."""
        lines = [_encoder.encode(record) + b"\n" for record in records]
        if not lines:
            return
        data = b"".join(lines)
        written = 0
        while written < len(data):
            written += os.pwrite(self._fd, data[written:], self._size + written)
        os.fsync(self._fd)
        self._size += len(data)
        self._pending_records += len(lines)
        self._appended_total += len(lines)
        self._largest_backlog = max(self._largest_backlog, self._pending_records)

    def reject(self, record: StoreWrite, error: str) -> None:
        """Keep a record PostgreSQL refused, with the reason, out of the replay path."""
        entry = _encoder.encode({"error": error, "record": record}) + b"\n"
        with open(self._rejected_path, "ab") as rejected:
            rejected.write(entry)
            rejected.flush()
            os.fsync(rejected.fileno())
        self._rejected_total += 1

    # -- replaying -------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        return self._pending_records

    def peek(self, max_records: int) -> SpoolChunk:
        """Up to ``max_records`` records from the cursor on, and where they end. A line
        that does not decode is moved to ``rejected.jsonl`` (once; never silently lost)."""
        offset = self._cursor
        lines = 0
        records: list[StoreWrite] = []
        window = READ_CHUNK_BYTES
        while offset < self._size and len(records) < max_records:
            data = os.pread(self._fd, min(window, self._size - offset), offset)
            start = 0
            while len(records) < max_records and (end := data.find(b"\n", start)) >= 0:
                line = data[start : end + 1]
                start = end + 1
                offset += len(line)
                lines += 1
                self._decode_into(records, line, offset)
            if start == 0:  # no complete line in the window
                if offset + len(data) >= self._size:
                    break  # only an unfinished tail is left
                window *= 2  # a record longer than the window (a long transcript)
            else:
                window = READ_CHUNK_BYTES
        return SpoolChunk(records, offset, lines)

    def _decode_into(self, records: list[StoreWrite], line: bytes, end_offset: int) -> None:
        try:
            records.append(_decoder.decode(line))
        except msgspec.DecodeError as exc:
            if end_offset not in self._rejected_lines:
                self._rejected_lines.add(end_offset)
                self._reject_line(line, str(exc))

    def commit(self, chunk: SpoolChunk) -> None:
        """The chunk's records are in PostgreSQL. When all are, start afresh."""
        self._replayed_total += len(chunk.records)
        if chunk.end_offset >= self._size:
            os.ftruncate(self._fd, 0)
            os.fsync(self._fd)
            self._size = 0
            self._write_cursor(0)
            self._pending_records = 0
            return
        self._write_cursor(chunk.end_offset)
        self._pending_records = max(0, self._pending_records - chunk.lines)

    def statistics(self) -> SpoolStatistics:
        return SpoolStatistics(
            pending_records=self._pending_records,
            pending_bytes=max(0, self._size - self._cursor),
            appended_total=self._appended_total,
            replayed_total=self._replayed_total,
            rejected_total=self._rejected_total,
            largest_backlog_records=self._largest_backlog,
        )

    def close(self) -> None:
        os.close(self._fd)

    # -- internals -------------------------------------------------------------------------

    def _read_cursor(self) -> int:
        try:
            cursor = int(self._cursor_path.read_text().strip() or 0)
        except FileNotFoundError:
            return 0
        # A crash between truncating the file and resetting the cursor leaves it past the end.
        return cursor if cursor <= os.fstat(self._fd).st_size else 0

    def _write_cursor(self, offset: int) -> None:
        replace_atomically(self._cursor_path, str(offset).encode())
        self._cursor = offset

    def _cut_torn_tail(self) -> None:
        """Drop bytes after the last newline (an append that never returned)."""
        size = os.fstat(self._fd).st_size
        end = size
        while end > 0:
            start = max(0, end - READ_CHUNK_BYTES)
            last_newline = os.pread(self._fd, end - start, start).rfind(b"\n")
            if last_newline >= 0:
                end = start + last_newline + 1
                break
            end = start
        if end < size:
            os.ftruncate(self._fd, end)
            os.fsync(self._fd)

    def _count_pending(self) -> int:
        count = 0
        offset = self._cursor
        size = os.fstat(self._fd).st_size
        while offset < size:
            chunk = os.pread(self._fd, min(size - offset, READ_CHUNK_BYTES), offset)
            count += chunk.count(b"\n")
            offset += len(chunk)
        return count

    def _reject_line(self, line: bytes, error: str) -> None:
        entry = _encoder.encode({"error": error, "line": line.decode(errors="replace")})
        with open(self._rejected_path, "ab") as rejected:
            rejected.write(entry + b"\n")
            rejected.flush()
            os.fsync(rejected.fileno())
        self._rejected_total += 1

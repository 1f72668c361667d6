"""Faults on a live call, through the real path: a model that never answers its
handshake, an oversized frame from Twilio, a model session reaching its cap, and a model
whose every handshake fails."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import pytest
import trio

from actors.store.db import open_database
from tests.function_backend import TwilioRestStandIn
from tests.helpers import ADMIN_TOKEN, TWILIO_AUTH_TOKEN, http_request, running_engine, sid
from tests.test_call_e2e import answered_call, open_stream, wait_for_final
from tests.test_twilio_webhooks import ANSWERED, call, twilio_post

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

ON_CALL_PROJECT: dict[str, Any] = {
    "id": "smith-plumbing",
    "name": "Smith Plumbing",
    "timezone": "America/Chicago",
    "onCallNumber": "+15551234567",
}
PLAIN_PROJECT: dict[str, Any] = {
    "id": "smith-plumbing",
    "name": "Smith Plumbing",
    "timezone": "America/Chicago",
}


async def serve_model_endpoint(
    handle: Callable[[trio.SocketStream], Awaitable[None]], *, task_status: trio.TaskStatus[str]
) -> None:
    """A TCP listener on a free loopback port, started with its ws:// realtime URL."""
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        task_status.started(f"ws://127.0.0.1:{port}/v1/realtime")


@dataclass
class SilentServer:
    """Accepts TCP connections and never answers (a model stuck before its handshake);
    notes whether each connection was later closed by the other side."""

    accepted: int = 0
    closed_by_peer: int = 0
    _done: list[trio.Event] = field(default_factory=list)

    async def serve(self, *, task_status: trio.TaskStatus[str]) -> None:
        await serve_model_endpoint(self._handle, task_status=task_status)

    async def _handle(self, stream: trio.SocketStream) -> None:
        self.accepted += 1
        async with stream:
            while await stream.receive_some(65536):
                pass  # read the upgrade request, answer nothing
            self.closed_by_peer += 1


async def event_log(dsn: str, call_sid: str) -> list[tuple[str, str]]:
    async with open_database(dsn, connect_timeout_s=5) as db:
        rows = await db.fetch(
            "SELECT type, message FROM event_log WHERE call_sid = $1 ORDER BY ts",
            call_sid,
            timeout_s=5,
        )
    return [(row["type"], row["message"]) for row in rows]


async def test_a_model_that_never_answers_the_handshake_ends_the_call_politely(
    fresh_database: str, tmp_path: Path
) -> None:
    silent, twilio = SilentServer(), TwilioRestStandIn()
    account = "AC" + "cd" * 16
    async with trio.open_nursery() as nursery:
        model_url = await nursery.start(silent.serve)
        rest_url = await nursery.start(twilio.serve)
        async with running_engine(
            fresh_database,
            tmp_path,
            MEDIA_PORT="0",
            OPENAI_API_KEY="sk-test-never-answers",
            OPENAI_REALTIME_URL=model_url,
            MODEL_CONNECT_TIMEOUT_S="0.5",
            TWILIO_ACCOUNT_SID=account,
            TWILIO_API_BASE_URL=rest_url,
        ) as engine:
            peer, parameters = await answered_call(engine, ON_CALL_PROJECT, sid(950))
            with trio.fail_after(20):
                await peer.start(parameters)
                record = await wait_for_final(fresh_database, sid(950))
                await peer.aclose()
                while engine.calls.statistics().active:  # noqa: ASYNC110
                    await trio.sleep(0.02)
                alerts = await event_log(fresh_database, sid(950))
                health = await http_request("GET", f"{engine.bound_urls[0]}/health")
        # Every connection the engine opened (early and at the stream start) was closed.
        with trio.fail_after(5):
            while silent.closed_by_peer < silent.accepted:  # noqa: ASYNC110
                await trio.sleep(0.02)
        nursery.cancel_scope.cancel()
    assert silent.accepted >= 2  # the early attempt at webhook time, then the call's own
    assert (record["status"], record["end_reason"]) == ("failed", "model_unreachable")
    assert record["error"].startswith("model_unreachable: ")
    assert health.status == 200
    assert ("openaiError", "Model unreachable: no answer within 0.5 s") in alerts
    # The caller heard an apology and was put through to the on-call technician.
    (update,) = twilio.received
    assert update.path == f"/2010-04-01/Accounts/{account}/Calls/{sid(950)}.json"
    twiml = parse_qs(update.body.decode())["Twiml"][0]
    assert "our assistant is not available right now" in twiml
    assert '<Dial timeout="30">+15551234567</Dial>' in twiml
    assert TWILIO_AUTH_TOKEN not in repr(alerts)


async def test_an_oversized_twilio_frame_ends_the_call_as_failed_and_closes_the_model(
    fresh_database: str, tmp_path: Path
) -> None:
    async with running_engine(fresh_database, tmp_path, MEDIA_PORT="0") as engine:
        peer, parameters = await answered_call(engine, PLAIN_PROJECT, sid(951))
        assert engine.simulated_model is not None
        with trio.fail_after(20):
            await peer.start(parameters)
            await peer.listen(until_silent_s=1.0)
            # A well-formed frame, of twice MAX_TWILIO_MESSAGE_BYTES.
            await peer.send(peer.frames.media(b"A" * (128 * 1024)))
            record = await wait_for_final(fresh_database, sid(951))
            while engine.simulated_model.statistics().sessions_open:  # noqa: ASYNC110
                await trio.sleep(0.02)
            await peer.aclose()
            health = await http_request("GET", f"{engine.bound_urls[0]}/health")
    assert record["status"] == "failed"
    assert record["end_reason"].startswith("twilio_stream_error: 1009")
    transcript = json.loads(record["transcript"])
    assert transcript[0]["role"] == "assistant"  # what happened before is kept
    assert health.status == 200
    assert health.json()["activeSessions"] == 0


async def test_model_session_max_s_reaches_the_calls_the_media_server_starts(
    fresh_database: str, tmp_path: Path
) -> None:
    """Only the setting's path through the whole engine: the renewal itself (when, with
    the conversation, every turn still answered) is tested under the mock clock
    (test_call_clock.py), where a cap costs no real seconds; this one costs about 5.5 s.
    Without the setting, the default 1 h cap would leave the server to expire the session."""
    async with running_engine(
        fresh_database, tmp_path, MEDIA_PORT="0", MODEL_SESSION_MAX_S="6"
    ) as engine:
        model = engine.simulated_model
        assert model is not None
        model.session_max_s = 6.0  # the server ends sessions at 6 s; the engine renews first
        peer, parameters = await answered_call(engine, PLAIN_PROJECT, sid(952))
        with trio.fail_after(30):
            await peer.start(parameters)
            while model.statistics().sessions_total < 2:
                await peer.listen(until_silent_s=0.2)
            await peer.hang_up()
            record = await wait_for_final(fresh_database, sid(952))
            await peer.aclose()
    assert model.statistics().sessions_expired == 0  # renewed before the server's cap
    assert model.statistics().sessions_total == 2
    assert (record["status"], record["end_reason"]) == ("completed", "caller_hung_up")


@dataclass
class RudeServer:
    """A model endpoint whose every handshake fails one way: ``reset`` (reads the upgrade
    request, then resets the connection), ``eof`` (closes it cleanly), ``http500`` (a
    plain HTTP error) or ``garbage`` (bytes that are not HTTP)."""

    manner: str
    accepted: int = 0

    async def serve(self, *, task_status: trio.TaskStatus[str]) -> None:
        await serve_model_endpoint(self._handle, task_status=task_status)

    async def _handle(self, stream: trio.SocketStream) -> None:
        self.accepted += 1
        await stream.receive_some(65536)  # the upgrade request
        if self.manner == "reset":  # SO_LINGER 0: close sends RST, not FIN
            stream.socket.setsockopt(
                trio.socket.SOL_SOCKET, trio.socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
        elif self.manner == "http500":
            await stream.send_all(
                b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n"
            )
        elif self.manner == "garbage":
            await stream.send_all(b"\x00\xff not http at all\r\n\r\n")
        await stream.aclose()


@pytest.mark.parametrize("manner", ["reset", "eof", "http500", "garbage"])
async def test_a_model_whose_every_handshake_fails_never_takes_the_engine_down(
    manner: str, fresh_database: str, tmp_path: Path
) -> None:
    """More failing calls than the supervisor's restart intensity (3 in 60 s): each ends
    failed/model_unreachable with a final record, nothing crashes or restarts, and the
    engine goes on answering."""
    rude = RudeServer(manner)
    calls = [sid(960 + n) for n in range(5)]
    async with trio.open_nursery() as nursery:
        model_url = await nursery.start(rude.serve)
        async with running_engine(
            fresh_database,
            tmp_path,
            MEDIA_PORT="0",
            OPENAI_API_KEY="sk-test-rude",
            OPENAI_REALTIME_URL=model_url,
            MODEL_CONNECT_TIMEOUT_S="2",
        ) as engine:
            base = engine.bound_urls[0] + "/admin/projects"
            created = await http_request("POST", base, json=PLAIN_PROJECT, token=ADMIN_TOKEN)
            assert created.status == 201
            number = {"number": ANSWERED}
            added = await http_request(
                "POST", f"{base}/smith-plumbing/phone-numbers", json=number, token=ADMIN_TOKEN
            )
            assert added.status == 201
            records = []
            with trio.fail_after(60):
                for call_sid in calls:
                    twiml = await twilio_post(engine, "/twilio/voice", call(call_sid, ANSWERED))
                    peer, parameters = await open_stream(twiml.body.decode(), call_sid)
                    await peer.start(parameters)
                    records.append(await wait_for_final(fresh_database, call_sid))
                    await peer.aclose()
            restarts = engine.supervisor.statistics().restarts_total
            health = await http_request("GET", f"{engine.bound_urls[0]}/health")
        nursery.cancel_scope.cancel()
    assert rude.accepted >= len(calls)
    assert [(r["status"], r["end_reason"]) for r in records] == [
        ("failed", "model_unreachable")
    ] * len(calls)
    assert restarts == 0
    assert health.status == 200

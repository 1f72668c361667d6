"""The media port's limits: connection caps, what a stream may do before ``start``, ping
floods, and the refusals counted for each; live calls keep their audio throughout.

The whole engine on real sockets on 127.0.0.1, a simulated model answering; where a
time budget is the subject, ``_read_start`` alone under the mock clock."""

from __future__ import annotations

import base64
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from twilio.request_validator import RequestValidator

from api import media_server
from api.media_server import MAX_UNSENT_BYTES, START_TIMEOUT_S, media_connection_caps
from api.root.engine import Engine
from engine.simulator.mulaw import silence, tone
from engine.simulator.twilio_frames import TwilioFrames
from engine.simulator.twilio_peer import TwilioPeer
from engine.ws import HandshakeFailed, WebSocket, WebSocketClosed
from tests.helpers import ADMIN_TOKEN, TWILIO_AUTH_TOKEN, http_request, running_engine, sid
from tests.test_call_e2e import STREAM_SID, open_stream, wait_for_final
from tests.test_media_server import params, stream_to
from tests.test_twilio_webhooks import ANSWERED, call, setup_project, twilio_post
from tests.test_ws import memory_pair, send_frames

# Masked, empty pings (6 bytes each): the cheapest frame there is, each asking for a pong.
PINGS = bytes([0x89, 0x80, 0, 0, 0, 0]) * 10_000
# Frames wrong on purpose, so written by hand: a connected padded past the size allowed
# before start, and a media frame without its media.
PADDED_CONNECTED = b'{"event":"connected","protocol":"Call","pad":"' + b"x" * 20_000 + b'"}'
MEDIA_WITHOUT_MEDIA = b'{"event":"media","streamSid":"' + STREAM_SID.encode() + b'","media":{}}'


async def raw_upgrade(engine: Engine, path: str = "/twilio/media") -> trio.SocketStream:
    """A signed WebSocket upgrade done by hand: the response head is read, then nothing
    more (a client that never reads a pong)."""
    url = engine.media.public_url
    signature = RequestValidator(TWILIO_AUTH_TOKEN).compute_signature(url, {})
    stream = await trio.open_tcp_stream("127.0.0.1", engine.media.bound_port)
    key = base64.b64encode(os.urandom(16)).decode()
    await stream.send_all(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"X-Twilio-Signature: {signature}\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head and (chunk := await stream.receive_some(1)):
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        await stream.aclose()
        raise AssertionError(f"upgrade refused: {head!r}")
    return stream


async def flood_until_closed(stream: trio.SocketStream) -> int:
    """Pings, never reading, until the engine closes the connection; the bytes sent."""
    sent = 0
    try:
        while True:
            await stream.send_all(PINGS)
            sent += len(PINGS)
    except trio.BrokenResourceError:
        return sent
    finally:
        await stream.aclose()


async def closed_by_engine(stream: trio.SocketStream) -> None:
    """Returns once the engine has closed the connection (EOF or reset)."""
    try:
        while await stream.receive_some(65536):
            pass
    except trio.BrokenResourceError:
        pass


def media_refusals(engine: Engine) -> dict[str, int]:
    return {r: n for (edge, r), n in engine.refusals.statistics().items() if edge == "media"}


async def wait_until(condition: Any) -> None:
    while not condition():  # noqa: ASYNC110 - the engine's own state, polled briefly
        await trio.sleep(0.01)


async def test_over_the_cap_connections_are_refused_at_once_while_a_live_call_keeps_its_audio(
    fresh_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(media_server, "HANDSHAKE_TIMEOUT_S", 60.0)  # strangers stay put
    max_open, max_pending = media_connection_caps(1)
    overrides = {"MEDIA_PORT": "0", "MAX_CONCURRENT_CALLS": "1"}
    async with running_engine(fresh_database, tmp_path, **overrides) as engine:
        await setup_project(engine)
        twiml = await twilio_post(engine, "/twilio/voice", call(sid(810), ANSWERED))
        peer, parameters = await open_stream(twiml.body.decode(), sid(810))
        with trio.fail_after(30):
            await peer.start(parameters)
            greeting = await peer.listen(until_silent_s=1.0)
            # Silent strangers take every other slot: the pending ones.
            port = engine.media.bound_port
            strangers = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(16)]
            await wait_until(lambda: engine.media.statistics().connections.open == max_open)
            over = await trio.open_tcp_stream("127.0.0.1", port)
            await closed_by_engine(over)  # at once, with nothing read
            await over.aclose()
            assert media_refusals(engine) == {"too_many_connections": 1}
            # The live call was never at risk: it speaks and is answered.
            await peer.speak(silence(100) + tone(400) + silence(700))
            answer = await peer.listen(until_silent_s=1.0)
            await peer.hang_up()
            await peer.aclose()
            record = await wait_for_final(fresh_database, sid(810))
            stats = engine.media.statistics().connections
            for stranger in strangers:
                await stranger.aclose()
    assert max_pending == 16
    assert (stats.peak_open, stats.evicted_total) == (max_open, 0)
    assert any(e["event"] == "media" for e in greeting)
    assert any(e["event"] == "media" for e in answer)
    assert (record["status"], record["end_reason"]) == ("completed", "caller_hung_up")


async def test_slow_strangers_in_every_pending_slot_do_not_keep_a_signed_call_out(
    fresh_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A slowloris: half an upgrade request, and the rest never comes. Its handshake
    # budget is made long here so that only the pending cap's eviction can make room.
    monkeypatch.setattr(media_server, "HANDSHAKE_TIMEOUT_S", 60.0)
    _, max_pending = media_connection_caps(1)
    overrides = {"MEDIA_PORT": "0", "MAX_CONCURRENT_CALLS": "1"}
    async with running_engine(fresh_database, tmp_path, **overrides) as engine:
        await setup_project(engine)
        port = engine.media.bound_port
        strangers = []
        for _ in range(max_pending):
            stranger = await trio.open_tcp_stream("127.0.0.1", port)
            await stranger.send_all(b"GET /twilio/media HTTP/1.1\r\nHost: x\r\n")
            strangers.append(stranger)
        await wait_until(lambda: engine.media.statistics().connections.pending == max_pending)
        twiml = await twilio_post(engine, "/twilio/voice", call(sid(811), ANSWERED))
        peer, parameters = await open_stream(twiml.body.decode(), sid(811))
        with trio.fail_after(30):
            await peer.start(parameters)
            greeting = await peer.listen(until_silent_s=1.0)
            await closed_by_engine(strangers[0])  # the oldest stranger made room
            stats = engine.media.statistics().connections
            await peer.hang_up()
            await peer.aclose()
            record = await wait_for_final(fresh_database, sid(811))
        for stranger in strangers:
            await stranger.aclose()
    assert any(e["event"] == "media" for e in greeting)
    assert (stats.evicted_total, stats.pending) == (1, max_pending - 1)
    assert media_refusals(engine) == {"too_many_pending": 1}
    assert record["status"] == "completed"


async def expect_1008(peer: TwilioPeer) -> None:
    with pytest.raises(WebSocketClosed) as closed:
        await listen_until_closed(peer)
    assert closed.value.code == 1008
    await peer.aclose()


async def test_dawdling_chatter_and_bad_upgrades_are_closed_and_shown_in_metrics(
    fresh_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(media_server, "HANDSHAKE_TIMEOUT_S", 0.3)  # real time: keep it short
    monkeypatch.setattr(media_server, "START_TIMEOUT_S", 0.3)
    async with running_engine(fresh_database, tmp_path, MEDIA_PORT="0") as engine:
        await setup_project(engine)
        port, url = engine.media.bound_port, engine.media.public_url
        with trio.fail_after(30):
            with pytest.raises(HandshakeFailed, match="403"):
                await stream_to(port, sid(812), signature_url="ws://elsewhere.test/twilio/media")
            with pytest.raises(AssertionError, match="404"):
                await raw_upgrade(engine, path="/elsewhere")
            silent = await trio.open_tcp_stream("127.0.0.1", port)  # never upgrades
            await closed_by_engine(silent)
            await silent.aclose()
            dawdler = await stream_to(port, sid(812), signature_url=url)  # never starts
            await expect_1008(dawdler)
            chatter = await stream_to(port, sid(812), signature_url=url)
            for _ in range(5):
                await chatter.send(chatter.frames.connected())
            await expect_1008(chatter)
            bulky = await stream_to(port, sid(812), signature_url=url)
            await bulky.send(PADDED_CONNECTED)
            await expect_1008(bulky)
            early = await stream_to(port, sid(812), signature_url=url)
            await early.send(MEDIA_WITHOUT_MEDIA)
            await expect_1008(early)
            twiml = await twilio_post(engine, "/twilio/voice", call(sid(812), ANSWERED))
            parameters = params(twiml.body.decode())
            foreign = await stream_to(port, sid(999), signature_url=url)
            await foreign.start(parameters)  # a token for another call
            await expect_1008(foreign)
        metrics = await http_request("GET", f"{engine.bound_urls[0]}/metrics", token=ADMIN_TOKEN)
    shown = dict(
        re.findall(
            # The known reasons start at 0: only those counted here.
            r'^afterhours_refusals_total\{edge="media",reason="(\w+)"\} ([1-9]\d*)$',
            metrics.body.decode(),
            re.MULTILINE,
        )
    )
    assert shown == {
        "bad_signature": "1",
        "not_found": "1",
        "handshake_timeout": "1",
        "start_timeout": "1",
        "frames_before_start": "2",
        "bad_start": "1",
        "bad_token": "1",
    }


async def test_a_ping_flood_that_does_not_read_is_closed_at_once_and_holds_nothing(
    fresh_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(media_server, "START_TIMEOUT_S", 60.0)  # only the ping budget acts
    async with running_engine(fresh_database, tmp_path, MEDIA_PORT="0") as engine:
        with trio.fail_after(10):
            sent = await flood_until_closed(await raw_upgrade(engine))
            await wait_until(lambda: engine.media.statistics().connections.open == 0)
        stats = engine.media.statistics()
    assert media_refusals(engine) == {"ping_flood": 1}
    assert sent < 16 * 1024 * 1024  # closed on its first read, not when the kernel filled
    # What was waiting to be written for it never passed the bound (nothing, in fact:
    # the flood's pongs were coalesced, then none at all once it was over the budget).
    assert stats.peak_unsent_bytes <= MAX_UNSENT_BYTES
    assert stats.peak_unsent_bytes == 0


async def test_a_live_call_keeps_its_audio_while_other_sockets_flood_pings(
    fresh_database: str, tmp_path: Path
) -> None:
    flooded = trio.Event()
    stop_flooding = trio.Event()

    async def flooder(engine: Engine) -> None:
        while not stop_flooding.is_set():  # each connection closed is replaced at once
            await flood_until_closed(await raw_upgrade(engine))
            if media_refusals(engine).get("ping_flood", 0) >= 40:
                flooded.set()

    async with running_engine(fresh_database, tmp_path, MEDIA_PORT="0") as engine:
        await setup_project(engine)
        twiml = await twilio_post(engine, "/twilio/voice", call(sid(813), ANSWERED))
        peer, parameters = await open_stream(twiml.body.decode(), sid(813))
        with trio.fail_after(30):
            await peer.start(parameters)
            greeting = await peer.listen(until_silent_s=1.0)
            async with trio.open_nursery() as nursery:
                for _ in range(8):
                    nursery.start_soon(flooder, engine)
                await flooded.wait()  # the flood is well under way
                await peer.speak(silence(100) + tone(400) + silence(700))
                answer = await peer.listen(until_silent_s=1.0)
                stop_flooding.set()
            await peer.hang_up()
            await peer.aclose()
            record = await wait_for_final(fresh_database, sid(813))
    assert any(e["event"] == "media" for e in greeting)
    assert any(e["event"] == "media" for e in answer)
    assert any(e["event"] == "mark" for e in answer)
    assert (record["status"], record["end_reason"]) == ("completed", "caller_hung_up")
    assert set(media_refusals(engine)) == {"ping_flood"}


async def test_a_call_that_floods_pings_itself_is_closed_and_counted(
    fresh_database: str, tmp_path: Path
) -> None:
    async with running_engine(fresh_database, tmp_path, MEDIA_PORT="0") as engine:
        await setup_project(engine)
        twiml = await twilio_post(engine, "/twilio/voice", call(sid(814), ANSWERED))
        peer, parameters = await open_stream(twiml.body.decode(), sid(814))
        with trio.fail_after(30):
            await peer.start(parameters)
            await peer.listen(until_silent_s=1.0)
            socket = peer.socket
            assert isinstance(socket, WebSocket)
            for _ in range(1000):
                socket._protocol.send_ping(b"")
            await socket._flush()
            with pytest.raises(WebSocketClosed):
                await listen_until_closed(peer)
            await peer.aclose()
            record = await wait_for_final(fresh_database, sid(814))
    assert media_refusals(engine) == {"ping_flood": 1}
    assert record["status"] == "failed"  # the engine ended it, not the caller hanging up
    assert record["end_reason"].startswith("twilio_stream_error: 1008")


async def listen_until_closed(peer: TwilioPeer) -> None:
    while True:
        await peer.receive()


# -- before start, under the mock clock ------------------------------------------------


async def test_a_stream_that_never_starts_is_given_start_timeout_s(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server, _, _ = await memory_pair()
    with pytest.raises(media_server._Refused) as refused:
        await media_server._read_start(server)
    assert refused.value.reason == "start_timeout"
    assert trio.current_time() == START_TIMEOUT_S


def twilio() -> TwilioFrames:
    return TwilioFrames(STREAM_SID, "CA1")


CONNECTED, START = twilio().connected(), twilio().start()


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        ([CONNECTED, START], None),
        ([START], None),
        # Under load one read can hold the first media frames right behind start.
        ([CONNECTED, START, *twilio().media_of(silence(400))], None),
        ([CONNECTED] * 5 + [START], "frames_before_start"),
        ([PADDED_CONNECTED, START], "frames_before_start"),
        ([MEDIA_WITHOUT_MEDIA, START], "bad_start"),
        ([b'{"event":"hologram"}', START], "bad_start"),
    ],
)
async def test_what_may_come_before_start(
    frames: list[bytes], reason: str | None, autojump_clock: trio.testing.MockClock
) -> None:
    server, stream, client = await memory_pair()
    for frame in frames:
        client.send_text(frame)
    await send_frames(stream, client)
    if reason is None:
        start = await media_server._read_start(server)
        assert start.start.callSid == "CA1"
    else:
        with pytest.raises(media_server._Refused) as refused:
            await media_server._read_start(server)
        assert refused.value.reason == reason
    assert trio.current_time() == 0  # decided on what came, not by waiting


async def test_media_frames_read_with_start_are_kept_for_the_call(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """One read can hold start and the call's first frames: none of them is dropped."""
    server, stream, client = await memory_pair()
    frames = twilio()
    for frame in [frames.connected(), frames.start(), *frames.media_of(silence(400))]:
        client.send_text(frame)
    await send_frames(stream, client)
    await media_server._read_start(server)
    kept = await server.receive_batch()
    chunks = [json.loads(message)["media"]["chunk"] for message in kept]
    assert chunks == [str(n) for n in range(1, 21)]

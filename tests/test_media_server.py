"""The media stream listener: two instances sharing one PostgreSQL, one-time stream
tokens across them, and the bad input a stream can bring."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import trio
import trio.testing
from twilio.request_validator import RequestValidator

from actors.call import CallSetup
from actors.model_link import ModelEndpoint
from api.media_server import MediaServer
from engine.config import settings_from_mapping
from engine.group import DynamicGroup
from engine.mailbox import RECORD_SEND_TIMEOUT_S, Mailbox, OverflowPolicy
from engine.messages import Alert, CallUpdated, StoreWrite
from engine.price_book import BUILT_IN
from engine.projects import parse_project
from engine.routing import EMPTY_SNAPSHOT
from engine.simulator.mulaw import silence, tone
from engine.simulator.twilio_frames import TwilioFrames, stream_of
from engine.simulator.twilio_peer import TwilioPeer
from engine.ws import HandshakeFailed, WebSocketClosed, connect
from tests.helpers import TWILIO_AUTH_TOKEN, http_request, running_engine, sid
from tests.test_call_e2e import STREAM_SID, wait_for_final
from tests.test_twilio_webhooks import ANSWERED, call, setup_project, twilio_post
from tests.test_ws import memory_pair

# Both instances sit behind one balancer: Twilio knows one media URL for both.
SHARED_MEDIA_URL = "ws://media.example.test/twilio/media"


async def stream_to(port: int, call_sid: str, signature_url: str = SHARED_MEDIA_URL) -> TwilioPeer:
    """Twilio's side of ``call_sid``'s stream, opened to ``port`` (not yet started)."""
    signature = RequestValidator(TWILIO_AUTH_TOKEN).compute_signature(signature_url, {})
    socket = await connect(
        f"ws://127.0.0.1:{port}/twilio/media",
        headers=[("X-Twilio-Signature", signature)],
        max_message_bytes=1 << 20,
        send_timeout_s=5,
        connect_timeout_s=5,
    )
    return TwilioPeer(socket, TwilioFrames(STREAM_SID, call_sid))


def params(xml: str) -> dict[str, str]:
    stream = stream_of(xml)
    assert stream is not None, xml
    return stream.parameters


async def test_a_call_that_cannot_start_is_not_held_by_a_full_store_inbox(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The calls group refuses the call (here: not running, as while it stops) and the
    store's inbox is full (a stuck store): the failed call's record waits
    ``RECORD_SEND_TIMEOUT_S`` for room, is counted as lost, and the connection is let go.
    An unbounded send would wait here for as long as the store stays stuck."""
    store: Mailbox[StoreWrite] = Mailbox("store", 1, OverflowPolicy.BLOCK)
    store.send_nowait(CallUpdated(sid(1)))  # the store is stuck behind this one
    endpoint = ModelEndpoint("ws://model.test/v1/realtime", "gpt-realtime", "sk-sim")
    media = MediaServer(
        settings_from_mapping({}),
        calls=DynamicGroup("calls", max_children=1, shutdown_s=1.0, report=lambda event: None),
        store=store,
        setup=Mailbox("store-setup", 1, OverflowPolicy.BLOCK),
        routes=lambda: EMPTY_SNAPSHOT,
        alerts=Mailbox[Alert]("alerts", 1, OverflowPolicy.DROP_NEWEST),
        model=lambda: endpoint,
        early=None,
        prices=BUILT_IN,
    )
    project = parse_project(
        {"id": "smith-plumbing", "name": "Smith Plumbing", "timezone": "America/Chicago"}
    )
    setup = CallSetup(sid(2), STREAM_SID, project, endpoint)
    socket, _, _ = await memory_pair()
    began_s = trio.current_time()
    with trio.fail_after(10 * RECORD_SEND_TIMEOUT_S):
        await media._run_call(setup, socket)
    assert trio.current_time() - began_s == pytest.approx(RECORD_SEND_TIMEOUT_S)
    statistics = store.statistics()
    assert (statistics.queued, statistics.dropped_total) == (1, 1)  # counted: the store alerts


async def test_webhook_stream_and_callback_on_different_instances_and_tokens_used_once(
    fresh_database: str, tmp_path: Path
) -> None:
    shared = {"MEDIA_PORT": "0", "PUBLIC_MEDIA_URL": SHARED_MEDIA_URL}
    async with (
        running_engine(fresh_database, tmp_path / "a", **shared) as first,
        running_engine(fresh_database, tmp_path / "b", **shared) as second,
    ):
        await setup_project(first)
        twiml = await twilio_post(first, "/twilio/voice", call(sid(700), ANSWERED))
        assert SHARED_MEDIA_URL in twiml.body.decode()
        parameters = params(twiml.body.decode())
        # The stream reaches the second instance; the call runs there.
        peer = await stream_to(second.media.bound_port, sid(700))
        with trio.fail_after(30):
            await peer.start(parameters)
            await peer.listen(until_silent_s=1.0)
            assert second.calls.statistics().active == 1
            assert first.calls.statistics().active == 0
            # A replay of the same stream start, to the first instance, is refused.
            replay = await stream_to(first.media.bound_port, sid(700))
            await replay.start(parameters)
            with pytest.raises(WebSocketClosed):
                await replay.receive()
            await replay.aclose()
            await peer.speak(silence(100) + tone(300) + silence(700))
            await peer.listen(until_silent_s=1.0)
            await peer.hang_up()
            await peer.aclose()
            # The status callback lands on the first instance.
            final = call(sid(700), ANSWERED) | {"CallStatus": "completed", "CallDuration": "7"}
            assert (await twilio_post(first, "/twilio/status", final)).status == 204
            record = await wait_for_final(fresh_database, sid(700))
            while record["twilio_status"] is None:
                await trio.sleep(0.05)
                record = await wait_for_final(fresh_database, sid(700))
            # The first instance opened a model session at webhook time that nobody took;
            # the status callback closed it (the stream token would have expired it).
            early = first.early.statistics()
            assert (early.opened_total, early.taken_total) == (1, 0)
            assert first.simulated_model is not None
            while first.simulated_model.statistics().sessions_open:  # noqa: ASYNC110
                await trio.sleep(0.02)
            assert first.early.statistics().held == 0
            assert second.early.statistics().taken_total == 0  # it connected when the stream began
    assert (record["status"], record["end_reason"], record["twilio_status"]) == (
        "completed",
        "caller_hung_up",
        "completed",
    )
    assert record["project_id"] == "smith-plumbing"


async def test_bad_streams_are_refused_and_bad_frames_do_not_end_a_call(
    fresh_database: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="afterhours.call")
    async with running_engine(fresh_database, tmp_path, MEDIA_PORT="0") as engine:
        await setup_project(engine)
        port = engine.media.bound_port
        url = engine.media.public_url
        # An upgrade signed over another URL (or with another token) is refused.
        with pytest.raises(HandshakeFailed, match="403"):
            await stream_to(port, sid(701), signature_url="ws://elsewhere.test/twilio/media")
        # Media before start: the stream is closed before any call begins.
        early = await stream_to(port, sid(701), signature_url=url)
        await early.send(early.frames.media(b"/////w=="))
        with pytest.raises(WebSocketClosed):
            await early.receive()
        await early.aclose()
        # A stream whose token was issued for another call is refused.
        twiml = await twilio_post(engine, "/twilio/voice", call(sid(701), ANSWERED))
        parameters = params(twiml.body.decode())
        foreign = await stream_to(port, sid(999), signature_url=url)
        await foreign.start(parameters)
        with pytest.raises(WebSocketClosed):
            await foreign.receive()
        await foreign.aclose()
        # Garbage in the middle of a real call is logged and skipped: the call goes on.
        peer = await stream_to(port, sid(701), signature_url=url)
        with trio.fail_after(30):
            await peer.start(parameters)
            await peer.listen(until_silent_s=1.0)
            # Malformed on purpose, so written by hand: not JSON; media without a payload.
            await peer.send(b"{not json")
            await peer.send(b'{"event":"media","streamSid":"MZ-other","media":{}}')
            for _ in range(3):  # an event Twilio may add one day: logged once, ignored
                await peer.send(b'{"event":"hologram","streamSid":"MZ"}')
            await peer.speak(silence(100) + tone(300) + silence(700))
            answer = await peer.listen(until_silent_s=1.0)
            await peer.hang_up()
            await peer.aclose()
            record = await wait_for_final(fresh_database, sid(701))
        health = await http_request("GET", f"{engine.bound_urls[0]}/health")
    assert any(event["event"] == "media" for event in answer)  # the model still answered
    assert (record["status"], record["end_reason"]) == ("completed", "caller_hung_up")
    assert health.status == 200
    assert json.loads(record["transcript"])[1]["role"] == "caller"
    ignored = [r.getMessage() for r in caplog.records if "ignoring Twilio event" in r.getMessage()]
    assert ignored == [f"call {sid(701)}: ignoring Twilio event 'hologram'"]

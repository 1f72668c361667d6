"""A whole call through the real path: signed webhook, TwiML, signed media stream, the
call actor, the simulated model, and the record in PostgreSQL."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import pytest
import trio
from twilio.request_validator import RequestValidator

from actors.store.db import open_database
from api.root.engine import Engine
from engine.json_case import camel_keys
from engine.price_book import BUILT_IN
from engine.pricing import DEFAULT_PRICES, call_cost_usd
from engine.signing import sign
from engine.simulator.mulaw import silence, tone
from engine.simulator.twilio_frames import TwilioFrames, stream_of
from engine.simulator.twilio_peer import TwilioPeer
from engine.ws import connect
from tests.function_backend import FunctionBackend, TwilioRestStandIn
from tests.helpers import ADMIN_TOKEN, TWILIO_AUTH_TOKEN, http_request, running_engine, sid
from tests.test_twilio_webhooks import ANSWERED, PROJECT, call, setup_project, twilio_post

if TYPE_CHECKING:
    from actors.early_sessions import EarlyStatistics
    from engine.simulator.model_statistics import ModelStatistics
    from tests.helpers import HttpResponse

STREAM_SID = "MZ" + "1" * 32


async def open_stream(xml: str, call_sid: str) -> tuple[TwilioPeer, dict[str, str]]:
    """Twilio following the TwiML: the signed media stream to its URL, not yet started;
    the parameters for its ``start``."""
    stream = stream_of(xml)
    assert stream is not None, xml
    signature = RequestValidator(TWILIO_AUTH_TOKEN).compute_signature(stream.url, {})
    socket = await connect(
        stream.url,
        headers=[("X-Twilio-Signature", signature)],
        max_message_bytes=1 << 20,
        send_timeout_s=5,
        connect_timeout_s=5,
    )
    return TwilioPeer(socket, TwilioFrames(STREAM_SID, call_sid)), stream.parameters


@dataclass
class HungUpCall:
    """One plain call, start to hang-up, and what each side saw of it."""

    greeting: list[dict[str, Any]]  # what the caller heard before speaking
    answer: list[dict[str, Any]]  # and after
    model_closed_after_s: float  # from the hang-up until the call and its session ended
    model: ModelStatistics
    early: EarlyStatistics
    active_sessions: int  # /health's, once the call ended
    record: dict[str, Any]  # its row in PostgreSQL
    shown: HttpResponse  # GET /admin/calls/<its sid>
    unknown: HttpResponse  # GET /admin/calls/<a sid never seen>


async def call_and_hang_up(dsn: str, data_dir: Path, **settings: str) -> HungUpCall:
    """The webhook answers, the stream starts, the caller hears the greeting, speaks,
    hears the answer and hangs up; then the record and the admin API are read."""
    async with running_engine(dsn, data_dir, MEDIA_PORT="0", **settings) as engine:
        await setup_project(engine)
        twiml = await twilio_post(engine, "/twilio/voice", call(sid(900), ANSWERED))
        peer, parameters = await open_stream(twiml.body.decode(), sid(900))
        with trio.fail_after(30):
            await peer.start(parameters)
            greeting = await peer.listen(until_silent_s=1.0)
            await peer.speak(silence(100) + tone(400) + silence(700))
            answer = await peer.listen(until_silent_s=1.0)
            await peer.hang_up()
            hung_up_at_s = trio.current_time()
            assert engine.simulated_model is not None
            model = engine.simulated_model
            # Polled: the call ends by itself; the model session must be gone within 1 s.
            while engine.calls.statistics().active or model.statistics().sessions_open:  # noqa: ASYNC110
                await trio.sleep(0.02)
            model_stats = model.statistics()
            model_closed_after_s = trio.current_time() - hung_up_at_s
            await peer.aclose()
            record = await wait_for_final(dsn, sid(900))
            health = await http_request("GET", f"{engine.bound_urls[0]}/health")
            calls_url = f"{engine.bound_urls[0]}/admin/calls"
            shown = await http_request("GET", f"{calls_url}/{sid(900)}", token=ADMIN_TOKEN)
            unknown = await http_request("GET", f"{calls_url}/{sid(404)}", token=ADMIN_TOKEN)
    return HungUpCall(
        greeting, answer, model_closed_after_s, model_stats, engine.early.statistics(),
        health.json()["activeSessions"], record, shown, unknown,
    )  # fmt: skip


# Each media read waits on Trio's own readiness, or on the shared poller's (READY_TICK_MS).
@pytest.mark.parametrize("ready_tick_ms", ["off", "2"])
async def test_the_caller_hears_a_greeting_then_an_answer_on_its_stream(
    fresh_database: str, tmp_path: Path, ready_tick_ms: str
) -> None:
    run = await call_and_hang_up(fresh_database, tmp_path, READY_TICK_MS=ready_tick_ms)
    assert [e for e in run.greeting if e["event"] == "media"], "the caller heard no greeting"
    assert all(e["streamSid"] == STREAM_SID for e in run.greeting)
    assert any(e["event"] == "mark" for e in run.greeting)
    assert any(e["event"] == "media" for e in run.answer)
    assert run.model.violations_total == 0  # every client event the engine sent was valid GA


async def test_a_call_takes_the_session_opened_at_webhook_time_and_ends_it_at_the_hang_up(
    fresh_database: str, tmp_path: Path
) -> None:
    run = await call_and_hang_up(fresh_database, tmp_path)
    # One model session, opened when the webhook answered and taken when the stream began.
    assert run.model.sessions_total == 1
    assert (run.early.opened_total, run.early.taken_total) == (1, 1)
    assert run.model_closed_after_s < 1.0
    assert run.active_sessions == 0


async def test_a_hung_up_call_is_recorded_with_its_transcript_usage_and_cost(
    fresh_database: str, tmp_path: Path
) -> None:
    record = (await call_and_hang_up(fresh_database, tmp_path)).record
    assert (record["status"], record["end_reason"]) == ("completed", "caller_hung_up")
    transcript = json.loads(record["transcript"])
    assert transcript[0]["text"] == "Thank you for calling Smith Plumbing. How can I help?"
    assert [t["role"] for t in transcript] == ["assistant", "caller", "assistant"]
    assert record["time_to_first_audio_ms"] is not None
    assert json.loads(record["usage"])["output_tokens"] > 0
    assert float(record["cost_usd"]) > 0.0125  # the model's tokens plus a started minute
    assert record["stream_sid"] == STREAM_SID


async def test_operators_read_a_calls_record_through_the_admin_api(
    fresh_database: str, tmp_path: Path
) -> None:
    run = await call_and_hang_up(fresh_database, tmp_path)
    record, shown = run.record, run.shown.json()
    assert run.shown.status == 200
    # The same turns, in the API's casing (offset_ms is offsetMs).
    assert shown["transcript"] == camel_keys(json.loads(record["transcript"]))
    assert shown["costUsd"] == float(record["cost_usd"])
    assert (shown["status"], shown["endReason"]) == ("completed", "caller_hung_up")
    assert run.unknown.status == 404


async def wait_for_final(dsn: str, call_sid: str) -> dict[str, Any]:
    with trio.fail_after(10):
        while True:
            async with open_database(dsn, connect_timeout_s=5) as db:
                rows = await db.fetch(
                    "SELECT * FROM calls WHERE call_sid = $1", call_sid, timeout_s=5
                )
            if rows and rows[0]["status"] != "active":
                return dict(rows[0])
            await trio.sleep(0.05)


BOOKING_PROJECT: dict[str, Any] = {
    "id": "smith-plumbing",
    "name": "Smith Plumbing",
    "timezone": "America/Chicago",
    "instructions": "You book plumbing visits. [scenario: booking]",
    "functionSecret": "fn-secret-123456",
    "functionTimeoutS": 5,
    "tools": [
        {
            "name": "get_slots",
            "description": "Free slots",
            "parameters": {"type": "object", "properties": {"day": {"type": "string"}}},
        },
        {
            "name": "book_appointment",
            "description": "Book a slot",
            "parameters": {"type": "object", "properties": {"slot_id": {"type": "string"}}},
        },
    ],
}


async def test_a_booking_call_uses_the_business_functions_and_ends_itself(
    fresh_database: str, tmp_path: Path
) -> None:
    backend = FunctionBackend(
        {
            "get_slots": (200, b'{"slots": [{"id": "slot-1", "time": "09:00"}]}', 0.0),
            "book_appointment": (200, b'{"booked": true, "reference": "B-42"}', 1.5),
        }
    )
    async with trio.open_nursery() as nursery:
        url = await nursery.start(backend.serve)
        async with running_engine(fresh_database, tmp_path, MEDIA_PORT="0") as engine:
            project = BOOKING_PROJECT | {"functionUrl": url}
            peer, parameters = await answered_call(engine, project, sid(901))
            with trio.fail_after(60):
                await peer.start(parameters)
                await peer.listen(until_silent_s=1.0)  # the greeting
                for _ in range(2):  # the problem; yes, book it (then the model says goodbye)
                    await peer.speak(silence(100) + tone(400) + silence(700))
                    await peer.listen(until_silent_s=2.5)
                record = await wait_for_final(fresh_database, sid(901))
                async with open_database(fresh_database, connect_timeout_s=5) as db:
                    functions = await db.fetch(
                        "SELECT name, outcome, http_status, latency_ms FROM function_calls "
                        "ORDER BY at",
                        timeout_s=5,
                    )
            await peer.aclose()
        nursery.cancel_scope.cancel()
    assert (record["status"], record["end_reason"], record["intent"]) == (
        "completed",
        "end_call",
        "routine",
    )
    said = [t["text"] for t in json.loads(record["transcript"]) if t["role"] == "assistant"]
    assert "One moment, let me check." in said  # the slow booking did not leave dead air
    assert "You're booked for nine tomorrow. Goodbye!" in said
    assert [(f["name"], f["outcome"], f["http_status"]) for f in functions] == [
        ("get_slots", "ok", 200),
        ("book_appointment", "ok", 200),
    ]
    assert functions[1]["latency_ms"] >= 1500
    assert [r.json()["name"] for r in backend.received] == ["get_slots", "book_appointment"]
    assert all(r.json()["call_sid"] == sid(901) for r in backend.received)
    assert all(
        r.headers["x-afterhours-signature"] == sign("fn-secret-123456", r.body)
        for r in backend.received
    )


LONG_GREETING = ("Thanks for calling Smith Plumbing. " * 12).strip()  # seconds of speech
PROJECT_WITH_LONG_GREETING: dict[str, Any] = {
    "id": "smith-plumbing",
    "name": "Smith Plumbing",
    "timezone": "America/Chicago",
    "greeting": LONG_GREETING,
}


# Each media read waits on Trio's own readiness, or on the shared poller's (READY_TICK_MS).
@pytest.mark.parametrize("ready_tick_ms", ["off", "2"])
async def test_barge_in_truncates_to_what_was_heard_and_dtmf_reaches_the_model(
    fresh_database: str, tmp_path: Path, ready_tick_ms: str
) -> None:
    async with running_engine(
        fresh_database, tmp_path, MEDIA_PORT="0", READY_TICK_MS=ready_tick_ms
    ) as engine:
        peer, parameters = await answered_call(engine, PROJECT_WITH_LONG_GREETING, sid(902))
        with trio.fail_after(30):
            await peer.start(parameters)
            # The caller hears only the first three media chunks, then talks over the rest.
            heard_mark, after_speech = await hear_some_then_interrupt(peer, chunks_heard=3)
            later = await peer.listen(until_silent_s=0.5)
            await peer.press("1")
            await peer.listen(until_silent_s=1.0)
            await peer.hang_up()
            record = await wait_for_final(fresh_database, sid(902))
            await peer.aclose()
        assert engine.simulated_model is not None
        stats = engine.simulated_model.statistics()
    assert any(e["event"] == "clear" for e in after_speech)
    item_id, heard_ms = heard_mark.rsplit(":", 1)
    assert stats.truncations == ((item_id, int(heard_ms)),)  # exactly what was played
    # Nothing more of the interrupted item reached the caller after the clear.
    assert not [e for e in later if e["event"] == "mark" and e["mark"]["name"].startswith(item_id)]
    assert stats.caller_texts == ("The caller pressed 1 on the keypad.",)
    assert record["status"] == "completed"
    # The transcript keeps only the words of the greeting the caller heard.
    greeting = json.loads(record["transcript"])[0]
    assert greeting["role"] == "assistant"
    assert greeting["interrupted"] is True
    said = greeting["text"].split()
    assert 0 < len(said) < len(LONG_GREETING.split())
    assert LONG_GREETING.startswith(greeting["text"])


async def hear_some_then_interrupt(
    peer: TwilioPeer, chunks_heard: int
) -> tuple[str, list[dict[str, Any]]]:
    """Echo the marks of the first ``chunks_heard`` media chunks (they played), then
    speak while the rest is still queued; return the last mark heard and what followed."""
    heard = ""
    media_seen = 0
    while media_seen < chunks_heard or not heard:
        for event in await peer.receive():
            if event["event"] == "media":
                media_seen += 1
            elif event["event"] == "mark" and media_seen <= chunks_heard:
                heard = event["mark"]["name"]
                await peer.return_mark(heard)
    await peer.speak(tone(200))
    after: list[dict[str, Any]] = []
    with trio.move_on_after(2.0):
        while not any(e["event"] == "clear" for e in after):
            after += await peer.receive()
    return heard, after


# The simulated model classifies its calls as emergencies and transfers them.
EMERGENCY_PROJECT = {
    "id": "smith-plumbing",
    "name": "Smith Plumbing",
    "timezone": "America/Chicago",
    "instructions": "Handle after-hours calls. [scenario: emergency]",
    "onCallNumber": "+15551234567",
}


@pytest.mark.parametrize("stream_ends_first", [False, True])
async def test_an_emergency_is_classified_and_transferred_through_twilios_rest_api(
    fresh_database: str, tmp_path: Path, stream_ends_first: bool
) -> None:
    """``stream_ends_first``: Twilio runs the new TwiML and ends the media stream before
    its REST answer reaches the engine (1 s later): still a transfer, not a hang-up."""
    twilio = TwilioRestStandIn(answer_after_s=1.0 if stream_ends_first else 0.0)
    account = "AC" + "ab" * 16
    async with trio.open_nursery() as nursery:
        rest_url = await nursery.start(twilio.serve)
        async with running_engine(
            fresh_database,
            tmp_path,
            MEDIA_PORT="0",
            TWILIO_ACCOUNT_SID=account,
            TWILIO_API_BASE_URL=rest_url,
        ) as engine:
            peer, parameters = await answered_call(engine, EMERGENCY_PROJECT, sid(904))
            with trio.fail_after(30):
                await peer.start(parameters)
                await peer.listen(until_silent_s=1.0)
                await peer.speak(silence(100) + tone(400) + silence(700))
                if stream_ends_first:
                    async with trio.open_nursery() as listening:  # marks echoed meanwhile
                        listening.start_soon(peer.listen, 30.0)
                        await twilio.arrived.wait()
                        listening.cancel_scope.cancel()
                    await peer.hang_up()
                else:
                    await peer.listen(until_silent_s=3.0)  # until the engine hands over
                record = await wait_for_final(fresh_database, sid(904))
            await peer.aclose()
        nursery.cancel_scope.cancel()
    (update,) = twilio.received
    assert update.path == f"/2010-04-01/Accounts/{account}/Calls/{sid(904)}.json"
    expected_auth = base64.b64encode(f"{account}:{TWILIO_AUTH_TOKEN}".encode()).decode()
    assert update.headers["authorization"] == f"Basic {expected_auth}"
    twiml_sent = parse_qs(update.body.decode())["Twiml"][0]
    assert '<Dial timeout="30">+15551234567</Dial>' in twiml_sent
    assert (record["status"], record["end_reason"], record["intent"]) == (
        "completed",
        "transferred",
        "emergency",
    )
    said = [t["text"] for t in json.loads(record["transcript"]) if t["role"] == "assistant"]
    assert said[-1] == "That sounds urgent. I'm connecting you to the on-call technician now."


async def test_a_dropped_model_socket_is_reconnected_and_the_call_goes_on(
    fresh_database: str, tmp_path: Path
) -> None:
    async with running_engine(fresh_database, tmp_path, MEDIA_PORT="0") as engine:
        await setup_project(engine)
        assert engine.simulated_model is not None
        model = engine.simulated_model
        twiml = await twilio_post(engine, "/twilio/voice", call(sid(905), ANSWERED))
        peer, parameters = await open_stream(twiml.body.decode(), sid(905))
        with trio.fail_after(30):
            await peer.start(parameters)
            await peer.listen(until_silent_s=1.0)  # the greeting, from the first session
            model.drop_sessions()  # a network fault between the engine and the model
            while model.statistics().sessions_total < 2:  # noqa: ASYNC110 - the engine reconnects
                await trio.sleep(0.02)
            await peer.speak(silence(100) + tone(400) + silence(700))
            answer = await peer.listen(until_silent_s=1.0)
            await peer.hang_up()
            record = await wait_for_final(fresh_database, sid(905))
            await peer.aclose()
    assert any(e["event"] == "media" for e in answer)  # the new session answered
    # The conversation so far was restored into the new session.
    assert model.statistics().assistant_texts == (
        "Thank you for calling Smith Plumbing. How can I help?",
    )
    assert (record["status"], record["end_reason"]) == ("completed", "caller_hung_up")
    roles = [t["role"] for t in json.loads(record["transcript"])]
    assert roles == ["assistant", "caller", "assistant"]


async def answered_call(
    engine: Engine, project: dict[str, Any], call_sid: str
) -> tuple[TwilioPeer, dict[str, str]]:
    """Create ``project`` with the answered number, let the webhook answer a call to it,
    and open its signed media stream (not yet started)."""
    base = engine.bound_urls[0] + "/admin/projects"
    created = await http_request("POST", base, json=project, token=ADMIN_TOKEN)
    assert created.status == 201, created.body
    added = await http_request(
        "POST",
        f"{base}/{project['id']}/phone-numbers",
        json={"number": ANSWERED},
        token=ADMIN_TOKEN,
    )
    assert added.status == 201, added.body
    twiml = await twilio_post(engine, "/twilio/voice", call(call_sid, ANSWERED))
    return await open_stream(twiml.body.decode(), call_sid)


async def test_a_projects_own_model_answers_its_calls_and_prices_them(
    fresh_database: str, tmp_path: Path
) -> None:
    project = {**PROJECT, "model": "gpt-realtime-mini"}
    async with running_engine(fresh_database, tmp_path, MEDIA_PORT="0") as engine:
        peer, parameters = await answered_call(engine, project, sid(910))
        with trio.fail_after(30):
            await peer.start(parameters)
            await peer.listen(until_silent_s=1.0)
            await peer.speak(silence(100) + tone(400) + silence(700))
            await peer.listen(until_silent_s=1.0)
            await peer.hang_up()
            await peer.aclose()
            record = await wait_for_final(fresh_database, sid(910))
    assert engine.simulated_model is not None
    stats = engine.simulated_model.statistics()
    # The early session (opened at webhook time) and the session.update both name it.
    assert stats.models == ("gpt-realtime-mini",)
    assert stats.session_models
    assert set(stats.session_models) == {"gpt-realtime-mini"}
    usage = json.loads(record["usage"])
    mini = BUILT_IN.prices_for("gpt-realtime-mini")
    expected = call_cost_usd(usage, record["duration_s"], mini)
    assert float(record["cost_usd"]) == pytest.approx(expected, abs=1e-6)
    assert expected != call_cost_usd(usage, record["duration_s"], DEFAULT_PRICES)


async def test_transfers_of_two_calls_share_one_connection_to_twilio(
    fresh_database: str, tmp_path: Path
) -> None:
    """The process's one HTTP client (actors/http_client.py): the second call's transfer
    reuses the connection the first one opened, so it pays no new handshake."""
    twilio = TwilioRestStandIn(keep_alive=True)
    async with trio.open_nursery() as nursery:
        rest_url = await nursery.start(twilio.serve)
        async with running_engine(
            fresh_database,
            tmp_path,
            MEDIA_PORT="0",
            TWILIO_ACCOUNT_SID="AC" + "ab" * 16,
            TWILIO_API_BASE_URL=rest_url,
        ) as engine:
            records = []
            for n in (905, 906):
                if n == 905:
                    peer, parameters = await answered_call(engine, EMERGENCY_PROJECT, sid(n))
                else:  # the project and its number exist: only a new call to it
                    twiml = await twilio_post(engine, "/twilio/voice", call(sid(n), ANSWERED))
                    peer, parameters = await open_stream(twiml.body.decode(), sid(n))
                with trio.fail_after(30):
                    await peer.start(parameters)
                    await peer.listen(until_silent_s=1.0)
                    await peer.speak(silence(100) + tone(400) + silence(700))
                    await peer.listen(until_silent_s=3.0)
                    records.append(await wait_for_final(fresh_database, sid(n)))
                await peer.aclose()
        nursery.cancel_scope.cancel()
    assert [r["end_reason"] for r in records] == ["transferred", "transferred"]
    assert [u.path.rsplit("/", 1)[1] for u in twilio.received] == [
        f"{sid(905)}.json",
        f"{sid(906)}.json",
    ]
    assert twilio.connections == 1

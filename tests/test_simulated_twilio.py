"""The simulated Twilio REST API over a real socket on 127.0.0.1, its wiring into the
engine, and a transfer end to end: the simulated caller's stream ended as Twilio ends it."""

from __future__ import annotations

import base64
import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import trio
import trio.testing
from twilio.request_validator import RequestValidator

from actors.twilio_rest import REST_TIMEOUT_S, TwilioRest, TwilioRestError
from api.http.twilio_access import twilio_access
from engine.config import settings_from_mapping
from engine.simulator.caller import CallerConfig, CallSummary, place_call
from engine.simulator.caller import _stream as caller_stream
from engine.simulator.twilio_calls import simulated_account
from engine.simulator.twilio_rest import SimulatedTwilio
from engine.twiml import transfer
from engine.ws import WebSocketClosed, accept
from tests.helpers import (
    PUBLIC_URL,
    TWILIO_AUTH_TOKEN,
    http_request,
    running_engine,
    sid,
)
from tests.test_call_e2e import wait_for_final
from tests.test_simulated_caller import EMERGENCY_PROJECT, create_project

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

ON_CALL = "+15551234567"
TEST_TIMEOUT_S = 10.0


class Served:
    """A SimulatedTwilio serving on 127.0.0.1, its base URL, and a client for it."""

    def __init__(self, twilio: SimulatedTwilio, base_url: str, http: httpx.AsyncClient) -> None:
        self.twilio, self.base_url, self.http = twilio, base_url, http

    def rest(self, password: str | None = None) -> TwilioRest:
        """The engine's client, with this account's credentials (or a wrong password)."""
        return TwilioRest(self.base_url, self.twilio.account_sid, password or self.password)

    @property
    def password(self) -> str:
        return _password()

    def call_url(self, call_sid: str) -> str:
        account = self.twilio.account_sid
        return f"{self.base_url}/2010-04-01/Accounts/{account}/Calls/{call_sid}.json"


def _password() -> str:
    """The REST password of the local account (derived from TWILIO_AUTH_TOKEN)."""
    return simulated_account(TWILIO_AUTH_TOKEN)[1]


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    twilio = SimulatedTwilio.for_auth_token(TWILIO_AUTH_TOKEN)
    async with trio.open_nursery() as nursery, httpx.AsyncClient(timeout=5) as http:
        base_url = await nursery.start(twilio.serve)
        yield Served(twilio, base_url, http)
        nursery.cancel_scope.cancel()


async def test_a_transfer_is_answered_recorded_and_replaces_the_stream(served: Served) -> None:
    call = served.twilio.calls.add(sid(1), "+15550100000", "+15550001111")
    with trio.fail_after(TEST_TIMEOUT_S):
        await served.rest().update_call(served.http, sid(1), transfer(ON_CALL))
        response = await served.http.post(
            served.call_url(sid(1)),
            data={"Twiml": transfer("+15559998888")},
            auth=(served.twilio.account_sid, served.password),
        )
    assert call.replaced.is_set()
    first, second = served.twilio.updates
    assert (first.call_sid, first.transferred_to) == (sid(1), ON_CALL)
    assert first.twiml == transfer(ON_CALL)
    assert first.at_s <= second.at_s
    assert call.update is first  # the first update ended the stream
    assert response.status_code == 200
    resource = response.json()
    assert resource["sid"] == sid(1)
    assert resource["account_sid"] == served.twilio.account_sid
    assert resource["status"] == "in-progress"
    assert (resource["from"], resource["to"]) == ("+15550100000", "+15550001111")
    assert [r.status for r in served.twilio.requests] == [200, 200]


@pytest.mark.parametrize(
    "auth",
    [None, ("right-account", "wrong-password"), ("AC" + "0" * 32, "right-password")],
    ids=["no-auth", "wrong-password", "wrong-account"],
)
async def test_wrong_credentials_are_refused_as_twilio_does(
    served: Served, auth: tuple[str, str] | None
) -> None:
    served.twilio.calls.add(sid(2), "+15550100000", "+15550001111")
    headers = {}
    if auth is not None:
        user = served.twilio.account_sid if auth[0] == "right-account" else auth[0]
        password = served.password if auth[1] == "right-password" else auth[1]
        credentials = base64.b64encode(f"{user}:{password}".encode()).decode()
        headers["Authorization"] = f"Basic {credentials}"
    with trio.fail_after(TEST_TIMEOUT_S):
        response = await served.http.post(
            served.call_url(sid(2)), data={"Twiml": transfer(ON_CALL)}, headers=headers
        )
        with pytest.raises(TwilioRestError, match="HTTP 401"):
            await served.rest("not-the-password").update_call(
                served.http, sid(2), transfer(ON_CALL)
            )
    assert response.status_code == 401
    assert response.json() == {
        "code": 20003,
        "message": "Authenticate",
        "more_info": "https://www.twilio.com/docs/errors/20003",
        "status": 401,
    }
    assert response.headers["www-authenticate"].startswith("Basic")
    assert served.twilio.updates == []


async def test_an_unknown_call_and_another_accounts_path_are_not_found(served: Served) -> None:
    auth = (served.twilio.account_sid, served.password)
    other_account = served.call_url(sid(3)).replace(served.twilio.account_sid, "AC" + "1" * 32)
    with trio.fail_after(TEST_TIMEOUT_S):
        unknown = await served.http.post(
            served.call_url(sid(3)), data={"Twiml": "<Response/>"}, auth=auth
        )
        foreign = await served.http.post(other_account, data={"Twiml": "<Response/>"}, auth=auth)
    for response in (unknown, foreign):
        assert response.status_code == 404
        body = response.json()
        assert (body["code"], body["status"]) == (20404, 404)
        assert body["more_info"] == "https://www.twilio.com/docs/errors/20404"
    assert served.twilio.updates == []


@pytest.mark.parametrize(
    "twiml",
    [
        "<Response><Dial>+15551234567</Response>",  # unclosed element
        "Connecting you now",  # not XML at all
        "<Dial>+15551234567</Dial>",  # no <Response> root
        '<!DOCTYPE r [<!ENTITY a "aaaa">]><Response>&a;</Response>',
    ],
    ids=["unclosed", "not-xml", "wrong-root", "doctype"],
)
async def test_twiml_twilio_could_not_parse_is_a_400_document_parse_failure(
    served: Served, twiml: str
) -> None:
    call = served.twilio.calls.add(sid(4), "+15550100000", "+15550001111")
    with trio.fail_after(TEST_TIMEOUT_S):
        response = await served.http.post(
            served.call_url(sid(4)),
            data={"Twiml": twiml},
            auth=(served.twilio.account_sid, served.password),
        )
    assert response.status_code == 400
    assert response.json() == {
        "code": 12100,
        "message": "Document parse failure",
        "more_info": "https://www.twilio.com/docs/errors/12100",
        "status": 400,
    }
    assert not call.replaced.is_set()
    assert served.twilio.updates == []


async def test_a_call_that_is_over_cannot_be_updated(served: Served) -> None:
    served.twilio.calls.add(sid(5), "+15550100000", "+15550001111")
    served.twilio.calls.hang_up(sid(5))
    with trio.fail_after(TEST_TIMEOUT_S):
        response = await served.http.post(
            served.call_url(sid(5)),
            data={"Twiml": transfer(ON_CALL)},
            auth=(served.twilio.account_sid, served.password),
        )
    assert response.status_code == 400
    assert response.json()["code"] == 21220


async def test_failed_updates_are_http_500_and_the_next_goes_through(served: Served) -> None:
    call = served.twilio.calls.add(sid(6), "+15550100000", "+15550001111")
    served.twilio.fail_next(2)
    rest = served.rest()
    with trio.fail_after(TEST_TIMEOUT_S):
        for _ in range(2):
            with pytest.raises(TwilioRestError, match="HTTP 500"):
                await rest.update_call(served.http, sid(6), transfer(ON_CALL))
        assert not call.replaced.is_set()
        await rest.update_call(served.http, sid(6), transfer(ON_CALL))
    assert call.replaced.is_set()
    assert [r.status for r in served.twilio.requests] == [500, 500, 200]
    assert len(served.twilio.updates) == 1


async def test_a_stalled_update_runs_into_the_engines_rest_timeout(
    mock_clock: trio.testing.MockClock,
) -> None:
    # Virtual time jumps only once every task has waited this long in real time, so the
    # loopback I/O happens before the clock moves on to the engine's deadline.
    mock_clock.autojump_threshold = 0.05
    twilio = SimulatedTwilio.for_auth_token(TWILIO_AUTH_TOKEN)
    call = twilio.calls.add(sid(7), "+15550100000", "+15550001111")
    twilio.stall_next(1)
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        base_url = await nursery.start(twilio.serve)
        rest = TwilioRest(base_url, twilio.account_sid, _password())
        began_s = trio.current_time()
        with pytest.raises(TwilioRestError, match=f"did not answer within {REST_TIMEOUT_S:g} s"):
            await rest.update_call(http, sid(7), transfer(ON_CALL))
        waited_s = trio.current_time() - began_s
        await rest.update_call(http, sid(7), transfer(ON_CALL))  # the stall was for one
        nursery.cancel_scope.cancel()
    assert REST_TIMEOUT_S <= waited_s < REST_TIMEOUT_S + 1
    assert [r.status for r in twilio.requests] == [None, 200]
    assert call.replaced.is_set()


async def test_an_update_makes_the_caller_send_stop_and_close_as_twilio_does(
    served: Served,
) -> None:
    """A media endpoint that never closes on its own: the stream ends because the
    update replaced it (stop, then the close handshake from the caller's side)."""
    received: list[dict[str, Any]] = []
    closed = trio.Event()

    async def endpoint(stream: trio.SocketStream) -> None:
        socket, _ = await accept(
            stream, check=lambda request: None, max_message_bytes=1 << 20,
            send_timeout_s=5, handshake_timeout_s=5,
        )  # fmt: skip
        try:
            while True:
                for message in await socket.receive_batch():
                    event = json.loads(message)
                    received.append(event)
                    if event["event"] == "start":  # the call is up: the engine transfers it
                        call_sid = event["start"]["callSid"]
                        nursery.start_soon(_transfer, served, call_sid)
        except WebSocketClosed:
            closed.set()

    config = CallerConfig("http://unused", PUBLIC_URL, TWILIO_AUTH_TOKEN, NUMBER)
    config = dataclasses.replace(config, twilio=served.twilio)
    summary = CallSummary(sid(8))
    live = served.twilio.calls.add(sid(8), config.from_number, NUMBER)
    validator = RequestValidator(TWILIO_AUTH_TOKEN)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, endpoint, 0)
        url = f"ws://127.0.0.1:{listeners[0].socket.getsockname()[1]}/twilio/media"
        with trio.fail_after(TEST_TIMEOUT_S):  # "silent" speaks for 12 s: far longer
            await caller_stream(summary, validator, url, {}, "silent", config, live)
            await closed.wait()
        nursery.cancel_scope.cancel()
    kinds = [event["event"] for event in received]
    assert kinds[:2] == ["connected", "start"]
    assert kinds[-1] == "stop"
    assert received[-1]["stop"] == {"accountSid": served.twilio.account_sid, "callSid": sid(8)}
    assert (summary.ended_by, summary.transferred_to) == ("twilio", ON_CALL)


async def _transfer(served: Served, call_sid: str) -> None:
    await served.rest().update_call(served.http, call_sid, transfer(ON_CALL))


BASE = {"TWILIO_AUTH_TOKEN": TWILIO_AUTH_TOKEN, "PORT": "8080"}


def test_without_an_account_the_engine_uses_the_simulated_twilio() -> None:
    access = twilio_access(settings_from_mapping(BASE))
    expected = SimulatedTwilio.for_auth_token(TWILIO_AUTH_TOKEN)
    assert access.mode == "simulated"
    assert access.problem is None
    assert access.rest is not None
    assert access.rest.base_url == "http://127.0.0.1:8082"  # PORT + 2
    assert access.rest.account_sid == expected.account_sid
    assert access.rest.auth_token == _password()
    # The REST password is derived, never the webhook token itself, and never shown.
    assert TWILIO_AUTH_TOKEN not in (access.rest.account_sid, access.rest.auth_token)
    assert access.rest.auth_token not in repr(access)


def test_a_real_account_goes_to_twilio_and_a_real_model_without_one_is_a_problem() -> None:
    account = "AC" + "ab" * 16
    real = twilio_access(settings_from_mapping(BASE | {"TWILIO_ACCOUNT_SID": account}))
    assert real.mode == "configured"
    assert real.rest == TwilioRest("https://api.twilio.com", account, TWILIO_AUTH_TOKEN)
    stranded = twilio_access(settings_from_mapping(BASE | {"OPENAI_API_KEY": "sk-test"}))
    assert (stranded.mode, stranded.rest) == ("not_configured", None)
    assert stranded.problem is not None
    assert "TWILIO_ACCOUNT_SID" in stranded.problem
    # The simulated account is never sent to an address that is not this machine.
    remote = BASE | {"TWILIO_API_BASE_URL": "https://api.twilio.com"}
    assert twilio_access(settings_from_mapping(remote)).rest is None


NUMBER = "+15557654321"


async def test_a_transfer_ends_the_simulated_callers_stream_end_to_end(
    fresh_database: str, tmp_path: Path
) -> None:
    """No TWILIO_ACCOUNT_SID, the simulated model: the engine's transfer goes to the
    simulated Twilio, which ends the caller's stream (stop, then the socket closes)."""
    twilio = SimulatedTwilio.for_auth_token(TWILIO_AUTH_TOKEN)
    async with trio.open_nursery() as nursery:
        rest_url = await nursery.start(twilio.serve)
        async with running_engine(
            fresh_database, tmp_path, MEDIA_PORT="0", TWILIO_API_BASE_URL=rest_url
        ) as engine:
            url = engine.bound_urls[0]
            await create_project(url, EMERGENCY_PROJECT, NUMBER)
            config = CallerConfig(url, PUBLIC_URL, TWILIO_AUTH_TOKEN, NUMBER, twilio=twilio)
            with trio.fail_after(30):
                summary = await place_call(config, "conversation")
                record = await wait_for_final(fresh_database, summary.call_sid)
            health = (await http_request("GET", f"{url}/health/detailed")).json()
        nursery.cancel_scope.cancel()
    assert summary.error is None
    assert (summary.ended_by, summary.transferred_to) == ("twilio", ON_CALL)
    (update,) = twilio.updates
    assert update.call_sid == summary.call_sid
    assert update.twiml is not None
    assert f'<Dial timeout="30">{ON_CALL}</Dial>' in update.twiml
    call = twilio.calls.get(summary.call_sid)
    assert call is not None
    assert call.status == "completed"  # the caller's side hung up once its stream ended
    assert (record["status"], record["end_reason"], record["intent"]) == (
        "completed",
        "transferred",
        "emergency",
    )
    assert health["services"]["twilio"] == {"status": "simulated"}
    assert health["configWarnings"] == []

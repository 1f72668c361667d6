"""What a stranger can send to a running engine, over real sockets against a real
PostgreSQL: nothing they send blocks the engine, reaches a log line, an alert or a row
unescaped, or gets a 500.

* Twilio's webhooks: a huge or many-field form is refused at once (413/400) while
  ``/health`` keeps answering; malformed identifiers get 400 naming the field; every
  refusal is counted in ``/metrics``;
* hostile text (newlines, carriage returns, NUL, ANSI escapes) in webhooks and alerts
  forges no log line and is stored escaped or without its NUL;
* deeply nested JSON to the admin API is a 422; paths are percent-decoded once; the
  dashboard's scripts run under a CSP without ``'unsafe-inline'``.
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import msgspec
import trio
from twilio.request_validator import RequestValidator

from actors.store.db import open_database
from api.root.engine import Engine
from engine.alert_level import AlertLevel
from engine.logs import JsonFormatter, TextFormatter
from engine.messages import Alert
from tests.helpers import (
    ADMIN_TOKEN,
    PUBLIC_URL,
    TWILIO_AUTH_TOKEN,
    HttpResponse,
    http_request,
    running_engine,
    sid,
)
from tests.test_observability import samples
from tests.test_twilio_signature import MultiParams
from tests.test_twilio_webhooks import ANSWERED, call, call_row, setup_project, twilio_post
from tests.test_untrusted_text import HOSTILE, assert_no_forged_line, captured

HEALTH_BOUND_S = 1.0  # generous: the point is that /health is not blocked, not speed


def unsigned(engine: Engine, path: str, params: dict[str, str]) -> Any:
    return twilio_post(engine, path, params, headers={})


async def refusals(engine: Engine) -> dict[tuple[str, str], float]:
    response = await http_request("GET", f"{engine.bound_urls[0]}/metrics", token=ADMIN_TOKEN)
    return {
        (dict(labels)["edge"], dict(labels)["reason"]): value
        for (name, labels), value in samples(response.body.decode()).items()
        if name == "afterhours_refusals_total" and value  # the known reasons start at 0
    }


async def test_a_20000_field_form_is_refused_at_once_while_health_keeps_answering(
    fresh_database: str, tmp_path: Path
) -> None:
    form = {f"Field{n}": "v" for n in range(20_000)}  # ~200 kB, no signature
    health_latencies_s: list[float] = []
    refused: list[HttpResponse] = []
    async with running_engine(fresh_database, tmp_path) as engine:
        base = engine.bound_urls[0]

        async def flood() -> None:
            for _ in range(5):
                refused.append(await http_request("POST", f"{base}/twilio/voice", form=form))

        async with trio.open_nursery() as nursery:
            began_s = trio.current_time()
            nursery.start_soon(flood)
            while len(refused) < 5:
                asked_s = trio.current_time()
                answer = await http_request("GET", f"{base}/health")
                assert answer.status == 200
                health_latencies_s.append(trio.current_time() - asked_s)
            flood_s = trio.current_time() - began_s
        counted = await refusals(engine)
    assert [r.status for r in refused] == [413] * 5
    assert refused[0].json() == {"error": "the body is over 16384 bytes"}
    assert flood_s < 5 * HEALTH_BOUND_S  # five refusals, each well under a second
    assert health_latencies_s
    assert max(health_latencies_s) < HEALTH_BOUND_S
    assert counted[("voice", "body_too_large")] == 5


async def test_a_declared_mebibyte_is_refused_from_its_content_length(
    fresh_database: str, tmp_path: Path
) -> None:
    async with running_engine(fresh_database, tmp_path) as engine:
        base = engine.bound_urls[0]
        # Nothing of the body is sent: only its declared length can have refused it.
        with trio.fail_after(2):
            voice = await http_request("POST", f"{base}/twilio/voice", declared_length=1 << 20)
            status = await http_request("POST", f"{base}/twilio/status", declared_length=20_000)
            # Not a webhook path: the API's own limit, a 404, and no webhook refusal.
            stray = await http_request("POST", f"{base}/twilio/voice/", body=b"x" * 20_000)
        counted = await refusals(engine)
        requests = engine.app.request_counts()
    assert (voice.status, status.status, stray.status) == (413, 413, 404)
    assert counted[("voice", "body_too_large")] == 1
    assert counted[("status", "body_too_large")] == 1
    assert requests[("/twilio", 404)] == 1


async def test_bad_forms_get_400_naming_the_field_and_every_refusal_is_counted(
    fresh_database: str, tmp_path: Path
) -> None:
    good = call(sid(1), ANSWERED)
    async with running_engine(fresh_database, tmp_path) as engine:
        await setup_project(engine)
        base = engine.bound_urls[0]
        many = await http_request(
            "POST", f"{base}/twilio/voice", form=good | {f"x{n}": "" for n in range(150)}
        )
        bad_sid = await unsigned(engine, "/twilio/voice", good | {"CallSid": "CA100"})
        no_to = await twilio_post(engine, "/twilio/voice", {"CallSid": sid(2)})
        durations = {
            value: await twilio_post(
                engine, "/twilio/status", good | {"CallStatus": "completed", "CallDuration": value}
            )
            for value in ("²", "1e22", "-1")
        }
        forged = await unsigned(engine, "/twilio/voice", good)
        fine = await twilio_post(engine, "/twilio/status", good | {"CallDuration": "42"})
        counted = await refusals(engine)
        row = await call_row(fresh_database, sid(1))
        async with open_database(fresh_database, connect_timeout_s=5) as db:
            calls = await db.fetchval("SELECT count(*) FROM calls", timeout_s=5)
    assert many.status == 400
    assert many.json()["error"] == "the form has over 100 fields"
    assert (bad_sid.status, bad_sid.json()["field"]) == (400, "CallSid")
    assert (no_to.status, no_to.json()) == (400, {"error": "To: missing", "field": "To"})
    for value, answer in durations.items():
        assert answer.status == 400, value
        assert answer.json() == {
            "error": "CallDuration: expected whole seconds, at most 6 digits",
            "field": "CallDuration",
        }
    assert forged.status == 403
    assert fine.status == 204
    assert counted == {
        ("voice", "too_many_fields"): 1,
        ("voice", "bad_format"): 2,
        ("status", "bad_format"): 3,
        ("voice", "bad_signature"): 1,
    }
    assert (row["twilio_duration_s"], calls) == (42, 1)  # only the accepted callback


async def test_hostile_text_forges_no_log_line_and_is_stored_escaped_or_without_nul(
    fresh_database: str, tmp_path: Path
) -> None:
    hostile_sid = sid(10) + HOSTILE
    webhooks = [
        call(hostile_sid, ANSWERED),
        call(sid(11), ANSWERED) | {"From": "+15550001111" + HOSTILE},
        call(sid(12), ANSWERED + HOSTILE),
    ]
    # The status is not one of the identifiers checked for form: signed, it is stored.
    status_callback = call(sid(13), ANSWERED) | {"CallStatus": "completed" + HOSTILE}
    with captured(TextFormatter()) as text_log, captured(JsonFormatter()) as json_log:
        async with running_engine(fresh_database, tmp_path) as engine:
            await setup_project(engine)
            answers = [await unsigned(engine, "/twilio/voice", form) for form in webhooks]
            answers += [await twilio_post(engine, "/twilio/voice", form) for form in webhooks]
            unsigned_sid = await unsigned(engine, "/twilio/voice", call(sid(14), ANSWERED))
            stored = await twilio_post(engine, "/twilio/status", status_callback)
            # An alert carrying a stranger's text, as api/http/app.py raises one for a request
            # that failed (its path is whatever was asked for).
            engine.mailboxes["alerts"].send_nowait(
                Alert(
                    AlertLevel.ERROR,
                    "apiError",
                    "HTTP handler failed",
                    f"GET /admin/{HOSTILE}: KeyError (request 0123)",
                    metadata={"path": f"/admin/{HOSTILE}"},
                )
            )
            events, calls = await _rows_when_written(fresh_database)
    assert [a.status for a in answers] == [400] * 6
    assert [a.json()["field"] for a in answers] == ["CallSid", "From", "To"] * 2
    assert all(HOSTILE not in a.body.decode() for a in answers)
    assert (unsigned_sid.status, stored.status) == (403, 204)
    for output, formatter in ((text_log, TextFormatter()), (json_log, JsonFormatter())):
        assert_no_forged_line(output.getvalue(), formatter)
        assert "\x00" not in output.getvalue()
        assert "\x1b" not in output.getvalue()
    assert "GET /admin/x\\nCRITICAL afterhours: FORGED LINE\\r\\x00\\x1b[31m" in text_log.getvalue()
    # event_log: the bad signature (a well-formed CallSid) and the alert, escaped.
    assert {(r["type"], r["call_sid"]) for r in events} == {
        ("twilioError", sid(14)),
        ("apiError", None),
    }
    (api_error,) = [r for r in events if r["type"] == "apiError"]
    assert "\\nCRITICAL afterhours: FORGED LINE\\r\\x00\\x1b[31m" in api_error["message"]
    assert msgspec.json.decode(api_error["metadata"])["path"].startswith("/admin/x\\nCRITICAL")
    for row in events:
        assert not re.search(r"[\x00-\x1f\x7f-\x9f\u2028]", row["message"] + row["metadata"])
    # calls: only the signed status callback, its NUL replaced, the rest as sent.
    assert [(r["call_sid"], r["twilio_status"]) for r in calls] == [
        (sid(13), "completed" + HOSTILE.replace("\x00", "\ufffd"))
    ]


async def _rows_when_written(dsn: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """event_log and calls, once the store has written the two events and one call."""
    with trio.fail_after(10):
        while True:
            async with open_database(dsn, connect_timeout_s=5) as db:
                events = await db.fetch(
                    "SELECT type, call_sid, message, metadata::text AS metadata FROM event_log",
                    timeout_s=5,
                )
                calls = await db.fetch("SELECT call_sid, twilio_status FROM calls", timeout_s=5)
            if len(events) >= 2 and calls:
                return [dict(r) for r in events], [dict(r) for r in calls]
            await trio.sleep(0.05)


async def test_deeply_nested_json_to_the_admin_api_is_a_422(
    fresh_database: str, tmp_path: Path
) -> None:
    nested = {
        "arrays": b"[" * 100_000,
        "objects": b'{"a":' * 50_000,
        "in-a-project": b'{"id":"x","tools":' + b"[" * 5_000 + b"]" * 5_000 + b"}",
    }
    async with running_engine(fresh_database, tmp_path) as engine:
        base = f"{engine.bound_urls[0]}/admin/projects"
        await setup_project(engine)
        answers = {}
        for name, body in nested.items():
            for method, url in (("POST", base), ("PUT", f"{base}/x"),
                                ("PATCH", f"{base}/smith-plumbing"),
                                ("POST", f"{base}/smith-plumbing/phone-numbers")):  # fmt: skip
                answers[(name, method, url)] = await http_request(
                    method, url, body=body, token=ADMIN_TOKEN
                )
        health = await http_request("GET", f"{engine.bound_urls[0]}/health")
    for key, answer in answers.items():
        assert answer.status == 422, (key, answer.body)
        assert answer.json()["fields"] == [
            {"field": "body", "message": "not a JSON object: nested too deeply"}
        ], key
    assert health.status == 200


async def test_paths_are_percent_decoded_once(fresh_database: str, tmp_path: Path) -> None:
    async with running_engine(fresh_database, tmp_path) as engine:
        base = engine.bound_urls[0]
        await setup_project(engine)
        twice = await http_request("GET", f"{base}/admin/calls/CA%252D", token=ADMIN_TOKEN)
        unknown = await http_request("GET", f"{base}/health%252F")
        # Hypercorn's one decoding turns %2B into the + of an E.164 number.
        released = await http_request(
            "DELETE", f"{base}/admin/phone-numbers/%2B{ANSWERED[1:]}", token=ADMIN_TOKEN
        )
        again = await http_request(
            "DELETE", f"{base}/admin/phone-numbers/%2B{ANSWERED[1:]}", token=ADMIN_TOKEN
        )
    assert twice.status == 404
    assert twice.json()["error"] == "no call 'CA%2D'"
    assert (unknown.status, unknown.json()["error"]) == (404, "no route for /health%2F")
    assert (released.status, again.status) == (204, 404)


async def test_the_dashboard_allows_only_its_own_script_by_hash(
    fresh_database: str, tmp_path: Path
) -> None:
    async with running_engine(fresh_database, tmp_path) as engine:
        page = await http_request("GET", f"{engine.bound_urls[0]}/dashboard")
    policy = dict(
        directive.strip().split(" ", 1)
        for directive in page.headers["content-security-policy"].split(";")
    )
    (script,) = re.findall(rb"<script>(.*?)</script>", page.body, flags=re.DOTALL)
    digest = base64.b64encode(hashlib.sha256(script).digest()).decode()
    assert policy["script-src"] == f"'sha256-{digest}'"
    assert "unsafe-inline" not in policy["script-src"]
    assert "unsafe-eval" not in policy["script-src"]
    assert policy["default-src"] == "'none'"
    assert not re.search(rb"\son[a-z]+=", page.body)  # no inline handler the hash cannot cover


async def test_a_signed_webhook_with_repeated_names_is_still_answered(
    fresh_database: str, tmp_path: Path
) -> None:
    """Signed by Twilio's own validator over a form with a repeated name: our check
    (one pass, distinct values sorted) accepts what Twilio's would."""
    pairs = [*call(sid(20), ANSWERED).items(), ("Caller", "+15550001111"),
             ("StirVerstat", "TN-Validation-Passed-A"), ("Repeated", "b"), ("Repeated", "a"),
             ("Repeated", "b")]  # fmt: skip
    path = "/twilio/voice"
    signature = RequestValidator(TWILIO_AUTH_TOKEN).compute_signature(
        PUBLIC_URL + path, MultiParams(pairs)
    )
    async with running_engine(fresh_database, tmp_path) as engine:
        await setup_project(engine)
        answer = await http_request(
            "POST",
            engine.bound_urls[0] + path,
            body=urlencode(pairs).encode(),
            headers={"X-Twilio-Signature": signature},
        )
    assert answer.status == 200, answer.body
    assert "<Connect><Stream" in answer.body.decode()

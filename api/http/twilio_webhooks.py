"""Twilio's HTTP webhooks: the incoming call (``POST /twilio/voice``) and the call status
callback (``POST /twilio/status``).

Before anything else a request's form is bounded and its identifiers checked
(engine/twilio_form.py: 413 for a body over 16 KiB, 400 for over 100 fields or a
malformed ``CallSid``/``AccountSid``/``To``/``From``/``CallDuration``, naming the field),
and the signature is checked by engine/twilio_signature.py. Every refusal is counted in
``Refusals`` (edge ``voice`` or ``status``) and logs nothing of what was sent.

Every request must carry a valid ``X-Twilio-Signature`` over the URL Twilio used
(``PUBLIC_URL`` + path + query) and the form parameters; anything else gets 403 and an
event_log entry, nothing more. The incoming call is routed by its ``To`` number, from the
routing snapshot in memory (no database round trip, so a database outage or a heavy
report does not delay it; its records spool until PostgreSQL is back): a number
this engine answers gets ``<Connect><Stream>`` to the media stream with the project and a
one-time stream token; a number on Vapi gets the TwiML Vapi answers the call's creation
with (api/http/vapi_calls.py; recorded at once, system ``vapi``), or, when Vapi does not
answer within ``VAPI_CREATE_TIMEOUT_S`` or errs, the project's ``vapi_fallback`` (this
engine, or the on-call number), with a ``vapiError`` alert and the reason in the record's
``vapi_fallback``; an unknown number, a number another system answers, or an engine at
capacity gets polite TwiML (dial the on-call number if the project has one) and the call
is recorded as missed with the reason. The status callback updates the call's record on
whichever instance it reaches (the store's merge makes the order irrelevant).
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

from api.http.asgi import Request, Response
from api.http.vapi_calls import VapiUnavailable
from engine.admission import Admission
from engine.alert_level import AlertLevel
from engine.early_requests import DiscardEarly, OpenEarly
from engine.mailbox import RECORD_SEND_TIMEOUT_S
from engine.messages import Alert, CallUpdated, utc_now
from engine.metric_samples import CallFinished
from engine.stream_tokens import issue_token
from engine.twilio_form import (
    MAX_BODY_BYTES,
    FormRefused,
    call_duration_s,
    check_identifiers,
    parse_form,
)
from engine.twilio_signature import is_valid_signature
from engine.twiml import connect_stream, turn_away

if TYPE_CHECKING:
    from collections.abc import Callable

    from api.http.vapi_calls import VapiCalls
    from engine.config import Settings
    from engine.early_requests import EarlyRequest
    from engine.mailbox import Outbox
    from engine.messages import StoreWrite
    from engine.metric_samples import MetricsSample
    from engine.refusals import Refusals
    from engine.routing import NumberRoute, RoutingSnapshot

log = logging.getLogger("afterhours.twilio")

UNKNOWN_NUMBER = "We're sorry, this number is not in service. Goodbye."
ELSEWHERE = "We're sorry, we cannot take your call on this line right now."
AT_CAPACITY = "All of our lines are busy right now."
DRAINING = "We're sorry, we cannot take your call right now."
VAPI_UNAVAILABLE = "Please hold while we connect you."

# Twilio's final call statuses, as our call statuses.
_FINAL: dict[str, Literal["completed", "missed", "failed"]] = {
    "completed": "completed",
    "busy": "missed",
    "no-answer": "missed",
    "canceled": "missed",
    "failed": "failed",
}


class FormParams(dict[str, str]):
    """Form parameters by name; the identifiers the engine reads are given once
    (``check_identifiers``), and the signature was checked over every pair as sent."""


ROUTES = {("POST", "/twilio/voice"), ("POST", "/twilio/status")}
_EDGES: dict[str, Literal["voice", "status"]] = {
    "/twilio/voice": "voice",
    "/twilio/status": "status",
}


class TwilioWebhooks:
    def __init__(
        self,
        settings: Settings,
        *,
        routes: Callable[[], RoutingSnapshot],
        store: Outbox[StoreWrite],
        alerts: Outbox[Alert],
        calls_at_capacity: Callable[[], bool],
        stream_url: Callable[[], str],
        early: Outbox[EarlyRequest] | None = None,
        admission: Admission | None = None,
        metrics: Outbox[MetricsSample] | None = None,
        refusals: Refusals | None = None,
        instance: str | None = None,  # this process's id, on the rows it creates (leases.py)
        vapi: VapiCalls | None = None,  # for numbers on the vapi system; None: not configured
    ) -> None:
        self._vapi = vapi
        token = settings.twilio_auth_token
        self._instance = instance
        self._signing_key = token.reveal().encode() if token else None
        self._refusals = refusals
        self._stream_key = token.reveal().encode() if token else b""
        self._public_url = settings.public_url
        self._routes = routes  # the routing actor's current snapshot
        self._store = store
        self._alerts = alerts
        self._at_capacity = calls_at_capacity
        self._stream_url = stream_url  # the media listener's public URL, known once it binds
        self._early = early
        self._admission = admission or Admission()
        self._metrics = metrics

    async def handle(self, request: Request) -> Response | None:
        edge = _EDGES.get(request.path)
        if edge is None:
            return None
        if request.method != "POST":
            return Response(405, {"error": "use POST"}, [(b"allow", b"POST")])
        # Bounds, then formats, then the signature: each step's cost is bounded by the
        # one before, and a refusal costs O(body) (engine/twilio_form.py says why).
        try:
            pairs = parse_form(request.body)
            check_identifiers(pairs, edge)
        except FormRefused as refused:
            self._refuse(edge, refused.reason)
            body = {"error": refused.message}
            if refused.field is not None:
                body["field"] = refused.field
            return Response(refused.status, body)
        params = FormParams(pairs)
        if not self._signed(request, pairs):
            self._refuse(edge, "bad_signature")
            await self._report_bad_signature(request, params)
            return Response(403, {"error": "invalid X-Twilio-Signature"})
        if request.path == "/twilio/voice":
            return await self._incoming_call(params)
        await self._status_callback(params)
        return Response(204, None)

    def body_too_large(self, path: str) -> Response:
        """The answer to a body over ``MAX_BODY_BYTES``, refused by the API before it was
        read (or while it was read): counted like every other refusal."""
        self._refuse(_EDGES.get(path, "voice"), "body_too_large")
        return Response(413, {"error": f"the body is over {MAX_BODY_BYTES} bytes"})

    def _refuse(self, edge: Literal["voice", "status"], reason: str) -> None:
        if self._refusals is not None:
            self._refusals.refuse(edge, reason)

    def _signed(self, request: Request, pairs: list[tuple[str, str]]) -> bool:
        signature = request.headers.get("x-twilio-signature", "")
        if self._signing_key is None or not signature:
            return False
        query = f"?{request.query_string}" if request.query_string else ""
        url = self._public_url + request.path + query
        return is_valid_signature(self._signing_key, url, pairs, signature)

    async def _report_bad_signature(self, request: Request, params: FormParams) -> None:
        # The formats have passed: the CallSid is CA + 32 hex digits, safe to show.
        call_sid = params.get("CallSid")
        log.warning(
            "rejected %s: missing or invalid signature (CallSid %s)", request.path, call_sid
        )
        self._alerts.send_nowait(
            Alert(
                AlertLevel.WARNING,
                "twilioError",
                "Webhook signature rejected",
                f"{request.path} arrived without a valid X-Twilio-Signature",
                call_sid=call_sid,
                metadata={"path": request.path},
            )
        )

    async def _incoming_call(self, params: FormParams) -> Response:
        to_number = params.get("To", "")
        # From memory: answering never waits on PostgreSQL (it may be away, or busy).
        route = self._routes().route(to_number)
        if route is None:
            await self._record_missed(params, None, "unknown_number")
            return _twiml(turn_away(UNKNOWN_NUMBER, None))
        if route.system == "vapi":
            return await self._vapi_call(params, route)
        if route.system != "openai":
            await self._record_missed(params, route, "answered_elsewhere")
            return _twiml(turn_away(ELSEWHERE, route.on_call_number))
        return await self._answer_here(params, route)

    async def _answer_here(
        self, params: FormParams, route: NumberRoute, *, vapi_fallback: str | None = None
    ) -> Response:
        """This engine takes the call: a media stream, or polite TwiML when it cannot."""
        missed = partial(self._record_missed, params, route, vapi_fallback=vapi_fallback)
        if self._admission.draining:  # a deploy or stop: live calls finish, new ones go
            await missed("engine_draining")
            return _twiml(turn_away(DRAINING, route.on_call_number))
        if self._at_capacity():
            await missed("engine_at_capacity")
            return _twiml(turn_away(AT_CAPACITY, route.on_call_number))
        if overloaded := self._admission.overloaded:  # near saturation: those let in first
            counted = f"engine_overloaded_{overloaded}"  # which limit, for /metrics
            await missed("engine_overloaded", counted_as=counted)
            return _twiml(turn_away(AT_CAPACITY, route.on_call_number))
        call_sid = params.get("CallSid", "")
        await self._record_answered(
            params, route, engine_instance=self._instance, system="openai",
            vapi_fallback=vapi_fallback,
        )  # fmt: skip
        # Wall-clock time: the stream may reach another instance (Trio's clock is per process).
        token = issue_token(self._stream_key, call_sid, route.project_id, time.time())
        parameters = {"project": route.project_id, "token": token, "callSid": call_sid}
        if self._early is not None:
            # The model handshake overlaps Twilio opening the stream (dropped when busy).
            project = self._routes().projects.get(route.project_id)
            self._early.send_nowait(OpenEarly(call_sid, project.model if project else None))
        return _twiml(connect_stream(self._stream_url(), parameters))

    async def _vapi_call(self, params: FormParams, route: NumberRoute) -> Response:
        """Vapi takes the call (its TwiML bridges Twilio to it), recorded here at once;
        when Vapi cannot, within its budget, the project's fallback does: this engine,
        or its on-call number. Never silence."""
        call_sid = params.get("CallSid", "")
        try:
            if self._vapi is None:
                raise VapiUnavailable("vapi_not_configured", "Vapi is not configured")
            created = await self._vapi.create(route, params.get("From", ""), call_sid)
        except VapiUnavailable as unavailable:
            return await self._vapi_fallback(params, route, unavailable)
        # No engine_instance: Vapi holds the call, so this process's lease must never
        # sweep it; Twilio's status callback and Vapi's report end it.
        await self._record_answered(params, route, system="vapi", vapi_call_id=created.call_id)
        return _twiml(created.twiml)

    async def _vapi_fallback(
        self, params: FormParams, route: NumberRoute, unavailable: VapiUnavailable
    ) -> Response:
        project = self._routes().projects.get(route.project_id)
        on_call = project is not None and project.vapi_fallback == "on_call"
        answered_by = "the on-call number" if on_call and route.on_call_number else "this engine"
        log.warning(
            "call %s to a Vapi number: %s; answered by %s",
            params.get("CallSid"), unavailable.detail, answered_by,
        )  # fmt: skip
        self._refuse("voice", unavailable.reason)  # why Vapi did not, whoever answers
        self._alerts.send_nowait(
            Alert(
                AlertLevel.ERROR,
                "vapiError",
                "Vapi did not take a call",
                f"{unavailable.detail}; the caller was answered by {answered_by}",
                project_id=route.project_id,
                call_sid=params.get("CallSid"),
                metadata={"reason": unavailable.reason, "number": route.number},
            )
        )
        if on_call and route.on_call_number:
            await self._record_missed(
                params, route, "vapi_unavailable", vapi_fallback=unavailable.reason, system="vapi"
            )
            return _twiml(turn_away(VAPI_UNAVAILABLE, route.on_call_number))
        # No on-call number to send them to: this engine rather than a dead end.
        return await self._answer_here(params, route, vapi_fallback=unavailable.reason)

    async def _status_callback(self, params: FormParams) -> None:
        twilio_status = params.get("CallStatus", "")
        if twilio_status in _FINAL and self._early is not None:
            # Ended before (or without) its stream here: an early session is not needed.
            self._early.send_nowait(DiscardEarly(params.get("CallSid", "")))
        duration = params.get("CallDuration", "")
        now = utc_now()
        seconds = call_duration_s(duration)  # checked by check_identifiers: digits or absent
        await self._record(
            CallUpdated(
                params.get("CallSid", ""),
                source="twilio",
                from_number=params.get("From"),
                to_number=params.get("To"),
                status=_FINAL.get(twilio_status),
                twilio_status=twilio_status or None,
                twilio_duration_s=seconds,
                ended_at=now if twilio_status in _FINAL else None,
                started_at=now - timedelta(seconds=seconds) if seconds is not None else None,
            )
        )

    async def _record_answered(self, params: FormParams, route: NumberRoute, **fields: Any) -> None:
        """The record of a call taken (here or by Vapi): live from now."""
        await self._record(
            CallUpdated(
                params.get("CallSid", ""),
                project_id=route.project_id,
                from_number=params.get("From"),
                to_number=route.number,
                status="active",
                started_at=utc_now(),
                **fields,
            )
        )

    async def _record_missed(
        self,
        params: FormParams,
        route: NumberRoute | None,
        reason: str,
        *,
        counted_as: str | None = None,
        vapi_fallback: str | None = None,
        system: Literal["openai", "vapi"] | None = None,
    ) -> None:
        self._refuse("voice", counted_as or reason)  # a caller turned away is a refusal too
        if self._metrics is not None:
            project_id = route.project_id if route else None
            self._metrics.send_nowait(CallFinished(project_id, "missed", reason, 0.0))
        now: datetime = utc_now()
        await self._record(
            CallUpdated(
                params.get("CallSid", ""),
                project_id=route.project_id if route else None,
                from_number=params.get("From"),
                to_number=params.get("To"),
                status="missed",
                end_reason=reason,
                started_at=now,
                ended_at=now,
                duration_s=0.0,
                system=system if system is not None else ("openai" if route else None),
                vapi_fallback=vapi_fallback,
            )
        )

    async def _record(self, update: CallUpdated) -> None:
        if await self._store.send_within(update, RECORD_SEND_TIMEOUT_S):
            return
        log.error("call %s: the store's inbox stayed full; record not queued", update.call_sid)


def _twiml(xml: str) -> Response:
    return Response(200, xml.encode(), [], content_type=b"text/xml")

"""The server messages the simulated Vapi posts about a call, shaped as Vapi's are
(engine/vapi_messages.py lists the fields read), and their delivery: ``POST`` to the
configured server URL with the ``x-vapi-secret`` header, waiting at most 20 s for an
answer as Vapi does, never retried (Vapi's default).

The cost is plausible, not Vapi's price list: per minute, Vapi's platform fee 0.05 USD,
speech-to-text 0.01, the language model 0.02, text-to-speech 0.036, and no transport
(with the bypass, Twilio bills the business for the line, not Vapi).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal

import httpx
import trio

log = logging.getLogger("afterhours.simulator.vapi")

DELIVERY_TIMEOUT_S: Final = 20.0  # Vapi's default server timeout
PER_MINUTE_USD: Final = {"transport": 0.0, "stt": 0.01, "llm": 0.02, "tts": 0.036, "vapi": 0.05}


@dataclass
class SimulatedCall:
    """One call the simulated Vapi created, and what happened on its stream."""

    id: str
    phone_number_id: str
    customer_number: str
    metadata: dict[str, Any]
    assistant_id: str | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    status: Literal["queued", "in-progress", "ended"] = "queued"
    call_sid: str | None = None  # Twilio's, from the stream's start
    started_at: datetime | None = None
    ended_at: datetime | None = None
    ended_reason: str | None = None
    marks_returned: int = 0
    # Vapi's messages shape: role user/bot, message, secondsFromStart.
    messages: list[dict[str, Any]] = field(default_factory=list)

    def call_object(self) -> dict[str, Any]:
        """Vapi's Call object, as its messages carry it."""
        call: dict[str, Any] = {
            "id": self.id,
            "orgId": "00000000-0000-4000-8000-000000000000",
            "type": "inboundPhoneCall",
            "status": self.status,
            "createdAt": _iso(self.created_at),
            "phoneCallProvider": "twilio",
            "phoneCallTransport": "pstn",
            "phoneCallProviderBypassEnabled": True,
            "phoneNumberId": self.phone_number_id,
            "customer": {"number": self.customer_number},
            "metadata": self.metadata,
        }
        if self.assistant_id:
            call["assistantId"] = self.assistant_id
        if self.call_sid:
            call["phoneCallProviderId"] = self.call_sid
        return call


@dataclass(frozen=True, slots=True)
class Delivery:
    """One server message posted, and the HTTP status it got (``None``: no answer)."""

    type: str
    call_id: str
    status: int | None


def status_update(call: SimulatedCall) -> dict[str, Any]:
    message: dict[str, Any] = {
        "type": "status-update",
        "status": call.status,
        "call": call.call_object(),
        "timestamp": _epoch_ms(),
    }
    if call.ended_reason is not None:
        message["endedReason"] = call.ended_reason
    return {"message": message}


def end_of_call_report(call: SimulatedCall) -> dict[str, Any]:
    started = call.started_at or call.created_at
    ended = call.ended_at or datetime.now(UTC)
    duration_s = max(0.0, (ended - started).total_seconds())
    costs = {kind: round(rate * duration_s / 60, 6) for kind, rate in PER_MINUTE_USD.items()}
    total = round(sum(costs.values()), 6)
    transcript = "\n".join(
        f"{'User' if m['role'] == 'user' else 'AI'}: {m['message']}" for m in call.messages
    )
    return {
        "message": {
            "type": "end-of-call-report",
            "timestamp": _epoch_ms(),
            "endedReason": call.ended_reason or "customer-ended-call",
            "call": call.call_object(),
            "phoneNumber": {"id": call.phone_number_id},
            "customer": {"number": call.customer_number},
            "artifact": {"messages": call.messages, "transcript": transcript},
            "analysis": {"summary": _summary(call)},
            "startedAt": _iso(started),
            "endedAt": _iso(ended),
            "durationSeconds": round(duration_s, 3),
            "cost": total,
            "costBreakdown": {**costs, "total": total, "llmPromptTokens": 900 * len(call.messages),
                              "llmCompletionTokens": 40 * len(call.messages)},
        }
    }  # fmt: skip


def _summary(call: SimulatedCall) -> str:
    turns = sum(1 for m in call.messages if m["role"] == "user")
    return f"Simulated call: the caller spoke {turns} time(s); the assistant answered each."


async def deliver(
    url: str, secret: str, payload: dict[str, Any], deliveries: list[Delivery]
) -> None:
    """Post one server message; its outcome is appended to ``deliveries``."""
    message = payload["message"]
    status: int | None = None
    with trio.move_on_after(DELIVERY_TIMEOUT_S):
        try:
            async with httpx.AsyncClient(timeout=DELIVERY_TIMEOUT_S) as http:
                response = await http.post(url, json=payload, headers={"x-vapi-secret": secret})
            status = response.status_code
        except httpx.HTTPError as exc:
            log.info("simulated Vapi: %s not delivered: %s", message["type"], exc)
    deliveries.append(Delivery(message["type"], message["call"]["id"], status))


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _epoch_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)

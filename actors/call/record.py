"""The call's final record, from what the core knows. Pure."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from engine.messages import CallUpdated, utc_now
from engine.pricing import call_cost_usd

if TYPE_CHECKING:
    from datetime import datetime

    from actors.call.core import CallCore
    from actors.call.setup import CallEnded, CallSetup


def call_record(
    setup: CallSetup,
    core: CallCore,
    ended: CallEnded,
    *,
    intent: Literal["emergency", "routine", "unknown"] | None,
    started_at: datetime,
    duration_s: float,
    first_audio_ms: int | None,
) -> CallUpdated:
    usage = core.usage
    return CallUpdated(
        setup.call_sid,
        project_id=setup.project.id,
        status="failed" if ended.failed else "completed",
        intent=intent,
        end_reason=ended.reason,
        error=ended.error,
        started_at=started_at,
        ended_at=utc_now(),
        duration_s=round(duration_s, 3),
        transcript=core.transcript.turns(),
        usage=usage,
        cost_usd=call_cost_usd(usage, duration_s, setup.prices),
        time_to_first_audio_ms=first_audio_ms,
        stream_sid=setup.stream_sid,
        engine_instance=setup.engine_instance,
    )

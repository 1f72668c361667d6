"""Opening and configuring a model session for a call (I/O). The first one, a
reconnect after a drop, and a renewal before the session's cap are all made here."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from actors.call.tools import BUILTIN_TOOLS
from actors.model_link import CONNECT_ERRORS, open_model_socket
from engine.metric_samples import ModelConnected
from engine.realtime_codec import Persona, TurnDetection, encode_session_update
from engine.ws import WebSocket, WebSocketClosed

if TYPE_CHECKING:
    from collections.abc import Callable

    from actors.call.setup import CallSetup
    from engine.metric_samples import MetricsSample
    from engine.projects import Project

log = logging.getLogger("afterhours.call")

# Reconnect attempts after the model socket drops: the wait before each retry, and the
# most a reconnection may take in all before the call is ended politely.
RECONNECT_BACKOFF_S = (0.2, 0.5, 1.0, 2.0)
RECONNECT_BUDGET_S = 15.0
# The first connection: retries after a quick refusal, within one connect timeout.
FIRST_BACKOFF_S = (0.2, 0.5, 1.0)


class ModelUnavailable(Exception):
    """No model session could be opened within the budget."""


def persona_of(project: Project) -> Persona:
    """The project's side of its calls' sessions, as the codec takes it."""
    return Persona(
        instructions=project.instructions,
        language=project.language,
        voice=project.voice,
        tools=project.tools,
    )


async def configure(model: WebSocket, setup: CallSetup, event_id: str) -> None:
    """This call's session: the project's instructions, tools and voice settings."""
    project = setup.project
    await model.send_text(
        encode_session_update(
            persona_of(project),
            model=setup.model.model,
            builtin_tools=BUILTIN_TOOLS,
            vad=TurnDetection(
                threshold=project.vad_threshold,
                prefix_padding_ms=project.vad_prefix_padding_ms,
                silence_duration_ms=project.vad_silence_ms,
            ),
            event_id=event_id,
        )
    )


async def new_session(
    setup: CallSetup,
    budget_s: float,
    backoff_s: tuple[float, ...],
    *,
    event_id: Callable[[], str],
    report: Callable[[MetricsSample], None],
) -> WebSocket:
    """A configured model session: one attempt, then one after each delay of
    ``backoff_s``, within ``budget_s`` in all. ``ModelUnavailable`` with the last error
    when none succeeded: every way a handshake fails (refusal, reset, EOF, an HTTP
    rejection, silence) is one of ``CONNECT_ERRORS``, never a crash."""
    last_error = f"no answer within {budget_s:g} s"
    with trio.move_on_after(budget_s):
        for delay_s in (0.0, *backoff_s):
            await trio.sleep(delay_s)
            began_s = trio.current_time()
            try:
                model = await open_model_socket(setup.model)
            except CONNECT_ERRORS as exc:
                last_error = describe(exc)
                log.warning("call %s: model connection failed: %s", setup.call_sid, last_error)
                report(ModelConnected(False, trio.current_time() - began_s, last_error))
                continue
            report(ModelConnected(True, trio.current_time() - began_s))
            try:
                await configure(model, setup, event_id())
            except (WebSocketClosed, trio.TooSlowError, trio.BrokenResourceError) as exc:
                last_error = describe(exc)
                await model.aclose()
                continue
            return model
    raise ModelUnavailable(last_error)


def describe(exc: BaseException) -> str:
    if isinstance(exc, trio.TooSlowError):
        return "no answer in time"
    return str(exc) or type(exc).__name__

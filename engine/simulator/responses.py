"""One response of the simulated model, in the GA order: ``response.created``,
``rate_limits.updated``, then per output item ``response.output_item.added``,
``conversation.item.added``, its content (audio and transcript, or function-call
arguments), ``response.output_item.done``, ``conversation.item.done``; last
``response.done``, whose ``output`` lists the items (without audio bytes).

A response runs in its own task under a cancel scope, so that caller audio keeps
arriving and can interrupt it; whoever cancels it sends its ``response.done``.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import msgspec
import trio

from engine.simulator import audio_formats, events
from engine.simulator.scenarios import Call, Say, Step
from engine.simulator.session_config import audio_output

if TYPE_CHECKING:
    from engine.simulator.session import Session

AUDIO_CHUNK_MS: Final = 100  # per output_audio.delta
MS_PER_WORD: Final = 60
MIN_SPEECH_MS: Final = 300


@dataclass
class Item:
    """A conversation item as the server keeps it; ``audio_ms`` is the assistant audio
    generated for it (what a truncate may not exceed)."""

    body: dict[str, Any]
    audio_ms: int = 0


@dataclass
class ActiveResponse:
    id: str
    scope: trio.CancelScope
    output: list[dict[str, Any]] = field(default_factory=list)  # the items, as they stand
    audio_ms: int = 0
    text_tokens: int = 0


async def run(session: Session, active: ActiveResponse, step: Step) -> None:
    with active.scope:
        await _started(session, active)
        if isinstance(step, Say):
            await speak(session, active, step.text)
            # Words then a tool call in one response, as a real model does ("I'm
            # connecting you now" + transfer_to_on_call).
            follow = session.steps[0] if session.steps else None
            if isinstance(follow, Call) and follow.after_words:
                session.steps.pop(0)
                await call_tool(session, active, follow)
        else:
            await call_tool(session, active, step)
        session.active = None  # before the await: a barge-in now finds nothing to cancel
        usage = events.usage(active.audio_ms, active.text_tokens)
        await finish(session, active, "completed", usage=usage)


async def run_failed(session: Session, active: ActiveResponse, details: dict[str, Any]) -> None:
    """A response the server gives up on: created, then done as ``failed``, no output."""
    with active.scope:
        await _started(session, active)
        session.active = None
        await finish(session, active, "failed", details=details, usage=events.usage(0, 0))


async def _started(session: Session, active: ActiveResponse) -> None:
    session.responses_started += 1
    await session.send(
        {"type": "response.created", "response": response_body(session, active, "in_progress")}
    )
    await session.send(events.rate_limits(session.responses_started))


def response_body(
    session: Session,
    active: ActiveResponse,
    status: str,
    *,
    details: dict[str, Any] | None = None,
    usage: dict[str, Any] | None = None,
) -> dict[str, Any]:
    output = audio_output(session.config)
    return events.response(
        active.id,
        session.conversation_id,
        output["format"],
        str(output.get("voice")),
        status=status,
        details=details,
        output=[dict(item) for item in active.output],
        usage=usage,
    )


async def finish(
    session: Session,
    active: ActiveResponse,
    status: str,
    *,
    details: dict[str, Any] | None = None,
    usage: dict[str, Any] | None = None,
) -> None:
    """``response.done``; a caller transcription held back (late_transcription) follows."""
    if status != "completed":
        for item in active.output:
            if item.get("status") == "in_progress":
                item["status"] = "incomplete"
    body = response_body(session, active, status, details=details, usage=usage)
    await session.send({"type": "response.done", "response": body})
    await session.send_held_transcriptions()


async def _add_output_item(
    session: Session, active: ActiveResponse, body: dict[str, Any]
) -> dict[str, Any]:
    ids = {"response_id": active.id, "output_index": len(active.output)}
    active.output.append(body)
    await session.send({"type": "response.output_item.added", **ids, "item": dict(body)})
    await session.add_item(Item(body), done=False)
    return ids


async def _finish_output_item(session: Session, ids: dict[str, Any], body: dict[str, Any]) -> None:
    body["status"] = "completed"
    await session.send({"type": "response.output_item.done", **ids, "item": dict(body)})
    await session.send({"type": "conversation.item.done", "item": dict(body)})


async def speak(session: Session, active: ActiveResponse, text: str) -> None:
    message: dict[str, Any] = {
        "id": session.model.new_id("item"),
        "object": "realtime.item",
        "type": "message",
        "role": "assistant",
        "status": "in_progress",
        "content": [],
    }
    ids = await _add_output_item(session, active, message)
    part_ids = {**ids, "item_id": message["id"], "content_index": 0}
    message["content"] = [{"type": "output_audio", "transcript": ""}]
    await session.send(
        {
            "type": "response.content_part.added",
            **part_ids,
            "part": {"type": "audio", "transcript": ""},
        }
    )
    await _stream_audio(session, active, message, part_ids, text)
    await session.send({"type": "response.output_audio.done", **part_ids})
    await session.send(
        {"type": "response.output_audio_transcript.done", **part_ids, "transcript": text}
    )
    await session.send(
        {
            "type": "response.content_part.done",
            **part_ids,
            "part": {"type": "audio", "transcript": text},
        }
    )
    await _finish_output_item(session, ids, message)


async def _stream_audio(
    session: Session,
    active: ActiveResponse,
    message: dict[str, Any],
    ids: dict[str, Any],
    text: str,
) -> None:
    """The words interleaved with the audio, as a real model streams them: a response
    cancelled half-way has sent (and generated) half its words and audio."""
    audio_format = audio_output(session.config)["format"]
    words = text.split(" ")
    speech_ms = max(MIN_SPEECH_MS, MS_PER_WORD * len(words))
    audio = audio_formats.tone(speech_ms, audio_format)
    chunk_bytes = AUDIO_CHUNK_MS * audio_formats.bytes_per_ms(audio_format)
    starts = range(0, len(audio), chunk_bytes)
    item = session.items[message["id"]]
    said = 0
    for n, start in enumerate(starts, 1):
        chunk = audio[start : start + chunk_bytes]
        delta = base64.b64encode(chunk).decode()
        await session.send({"type": "response.output_audio.delta", **ids, "delta": delta})
        generated_ms = audio_formats.duration_ms(chunk, audio_format)
        item.audio_ms += generated_ms
        active.audio_ms += generated_ms
        session.audio_produced = True
        upto = len(words) * n // len(starts)
        if upto > said:
            words_delta = " ".join(words[said:upto]) + (" " if upto < len(words) else "")
            said = upto
            message["content"] = [{"type": "output_audio", "transcript": " ".join(words[:upto])}]
            await session.send(
                {"type": "response.output_audio_transcript.delta", **ids, "delta": words_delta}
            )
        if session.model.generation_speedup is not None:
            await trio.sleep(generated_ms / 1000 / session.model.generation_speedup)
    active.text_tokens += len(words)


async def call_tool(session: Session, active: ActiveResponse, step: Call) -> None:
    arguments = msgspec.json.encode(step.arguments).decode()
    call: dict[str, Any] = {
        "id": session.model.new_id("item"),
        "object": "realtime.item",
        "type": "function_call",
        "status": "in_progress",
        "call_id": session.model.new_id("call"),
        "name": step.name,
        "arguments": "",
    }
    ids = await _add_output_item(session, active, call)
    call_ids = {**ids, "item_id": call["id"], "call_id": call["call_id"]}
    await session.send(
        {"type": "response.function_call_arguments.delta", **call_ids, "delta": arguments}
    )
    done: dict[str, Any] = {"type": "response.function_call_arguments.done", **call_ids}
    if not session.model.omit_function_name:
        done["name"] = step.name  # the fault: some servers leave it out here
    await session.send(done | {"arguments": arguments})
    call["arguments"] = arguments
    active.text_tokens += len(arguments) // 4
    await _finish_output_item(session, ids, call)

"""Server events and objects the simulated model builds, in the GA shapes the openai
package's types describe: errors, response objects, usage, rate limits. Pure."""

from __future__ import annotations

from typing import Any, Final

# What the live API is reported to send for a failed response; the wire values are
# not documented, so a test may pass its own (SimulatedModel.fail_responses).
FAILURE_TYPES: Final = {"server_error": "server_error", "rate_limit_exceeded": "rate_limit_error"}
FAILURE_MESSAGES: Final = {
    "server_error": "The server had an error while processing your request. Sorry about that!",
    "rate_limit_exceeded": "Rate limit reached for requests. Please try again later.",
}
TOKENS_LIMIT: Final = 40000
REQUESTS_LIMIT: Final = 5000


def error(
    message: str,
    *,
    code: str | None,
    client_event_id: str | None,
    error_type: str = "invalid_request_error",
    param: str | None = None,
) -> dict[str, Any]:
    """An ``error`` event in the real shape: every key present, ``code`` and ``param``
    null when the API has none, and the client event's own ``event_id`` echoed so the
    client can tell which of its events was refused."""
    return {
        "type": "error",
        "error": {
            "type": error_type,
            "code": code,
            "message": message[:500],
            "param": param,
            "event_id": client_event_id,
        },
    }


def failure_details(code: str, error_type: str | None, message: str | None) -> dict[str, Any]:
    return {
        "type": "failed",
        "error": {
            "type": error_type or FAILURE_TYPES.get(code, "server_error"),
            "code": code,
            "message": message or FAILURE_MESSAGES.get(code, "The response failed."),
        },
    }


def response(
    response_id: str,
    conversation_id: str,
    output_format: dict[str, Any],
    voice: str,
    *,
    status: str,
    details: dict[str, Any] | None = None,
    output: list[dict[str, Any]] | None = None,
    usage: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``realtime.response``; ``output`` items never carry audio bytes."""
    body: dict[str, Any] = {
        "object": "realtime.response",
        "id": response_id,
        "status": status,
        "status_details": details,
        "conversation_id": conversation_id,
        "output_modalities": ["audio"],
        "max_output_tokens": "inf",
        "audio": {"output": {"format": output_format, "voice": voice}},
        "metadata": None,
        "output": output or [],
    }
    if usage is not None:
        body["usage"] = usage
    return body


def usage(audio_out_ms: int, text_out_tokens: int) -> dict[str, Any]:
    """Token usage for a response: audio output at 20 tokens a second (as OpenAI
    bills it), a fixed prompt of which part is cached from the second response on."""
    audio_out = 20 * audio_out_ms // 1000
    return {
        "total_tokens": 100 + text_out_tokens + audio_out,
        "input_tokens": 100,
        "output_tokens": text_out_tokens + audio_out,
        "input_token_details": {
            "text_tokens": 80,
            "audio_tokens": 20,
            "image_tokens": 0,
            "cached_tokens": 0,
            "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 0, "image_tokens": 0},
        },
        "output_token_details": {"text_tokens": text_out_tokens, "audio_tokens": audio_out},
    }


def transcription_usage(model: str, audio_ms: int) -> dict[str, Any]:
    """``whisper-1`` bills by duration, the gpt-4o transcribers by tokens: either shape
    may arrive, and an engine must read both."""
    if model == "whisper-1":
        return {"type": "duration", "seconds": round(audio_ms / 1000, 3)}
    audio_tokens = max(1, 10 * audio_ms // 1000)
    return {
        "type": "tokens",
        "input_tokens": audio_tokens,
        "output_tokens": 9,
        "total_tokens": audio_tokens + 9,
        "input_token_details": {"audio_tokens": audio_tokens, "text_tokens": 0},
    }


def rate_limits(responses_started: int) -> dict[str, Any]:
    """Sent at the start of each response: the tokens reserved for it come off."""
    return {
        "type": "rate_limits.updated",
        "rate_limits": [
            {
                "name": "requests",
                "limit": REQUESTS_LIMIT,
                "remaining": REQUESTS_LIMIT - responses_started,
                "reset_seconds": 0.012,
            },
            {
                "name": "tokens",
                "limit": TOKENS_LIMIT,
                "remaining": max(0, TOKENS_LIMIT - 1200 * responses_started),
                "reset_seconds": 1.8,
            },
        ],
    }

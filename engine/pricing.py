"""What a call cost: the model's tokens by kind, the caller's transcription, and Twilio's
minutes (docs/wire-formats.md 3).

Pure. Token prices are USD per million tokens, per model family (``REALTIME_PRICES``:
OpenAI's model pages, developers.openai.com/api/docs/models/<model>, read 2026-11-26;
gpt-realtime's own page was unavailable, its row is its launch prices, the same as
gpt-realtime-1.5's). A dated snapshot (``gpt-realtime-2025-08-28``) is priced as its
family. The caller's input transcription is billed apart, at the transcription model's
prices (``TRANSCRIPTION_PRICES``). Twilio is per started minute (inbound voice, US local
number, plus Media Streams). Vendors change prices and operators get discounts:
``PRICES_FILE`` overrides any of them (engine/price_book.py).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields
from typing import Any

from engine.realtime_codec import TRANSCRIPTION_MODEL
from engine.realtime_models import DEFAULT_REALTIME_MODEL

TOKEN_PRICE_NAMES = (
    "text_in_per_m",
    "text_cached_in_per_m",
    "text_out_per_m",
    "audio_in_per_m",
    "audio_cached_in_per_m",
    "audio_out_per_m",
)


@dataclass(frozen=True, slots=True)
class TranscriptionPrices:
    """One transcription model's prices: per million tokens, or per minute of audio for
    a model whose usage is a duration (whisper-1)."""

    audio_in_per_m: float
    text_in_per_m: float
    text_out_per_m: float
    per_min: float


# TO CONFIRM: the commonly published figures (OpenAI's pricing page as of 2025; the model
# pages read 2026-11-26 show the text rates 1.25/5.00 and 2.50/10.00 but not the audio
# input rate, and whisper-1's per-minute rate could not be checked).
TRANSCRIPTION_PRICES: dict[str, TranscriptionPrices] = {
    "gpt-4o-mini-transcribe": TranscriptionPrices(3.00, 1.25, 5.00, 0.003),
    "gpt-4o-transcribe": TranscriptionPrices(6.00, 2.50, 10.00, 0.006),
    "whisper-1": TranscriptionPrices(0.0, 0.0, 0.0, 0.006),
}
_TRANSCRIPTION = TRANSCRIPTION_PRICES[TRANSCRIPTION_MODEL]


@dataclass(frozen=True, slots=True)
class Prices:
    """Everything one call is billed at: its Realtime model's tokens, the engine's
    transcription model, Twilio."""

    text_in_per_m: float
    text_cached_in_per_m: float
    text_out_per_m: float
    audio_in_per_m: float
    audio_cached_in_per_m: float
    audio_out_per_m: float
    transcription_audio_in_per_m: float = _TRANSCRIPTION.audio_in_per_m
    transcription_text_in_per_m: float = _TRANSCRIPTION.text_in_per_m
    transcription_text_out_per_m: float = _TRANSCRIPTION.text_out_per_m
    transcription_per_min: float = _TRANSCRIPTION.per_min
    twilio_inbound_per_min: float = 0.0085
    twilio_media_streams_per_min: float = 0.004


PRICE_NAMES = tuple(f.name for f in fields(Prices))

_FULL = Prices(4.00, 0.40, 16.00, 32.00, 0.40, 64.00)
_MINI = Prices(0.60, 0.06, 2.40, 10.00, 0.30, 20.00)
# Family -> prices. gpt-realtime-2.1 is left out: no published price was at hand.
REALTIME_PRICES: dict[str, Prices] = {
    "gpt-realtime": _FULL,
    "gpt-realtime-1.5": _FULL,
    "gpt-realtime-2": Prices(4.00, 0.40, 24.00, 32.00, 0.40, 64.00),
    "gpt-realtime-mini": _MINI,
    "gpt-realtime-2.1-mini": _MINI,
}
DEFAULT_PRICES = REALTIME_PRICES[DEFAULT_REALTIME_MODEL]

# A snapshot is its family's name plus its release date.
_SNAPSHOT_DATE = re.compile(r"-\d{4}-\d{2}-\d{2}")


def model_family(model: str) -> str:
    """``model`` without a snapshot date: ``gpt-realtime-2025-08-28`` -> ``gpt-realtime``.
    (A plain prefix match would price ``gpt-realtime-2025-08-28`` as ``gpt-realtime-2``.)"""
    match = _SNAPSHOT_DATE.search(model)
    return model[: match.start()] if match is not None and match.end() == len(model) else model


def built_in_prices(model: str) -> Prices | None:
    """The built-in prices of ``model``'s family, or None for a model not in the table."""
    return REALTIME_PRICES.get(model_family(model))


def add_usage(total: dict[str, Any], usage: dict[str, Any]) -> None:
    """Accumulate a ``response.done`` usage (nested token counts) into ``total``."""
    for key, value in usage.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            total[key] = total.get(key, 0) + value
        elif isinstance(value, dict):
            add_usage(total.setdefault(key, {}), value)


def add_transcription_usage(total: dict[str, Any], usage: dict[str, Any] | None) -> None:
    """Accumulate the ``usage`` of one ``conversation.item.input_audio_transcription.
    completed`` into ``total["transcription"]`` (``audio_tokens``, ``text_tokens``,
    ``output_tokens``, ``seconds``), apart from the model's own usage: it is billed at
    the transcription model's prices. Token usage that gives no input details counts its
    input tokens as audio (what a transcription's input is). Unknown kinds are ignored."""
    if not usage:
        return
    counts = total.setdefault("transcription", {})
    if usage.get("type") == "tokens":
        details = usage.get("input_token_details") or {}
        audio = _count(details.get("audio_tokens"))
        text = _count(details.get("text_tokens"))
        if not details:
            audio = _count(usage.get("input_tokens"))
        _add(counts, "audio_tokens", audio)
        _add(counts, "text_tokens", text)
        _add(counts, "output_tokens", _count(usage.get("output_tokens")))
    elif usage.get("type") == "duration":
        seconds = usage.get("seconds")
        if isinstance(seconds, int | float) and not isinstance(seconds, bool) and seconds > 0:
            counts["seconds"] = counts.get("seconds", 0) + seconds


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _add(counts: dict[str, Any], key: str, value: int) -> None:
    counts[key] = counts.get(key, 0) + value


def call_cost_usd(
    usage: dict[str, Any], duration_s: float, prices: Prices = DEFAULT_PRICES
) -> float:
    """USD for one call: ``usage`` as ``add_usage`` and ``add_transcription_usage``
    accumulated it, ``duration_s`` of Twilio call time."""
    inputs = usage.get("input_token_details", {})
    cached = inputs.get("cached_tokens_details", {})
    outputs = usage.get("output_token_details", {})
    cached_text, cached_audio = cached.get("text_tokens", 0), cached.get("audio_tokens", 0)
    tokens_usd = (
        (inputs.get("text_tokens", 0) - cached_text) * prices.text_in_per_m
        + cached_text * prices.text_cached_in_per_m
        + (inputs.get("audio_tokens", 0) - cached_audio) * prices.audio_in_per_m
        + cached_audio * prices.audio_cached_in_per_m
        + outputs.get("text_tokens", 0) * prices.text_out_per_m
        + outputs.get("audio_tokens", 0) * prices.audio_out_per_m
    ) / 1_000_000
    minutes = math.ceil(duration_s / 60) if duration_s > 0 else 0  # billed by started minute
    twilio_usd = minutes * (prices.twilio_inbound_per_min + prices.twilio_media_streams_per_min)
    total_usd = float(tokens_usd) + transcription_cost_usd(usage, prices) + twilio_usd
    return round(total_usd, 6)


def transcription_cost_usd(usage: dict[str, Any], prices: Prices = DEFAULT_PRICES) -> float:
    """USD for the caller's input transcription in ``usage["transcription"]``; a duration
    is billed by the second (not the started minute) at the per-minute price."""
    counts = usage.get("transcription", {})
    tokens_usd = (
        counts.get("audio_tokens", 0) * prices.transcription_audio_in_per_m
        + counts.get("text_tokens", 0) * prices.transcription_text_in_per_m
        + counts.get("output_tokens", 0) * prices.transcription_text_out_per_m
    ) / 1_000_000
    seconds: float = counts.get("seconds", 0)
    return float(tokens_usd) + seconds / 60 * prices.transcription_per_min

"""What a call cost: the model's tokens by kind plus Twilio's minutes (protocols.md 3).

Pure. Prices are USD per million tokens (gpt-realtime's published prices) and per
started minute for Twilio (inbound voice, US local number, plus Media Streams, billed by
the started minute). Vendors change prices, and operators get discounts: ``PRICES_FILE``
names a TOML file whose ``[prices]`` table overrides any of the fields below
(``prices_from_toml``).
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, fields, replace
from typing import Any


@dataclass(frozen=True, slots=True)
class Prices:
    text_in_per_m: float = 4.00
    text_cached_in_per_m: float = 0.40
    text_out_per_m: float = 16.00
    audio_in_per_m: float = 32.00
    audio_cached_in_per_m: float = 0.40
    audio_out_per_m: float = 64.00
    twilio_inbound_per_min: float = 0.0085
    twilio_media_streams_per_min: float = 0.004


DEFAULT_PRICES = Prices()
PRICE_NAMES = tuple(f.name for f in fields(Prices))


class PriceTableError(ValueError):
    """A price file that cannot be used; the message names the file and the key."""


def prices_from_toml(text: str, source: str) -> Prices:
    """The built-in prices overridden by the ``[prices]`` table of a TOML document.
    Unknown keys (typos) and negative or non-numeric prices are refused."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PriceTableError(f"{source}: not valid TOML: {exc}") from None
    table = document.get("prices")
    if not isinstance(table, dict) or set(document) != {"prices"}:
        raise PriceTableError(f"{source}: expected exactly one [prices] table")
    overrides: dict[str, float] = {}
    for key, value in table.items():
        if key not in PRICE_NAMES:
            raise PriceTableError(
                f"{source}: unknown price {key!r}; known: {', '.join(PRICE_NAMES)}"
            )
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise PriceTableError(f"{source}: {key} must be a number of USD, 0 or more")
        overrides[key] = float(value)
    return replace(DEFAULT_PRICES, **overrides)


def add_usage(total: dict[str, Any], usage: dict[str, Any]) -> None:
    """Accumulate a ``response.done`` usage (nested token counts) into ``total``."""
    for key, value in usage.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            total[key] = total.get(key, 0) + value
        elif isinstance(value, dict):
            add_usage(total.setdefault(key, {}), value)


def call_cost_usd(
    usage: dict[str, Any], duration_s: float, prices: Prices = DEFAULT_PRICES
) -> float:
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
    return round(float(tokens_usd) + twilio_usd, 6)

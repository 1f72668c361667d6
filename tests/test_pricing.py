"""Call cost arithmetic on the usage shape of protocols.md 1.10."""

from __future__ import annotations

import re

import pytest

from engine.pricing import (
    DEFAULT_PRICES,
    PriceTableError,
    add_usage,
    call_cost_usd,
    prices_from_toml,
)

USAGE = {
    "total_tokens": 1377,
    "input_tokens": 1209,
    "output_tokens": 168,
    "input_token_details": {
        "text_tokens": 1150,
        "audio_tokens": 59,
        "image_tokens": 0,
        "cached_tokens": 1088,
        "cached_tokens_details": {"text_tokens": 1088, "audio_tokens": 0},
    },
    "output_token_details": {"text_tokens": 36, "audio_tokens": 132},
}


def test_usage_adds_up_across_responses_including_nested_details() -> None:
    total: dict[str, object] = {}
    add_usage(total, USAGE)
    add_usage(total, USAGE)
    assert total["input_tokens"] == 2418
    assert total["input_token_details"]["cached_tokens_details"]["text_tokens"] == 2176  # type: ignore[index]


def test_cost_of_the_documented_response_plus_twilio_minutes() -> None:
    # (62*4 + 1088*0.4 + 59*32 + 36*16 + 132*64) / 1e6 = 0.011595; 61 s = 2 started minutes.
    tokens = (62 * 4 + 1088 * 0.4 + 59 * 32 + 36 * 16 + 132 * 64) / 1_000_000
    assert call_cost_usd(USAGE, duration_s=61) == pytest.approx(tokens + 2 * 0.0125, abs=1e-6)
    assert call_cost_usd({}, duration_s=0) == 0


def test_a_price_file_overrides_only_the_prices_it_names() -> None:
    text = "[prices]\naudio_out_per_m = 20\ntwilio_inbound_per_min = 0.01\n"
    prices = prices_from_toml(text, "p")
    assert prices.audio_out_per_m == 20.0
    assert prices.twilio_inbound_per_min == 0.01
    assert prices.audio_in_per_m == DEFAULT_PRICES.audio_in_per_m
    usage = {"output_token_details": {"audio_tokens": 1_000_000}}
    assert call_cost_usd(usage, 0, prices) == 20.0
    assert call_cost_usd(usage, 0) == DEFAULT_PRICES.audio_out_per_m


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[prices]\naudio_out_per_n = 1\n", "unknown price 'audio_out_per_n'"),
        ("[prices]\naudio_out_per_m = -1\n", "audio_out_per_m must be a number"),
        ('[prices]\naudio_out_per_m = "cheap"\n', "audio_out_per_m must be a number"),
        ("audio_out_per_m = 1\n", "exactly one [prices] table"),
        ("[prices\n", "not valid TOML"),
    ],
)
def test_a_bad_price_file_is_refused_with_the_file_and_key_named(text: str, message: str) -> None:
    with pytest.raises(PriceTableError, match=re.escape(message)) as caught:
        prices_from_toml(text, "/etc/afterhours/prices.toml")
    assert "/etc/afterhours/prices.toml" in str(caught.value)

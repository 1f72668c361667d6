"""Call cost arithmetic on the usage shape of docs/wire-formats.md 1.10, per-model prices, the
caller's input transcription, and PRICES_FILE."""

from __future__ import annotations

import re

import pytest

from engine.price_book import (
    BUILT_IN,
    PriceTableError,
    UnknownModelPrices,
    price_book_from_toml,
)
from engine.pricing import (
    DEFAULT_PRICES,
    REALTIME_PRICES,
    TRANSCRIPTION_PRICES,
    add_transcription_usage,
    add_usage,
    built_in_prices,
    call_cost_usd,
    model_family,
    transcription_cost_usd,
)
from engine.realtime_codec import TRANSCRIPTION_MODEL

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
# conversation.item.input_audio_transcription.completed usage, both kinds the API sends.
TOKENS_USAGE = {
    "type": "tokens",
    "input_tokens": 120,
    "output_tokens": 14,
    "total_tokens": 134,
    "input_token_details": {"audio_tokens": 110, "text_tokens": 10},
}
DURATION_USAGE = {"type": "duration", "seconds": 90}
MILLION_AUDIO_OUT = {"output_token_details": {"audio_tokens": 1_000_000}}


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


@pytest.mark.parametrize(
    ("model", "prices"),
    [
        ("gpt-realtime", (4.00, 0.40, 16.00, 32.00, 0.40, 64.00)),
        ("gpt-realtime-1.5", (4.00, 0.40, 16.00, 32.00, 0.40, 64.00)),
        ("gpt-realtime-2", (4.00, 0.40, 24.00, 32.00, 0.40, 64.00)),
        ("gpt-realtime-mini", (0.60, 0.06, 2.40, 10.00, 0.30, 20.00)),
        ("gpt-realtime-2.1-mini", (0.60, 0.06, 2.40, 10.00, 0.30, 20.00)),
        # Dated snapshots are priced as their family, not by the longest prefix.
        ("gpt-realtime-2025-08-28", (4.00, 0.40, 16.00, 32.00, 0.40, 64.00)),
        ("gpt-realtime-mini-2025-12-15", (0.60, 0.06, 2.40, 10.00, 0.30, 20.00)),
    ],
)
def test_each_model_has_its_published_token_prices(model: str, prices: tuple[float, ...]) -> None:
    found = BUILT_IN.prices_for(model)
    assert (
        found.text_in_per_m,
        found.text_cached_in_per_m,
        found.text_out_per_m,
        found.audio_in_per_m,
        found.audio_cached_in_per_m,
        found.audio_out_per_m,
    ) == prices
    assert (found.twilio_inbound_per_min, found.twilio_media_streams_per_min) == (0.0085, 0.004)


def test_a_snapshot_date_is_stripped_only_at_the_end() -> None:
    assert model_family("gpt-realtime-2025-08-28") == "gpt-realtime"
    assert model_family("gpt-realtime-2") == "gpt-realtime-2"
    assert model_family("gpt-realtime-2025-08-28-x") == "gpt-realtime-2025-08-28-x"
    assert built_in_prices("gpt-realtime-2.1") is None
    assert built_in_prices("gpt-4o-realtime-preview") is None


def test_the_same_usage_costs_what_each_model_charges() -> None:
    full = call_cost_usd(MILLION_AUDIO_OUT, 0, BUILT_IN.prices_for("gpt-realtime-1.5"))
    mini = call_cost_usd(MILLION_AUDIO_OUT, 0, BUILT_IN.prices_for("gpt-realtime-mini"))
    assert (full, mini) == (64.0, 20.0)
    text_out = {"output_token_details": {"text_tokens": 1_000_000}}
    assert call_cost_usd(text_out, 0, BUILT_IN.prices_for("gpt-realtime-2")) == 24.0


def test_the_default_prices_are_the_default_models() -> None:
    assert REALTIME_PRICES["gpt-realtime-1.5"] == DEFAULT_PRICES


def test_an_unknown_model_names_the_model_and_what_to_add() -> None:
    with pytest.raises(UnknownModelPrices) as caught:
        BUILT_IN.prices_for("gpt-realtime-2.1")
    message = str(caught.value)
    assert "'gpt-realtime-2.1'" in message
    assert '[prices."gpt-realtime-2.1"]' in message
    assert "PRICES_FILE" in message
    assert "audio_out_per_m" in message


# -- transcription -------------------------------------------------------------------------


def test_transcription_usage_accumulates_apart_from_the_models() -> None:
    total: dict[str, object] = {}
    add_usage(total, USAGE)
    add_transcription_usage(total, TOKENS_USAGE)
    add_transcription_usage(total, TOKENS_USAGE)
    add_transcription_usage(total, DURATION_USAGE)
    add_transcription_usage(total, None)  # a transcript without usage
    add_transcription_usage(total, {"type": "something_new", "units": 3})
    assert total["transcription"] == {
        "audio_tokens": 220,
        "text_tokens": 20,
        "output_tokens": 28,
        "seconds": 90,
    }
    assert total["input_tokens"] == USAGE["input_tokens"]  # the model's counts untouched
    add_usage(total, USAGE)  # a later response.done leaves the transcription alone
    assert total["transcription"]["audio_tokens"] == 220


def test_token_usage_without_details_counts_its_input_as_audio() -> None:
    total: dict[str, object] = {}
    add_transcription_usage(total, {"type": "tokens", "input_tokens": 50, "output_tokens": 5})
    assert total["transcription"] == {"audio_tokens": 50, "text_tokens": 0, "output_tokens": 5}


def test_transcription_is_costed_at_the_transcription_models_prices() -> None:
    assert TRANSCRIPTION_MODEL == "gpt-4o-mini-transcribe"
    mini = TRANSCRIPTION_PRICES["gpt-4o-mini-transcribe"]
    assert (mini.audio_in_per_m, mini.text_in_per_m, mini.text_out_per_m) == (3.00, 1.25, 5.00)
    total: dict[str, object] = {}
    add_transcription_usage(total, TOKENS_USAGE)
    expected = (110 * 3.00 + 10 * 1.25 + 14 * 5.00) / 1_000_000
    assert transcription_cost_usd(total) == pytest.approx(expected)
    # Included in the call's cost, beside the model's tokens and Twilio's minutes.
    alone = call_cost_usd(USAGE, 61)
    add_usage(total, USAGE)
    assert call_cost_usd(total, 61) == pytest.approx(alone + expected, abs=1e-6)


def test_a_duration_is_billed_by_the_second_at_the_per_minute_price() -> None:
    total: dict[str, object] = {}
    add_transcription_usage(total, {"type": "duration", "seconds": 30})
    assert transcription_cost_usd(total) == pytest.approx(0.5 * 0.003)


# -- PRICES_FILE ---------------------------------------------------------------------------


def test_plain_keys_override_those_prices_for_every_model() -> None:
    text = "[prices]\naudio_out_per_m = 20\ntwilio_inbound_per_min = 0.01\n"
    book = price_book_from_toml(text, "p")
    for model in ("gpt-realtime-1.5", "gpt-realtime-mini"):
        prices = book.prices_for(model)
        assert prices.audio_out_per_m == 20.0
        assert prices.twilio_inbound_per_min == 0.01
        assert prices.audio_in_per_m == BUILT_IN.prices_for(model).audio_in_per_m
    assert call_cost_usd(MILLION_AUDIO_OUT, 0, book.prices_for("gpt-realtime-1.5")) == 20.0
    assert call_cost_usd(MILLION_AUDIO_OUT, 0) == DEFAULT_PRICES.audio_out_per_m


def test_a_model_table_overrides_one_model_or_a_family_on_top_of_plain_keys() -> None:
    text = """
        [prices]
        audio_out_per_m = 50
        transcription_audio_in_per_m = 2.5
        [prices."gpt-realtime-mini"]
        audio_out_per_m = 15
        [prices."gpt-realtime"]
        text_in_per_m = 3
        [prices."gpt-realtime-2025-08-28"]
        text_in_per_m = 2
    """
    book = price_book_from_toml(text, "p")
    assert book.prices_for("gpt-realtime-mini").audio_out_per_m == 15.0
    assert book.prices_for("gpt-realtime-mini-2025-12-15").audio_out_per_m == 15.0
    assert book.prices_for("gpt-realtime-1.5").audio_out_per_m == 50.0
    assert book.prices_for("gpt-realtime").text_in_per_m == 3.0
    assert book.prices_for("gpt-realtime-2025-08-28").text_in_per_m == 2.0  # exact wins
    assert book.prices_for("gpt-realtime-1.5").transcription_audio_in_per_m == 2.5


def test_a_model_without_built_in_prices_is_priced_by_a_complete_table() -> None:
    complete = "\n".join(
        f"{key} = {value}"
        for key, value in (
            ("text_in_per_m", 5),
            ("text_cached_in_per_m", 0.5),
            ("text_out_per_m", 20),
            ("audio_in_per_m", 40),
            ("audio_cached_in_per_m", 0.5),
        )
    )
    book = price_book_from_toml(
        f'[prices."gpt-realtime-2.1"]\n{complete}\naudio_out_per_m = 80\n', "p"
    )
    prices = book.prices_for("gpt-realtime-2.1")
    assert (prices.text_in_per_m, prices.audio_out_per_m) == (5.0, 80.0)
    assert prices.twilio_inbound_per_min == DEFAULT_PRICES.twilio_inbound_per_min
    # The old flat format with all six token prices prices any model, as it did before.
    flat = price_book_from_toml(f"[prices]\n{complete}\naudio_out_per_m = 70\n", "p")
    assert flat.prices_for("my-fine-tuned-realtime").audio_out_per_m == 70.0
    incomplete = price_book_from_toml(f'[prices."gpt-realtime-2.1"]\n{complete}\n', "p")
    with pytest.raises(UnknownModelPrices, match=r"with audio_out_per_m$"):
        incomplete.prices_for("gpt-realtime-2.1")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[prices]\naudio_out_per_n = 1\n", "unknown price 'audio_out_per_n'"),
        ("[prices]\naudio_out_per_m = -1\n", "audio_out_per_m must be a number"),
        ("[prices]\naudio_out_per_m = nan\n", "audio_out_per_m must be a number"),
        ("[prices]\naudio_out_per_m = inf\n", "audio_out_per_m must be a number"),
        ('[prices]\naudio_out_per_m = "cheap"\n', "audio_out_per_m must be a number"),
        ('[prices."gpt-realtime-mini"]\naudio_out = 1\n', "[prices.'gpt-realtime-mini']"),
        ("audio_out_per_m = 1\n", "exactly one [prices] table"),
        ("[prices\n", "not valid TOML"),
    ],
)
def test_a_bad_price_file_is_refused_with_the_file_and_key_named(text: str, message: str) -> None:
    with pytest.raises(PriceTableError, match=re.escape(message)) as caught:
        price_book_from_toml(text, "/etc/afterhours/prices.toml")
    assert "/etc/afterhours/prices.toml" in str(caught.value)

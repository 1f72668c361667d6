"""The default Realtime model and the deprecated ones, checked against the installed
openai package; what the start does with the configured model (prices, deprecation)."""

from __future__ import annotations

import inspect
import logging
import re
from pathlib import Path
from typing import get_args

import pytest
from openai.types.realtime import realtime_session_create_request
from openai.types.realtime.realtime_session_create_request import RealtimeSessionCreateRequest

from api.root.build import load_prices
from engine.config import settings_from_mapping
from engine.errors import StartupError
from engine.price_book import BUILT_IN
from engine.pricing import REALTIME_PRICES
from engine.realtime_models import (
    DEFAULT_REALTIME_MODEL,
    DEPRECATED_REALTIME_MODELS,
    deprecation_warning,
)


def package_models() -> set[str]:
    annotation = RealtimeSessionCreateRequest.model_fields["model"].annotation
    found: set[str] = set()
    stack = [annotation]
    while stack:  # Union[str, Literal[...], None]: collect the Literal's strings
        node = stack.pop()
        for argument in get_args(node):
            if isinstance(argument, str):
                found.add(argument)
            else:
                stack.append(argument)
    return found


def package_deprecated() -> dict[str, str]:
    """The "Deprecated values" of the model field's docstring, from the package source."""
    source = inspect.getsource(realtime_session_create_request)
    docstring = source.split("The Realtime model used for this session.", 1)[1].split('"""')[0]
    deprecated: dict[str, str] = {}
    for names, date in re.findall(
        r"- (.+?): Announced shutdown date: (\d{4}-\d{2}-\d{2})", re.sub(r"\s+", " ", docstring)
    ):
        for name in re.findall(r'"([^"]+)"', names):
            deprecated[name] = date
    return deprecated


def test_every_deprecation_the_installed_package_announces_is_ours() -> None:
    # A subset, not equality: an older openai (the floor, `make test-floors`) announces
    # fewer; whatever the installed one announces must be in our list.
    assert package_deprecated().items() <= DEPRECATED_REALTIME_MODELS.items()
    assert DEPRECATED_REALTIME_MODELS["gpt-realtime"] == "2027-01-20"


def test_the_default_is_a_current_model_the_package_accepts_with_built_in_prices() -> None:
    assert DEFAULT_REALTIME_MODEL in package_models()
    assert DEFAULT_REALTIME_MODEL not in DEPRECATED_REALTIME_MODELS
    assert DEFAULT_REALTIME_MODEL in REALTIME_PRICES
    assert settings_from_mapping({}).openai_realtime_model == DEFAULT_REALTIME_MODEL


def test_every_priced_model_is_one_the_package_accepts() -> None:
    assert set(REALTIME_PRICES) <= package_models()


def test_the_warning_names_the_setting_the_date_and_a_replacement() -> None:
    assert deprecation_warning("gpt-realtime-1.5", "OPENAI_REALTIME_MODEL") is None
    warning = deprecation_warning("gpt-realtime-2025-08-28", "OPENAI_REALTIME_MODEL")
    assert warning is not None
    assert warning.startswith("OPENAI_REALTIME_MODEL=gpt-realtime-2025-08-28 is deprecated")
    assert "2027-01-20" in warning
    assert DEFAULT_REALTIME_MODEL in warning


def test_the_start_warns_once_about_a_deprecated_model(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="afterhours"):
        load_prices(settings_from_mapping({"OPENAI_REALTIME_MODEL": "gpt-realtime"}))
        load_prices(settings_from_mapping({}))
    deprecated = [r for r in caplog.records if "deprecated" in r.getMessage()]
    assert len(deprecated) == 1
    assert "OPENAI_REALTIME_MODEL=gpt-realtime " in deprecated[0].getMessage()


def test_the_start_refuses_a_model_without_prices(tmp_path: Path) -> None:
    settings = settings_from_mapping({"OPENAI_REALTIME_MODEL": "gpt-realtime-2.1"})
    with pytest.raises(StartupError, match=r"OPENAI_REALTIME_MODEL: no prices for model"):
        load_prices(settings)
    prices = tmp_path / "prices.toml"
    keys = ("text_in", "text_cached_in", "text_out", "audio_in", "audio_cached_in", "audio_out")
    table = "\n".join(f"{key}_per_m = 1" for key in keys)
    prices.write_text(f'[prices."gpt-realtime-2.1"]\n{table}\n', encoding="utf-8")
    settings = settings_from_mapping(
        {"OPENAI_REALTIME_MODEL": "gpt-realtime-2.1", "PRICES_FILE": str(prices)}
    )
    assert load_prices(settings).prices_for("gpt-realtime-2.1").audio_out_per_m == 1.0


def test_the_prices_file_overrides_the_built_in_prices_at_the_start(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text('[prices."gpt-realtime-mini"]\naudio_in_per_m = 9\n', encoding="utf-8")
    book = load_prices(settings_from_mapping({"PRICES_FILE": str(path)}))
    assert book.prices_for("gpt-realtime-mini").audio_in_per_m == 9.0
    assert BUILT_IN.prices_for("gpt-realtime-mini").audio_in_per_m == 10.0
    assert book.prices_for("gpt-realtime-1.5") == REALTIME_PRICES["gpt-realtime-1.5"]

"""The prices each model's calls are costed at: the built-in table, overridden by
``PRICES_FILE``.

The file is TOML with one ``[prices]`` table. Its plain keys (``audio_out_per_m = 20``)
override those prices for every model: the format of before per-model prices, right for
Twilio's prices and for an engine that uses one model. Its sub-tables override one model
(``[prices."gpt-realtime-mini"]``, or a family such as ``[prices."gpt-realtime"]`` for
all its dated snapshots), on top of the plain keys. Keys are ``Prices``' field names
(engine/pricing.py); unknown keys (typos) and negative or non-numeric prices are refused.

A model the built-in table does not know is priced only if the file gives all six token
prices for it (plain keys or its own table); otherwise ``UnknownModelPrices`` names the
model and what to add. The engine refuses to start with such a model rather than cost
its calls at another model's prices. Pure: the composition root reads the file
(``load_prices``).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from math import inf
from typing import Any

from engine.pricing import (
    PRICE_NAMES,
    REALTIME_PRICES,
    TOKEN_PRICE_NAMES,
    Prices,
    built_in_prices,
    model_family,
)


class PriceTableError(ValueError):
    """A price file that cannot be used; the message names the file and the key."""


class UnknownModelPrices(LookupError):
    """No prices for a model: neither built in nor complete in ``PRICES_FILE``."""


@dataclass(frozen=True, slots=True)
class PriceBook:
    """Built-in prices plus a price file's overrides: ``every_model`` (plain keys) and
    ``per_model`` (model or family name -> its keys)."""

    every_model: dict[str, float] = field(default_factory=dict)
    per_model: dict[str, dict[str, float]] = field(default_factory=dict)
    source: str = "the built-in prices"

    def prices_for(self, model: str) -> Prices:
        """``model``'s prices; ``UnknownModelPrices`` when neither the built-in table nor
        the file prices every token kind of it."""
        family = model_family(model)
        overrides = {
            **self.every_model,
            **self.per_model.get(family, {}),
            **self.per_model.get(model, {}),
        }
        built_in = built_in_prices(model)
        if built_in is not None:
            return replace(built_in, **overrides)
        missing = [name for name in TOKEN_PRICE_NAMES if name not in overrides]
        if missing:
            raise UnknownModelPrices(
                f"no prices for model {model!r}: the built-in table knows "
                f"{', '.join(REALTIME_PRICES)} (and their dated snapshots); give its prices in "
                f'PRICES_FILE, a [prices."{model}"] table with {", ".join(missing)}'
            )
        return Prices(**overrides)


BUILT_IN = PriceBook()


def price_book_from_toml(text: str, source: str) -> PriceBook:
    """The ``PriceBook`` of a price file's text; ``PriceTableError`` naming ``source``."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PriceTableError(f"{source}: not valid TOML: {exc}") from None
    table = document.get("prices")
    if not isinstance(table, dict) or set(document) != {"prices"}:
        raise PriceTableError(f"{source}: expected exactly one [prices] table")
    every_model: dict[str, float] = {}
    per_model: dict[str, dict[str, float]] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            per_model[key] = _overrides(value, f"{source}: [prices.{key!r}]")
        else:
            every_model.update(_overrides({key: value}, source))
    return PriceBook(every_model, per_model, source)


def _overrides(table: dict[str, Any], where: str) -> dict[str, float]:
    overrides: dict[str, float] = {}
    for key, value in table.items():
        if key not in PRICE_NAMES:
            known = ", ".join(PRICE_NAMES)
            raise PriceTableError(f"{where}: unknown price {key!r}; known: {known}")
        # TOML has nan and inf: neither is a price ("not 0 <= value" also refuses nan).
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < inf:
            raise PriceTableError(f"{where}: {key} must be a number of USD, 0 or more")
        overrides[key] = float(value)
    return overrides

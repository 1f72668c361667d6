"""Validation of OpenAI Realtime events against the openai package's own types.

The package is our type library for the Realtime protocol (its client runs only on
asyncio, so we speak the protocol ourselves). Its event unions are tagged with the SDK's
own marker, which pydantic ignores, so they are rebuilt here with a real discriminator;
its models accept unknown keys, so ``unknown_keys`` finds them (docs/wire-formats.md 1.13).

Used by the tests on everything the engine sends, and by the simulated model on every
client event it receives. Not on the hot path: pydantic costs far more than msgspec.
"""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any, Union, get_args

import pydantic
from openai.types.realtime import RealtimeClientEvent, RealtimeServerEvent
from pydantic import Field, TypeAdapter


class SchemaViolation(ValueError):
    pass


def _discriminated(union_alias: Any) -> Any:
    members = get_args(get_args(union_alias)[0])  # unwrap Annotated, then Union
    return Annotated[Union[members], Field(discriminator="type")]  # noqa: UP007 - runtime union


@cache
def _client_adapter() -> TypeAdapter[Any]:
    return TypeAdapter(_discriminated(RealtimeClientEvent))


@cache
def _server_adapter() -> TypeAdapter[Any]:
    return TypeAdapter(_discriminated(RealtimeServerEvent))


def unknown_keys(model: Any, path: str = "") -> list[str]:
    """Keys the schema does not know (the SDK's models are ``extra="allow"``)."""
    found: list[str] = []
    if isinstance(model, pydantic.BaseModel):
        found += [f"{path}.{key}".lstrip(".") for key in (model.model_extra or {})]
        for name in type(model).model_fields:
            found += unknown_keys(getattr(model, name), f"{path}.{name}")
    elif isinstance(model, list):
        for index, value in enumerate(model):
            found += unknown_keys(value, f"{path}[{index}]")
    return found


def validate_client_event(event: dict[str, Any]) -> Any:
    """The SDK model for a client event; ``SchemaViolation`` if it is not one, or if it
    carries a key the schema does not know."""
    return _validate(_client_adapter(), event)


def validate_server_event(event: dict[str, Any]) -> Any:
    return _validate(_server_adapter(), event)


def _validate(adapter: TypeAdapter[Any], event: dict[str, Any]) -> Any:
    try:
        model = adapter.validate_python(event)
    except pydantic.ValidationError as exc:
        raise SchemaViolation(f"{event.get('type')!r}: {exc}") from exc
    extra = unknown_keys(model)
    if extra:
        raise SchemaViolation(f"{event.get('type')!r}: unknown keys {extra}")
    return model

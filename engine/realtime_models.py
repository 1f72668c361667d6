"""Which Realtime model the engine asks for by default, and which are being retired.

The default is ``gpt-realtime-1.5``: a current GA model (``gpt-realtime``, the previous
default, is deprecated), the same per-token prices as ``gpt-realtime`` (so call costs
stay comparable), and not a reasoning model (``gpt-realtime-2`` thinks before it speaks,
which costs first-audio latency on a phone line, and bills text output at 24 rather than
16 USD per million tokens).

``DEPRECATED_REALTIME_MODELS`` copies the "Deprecated values" of the openai package's
``RealtimeSessionCreateRequest.model`` docstring (openai 3.57; the docstring is not kept
at run time, so the list lives here, and tests/test_realtime_models.py checks it against
the installed package's source). Pure.
"""

from __future__ import annotations

DEFAULT_REALTIME_MODEL = "gpt-realtime-1.5"

# Model -> announced shutdown date (ISO 8601).
DEPRECATED_REALTIME_MODELS: dict[str, str] = {
    "gpt-realtime": "2027-01-20",
    "gpt-realtime-2025-08-28": "2027-01-20",
    "gpt-realtime-mini": "2027-01-20",
    "gpt-realtime-mini-2025-12-15": "2027-01-20",
    "gpt-audio-mini": "2027-01-20",
    "gpt-audio-mini-2025-12-15": "2027-01-20",
}


def deprecation_warning(model: str, setting: str) -> str | None:
    """One log line for an operator whose ``setting`` names a deprecated model, or None."""
    shutdown = DEPRECATED_REALTIME_MODELS.get(model)
    if shutdown is None:
        return None
    return (
        f"{setting}={model} is deprecated (announced shutdown {shutdown}; see "
        f"https://developers.openai.com/api/docs/deprecations): move to a current model "
        f"such as {DEFAULT_REALTIME_MODEL}"
    )

"""The TwiML the engine answers Twilio with, built with the twilio package. Pure."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree

from twilio.twiml.voice_response import Connect, VoiceResponse


class TwimlInvalid(ValueError):
    """TwiML Twilio could not run: Twilio's error 12100, Document parse failure (the
    caller hears "an application error has occurred" and nothing more)."""


def parse_twiml(twiml: str) -> ElementTree.Element:
    """The document's root; ``TwimlInvalid`` unless it is well-formed XML with a
    ``<Response>`` root (what Twilio's 12100 page lists as parse failures)."""
    # A document type declaration is the door to entity tricks; TwiML never has one.
    if "<!DOCTYPE" in twiml.upper():
        raise TwimlInvalid("a DOCTYPE is not TwiML")
    try:
        # No DOCTYPE (above), and ElementTree never fetches external entities: the XML
        # attacks ruff warns of do not apply. Callers bound the size.
        root = ElementTree.fromstring(twiml)  # noqa: S314
    except ElementTree.ParseError as exc:
        raise TwimlInvalid(f"not well-formed XML: {exc}") from None
    if root.tag != "Response":
        raise TwimlInvalid(f"the root element is <{root.tag}>, not <Response>")
    return root


def connect_stream(stream_url: str, parameters: dict[str, str]) -> str:
    """Bridge the call to our media stream (bidirectional ``<Connect><Stream>``)."""
    response = VoiceResponse()
    connect = Connect()
    stream = connect.stream(url=stream_url)
    for name, value in parameters.items():
        stream.parameter(name=name, value=value)
    response.append(connect)
    return str(response)


def transfer(on_call_number: str) -> str:
    """Hand the live call to the on-call technician (replaces the media stream)."""
    response = VoiceResponse()
    response.say("Connecting you to the on-call technician now.")
    response.dial(on_call_number, timeout=30)
    return str(response)


def turn_away(message: str, on_call_number: str | None) -> str:
    """Say why the call cannot be answered here, then dial the on-call number if there
    is one, or hang up: a caller is never left in silence."""
    response = VoiceResponse()
    response.say(message)
    if on_call_number:
        response.dial(on_call_number, timeout=30)
    else:
        response.hangup()
    return str(response)

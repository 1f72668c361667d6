"""The TwiML the engine answers Twilio with, built with the twilio package. Pure."""

from __future__ import annotations

from twilio.twiml.voice_response import Connect, VoiceResponse


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

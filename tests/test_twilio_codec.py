"""The Twilio Media Streams codec on the wire format of docs/wire-formats.md 2.2 and 2.3."""

from __future__ import annotations

import json

import pytest

from engine.twilio_codec import (
    Connected,
    Dtmf,
    Mark,
    Media,
    Start,
    Stop,
    TwilioProtocolError,
    UnknownEvent,
    decode_twilio,
    encode_clear,
    encode_mark,
    encode_media,
)

SID = "MZ18ad3ab5a668481ce02b83e7395059f0"
START = (
    '{"event":"start","sequenceNumber":"1","streamSid":"' + SID + '","start":{"accountSid":"AC1",'
    '"streamSid":"' + SID + '","callSid":"CA1","tracks":["inbound"],"customParameters":'
    '{"tenant":"acme-hvac","token":"t0k"},"mediaFormat":{"encoding":"audio/x-mulaw",'
    '"sampleRate":8000,"channels":1}}}'
)
MEDIA = (
    '{"event":"media","sequenceNumber":"2","streamSid":"' + SID + '","media":{"track":"inbound",'
    '"chunk":"1","timestamp":"5","payload":"/////w=="}}'
)


def test_every_inbound_message_decodes() -> None:
    assert decode_twilio('{"event":"connected","protocol":"Call","version":"1.0.0"}') == (
        Connected("Call", "1.0.0")
    )
    start = decode_twilio(START)
    assert isinstance(start, Start)
    assert (start.start.callSid, start.start.customParameters["tenant"]) == ("CA1", "acme-hvac")
    assert start.start.mediaFormat.sampleRate == 8000
    media = decode_twilio(MEDIA.encode())
    assert isinstance(media, Media)
    assert (media.streamSid, media.media.payload, media.media.timestamp) == (SID, "/////w==", "5")
    mark = decode_twilio(
        '{"event":"mark","sequenceNumber":"40","streamSid":"MZ1","mark":{"name":"r:i:17"}}'
    )
    assert isinstance(mark, Mark)
    assert mark.mark.name == "r:i:17"
    dtmf = decode_twilio(
        '{"event":"dtmf","sequenceNumber":"41","streamSid":"MZ1","dtmf":{"track":"inbound_track","digit":"1"}}'
    )
    assert isinstance(dtmf, Dtmf)
    assert dtmf.dtmf.digit == "1"
    stop = decode_twilio(
        '{"event":"stop","sequenceNumber":"512","streamSid":"MZ1","stop":{"accountSid":"AC1","callSid":"CA1"}}'
    )
    assert stop == Stop("MZ1")


def test_an_unknown_event_is_named_not_an_error() -> None:
    assert decode_twilio('{"event":"heartbeat","streamSid":"MZ1"}') == UnknownEvent("heartbeat")


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param("{nope", id="not-json"),
        pytest.param('["media"]', id="not-an-object"),
        pytest.param('{"event":"media","streamSid":"MZ1","media":{}}', id="media-without-payload"),
        pytest.param('{"event":"start","streamSid":"MZ1"}', id="start-without-start"),
        pytest.param('{"streamSid":"MZ1"}', id="no-event"),
        pytest.param('{"event":7}', id="event-not-a-string"),
    ],
)
def test_malformed_frames_are_protocol_errors(frame: str) -> None:
    with pytest.raises(TwilioProtocolError):
        decode_twilio(frame)


def test_outbound_messages_have_the_documented_shape() -> None:
    assert json.loads(encode_media(SID, "/////w==")) == {
        "event": "media",
        "streamSid": SID,
        "media": {"payload": "/////w=="},
    }
    assert json.loads(encode_mark(SID, "item_B2:160")) == {
        "event": "mark",
        "streamSid": SID,
        "mark": {"name": "item_B2:160"},
    }
    assert json.loads(encode_clear(SID)) == {"event": "clear", "streamSid": SID}

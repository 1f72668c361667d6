"""Twilio's side of a Media Stream (engine/simulator/twilio_frames.py), which every peer
playing Twilio sends: held to the samples of docs/wire-formats.md 2.2, not to the
engine's codec (a peer built to agree with the engine would agree with its mistakes),
and then read by that codec as the engine reads it."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest

from engine.simulator.twilio_frames import TwilioFrames, stream_of
from engine.twilio_codec import Connected, Dtmf, Mark, Media, Start, Stop, decode_twilio

WIRE_FORMATS = Path(__file__).resolve().parents[1] / "docs" / "wire-formats.md"
STREAM_SID, CALL_SID, ACCOUNT_SID = "MZ" + "1" * 32, "CA" + "2" * 32, "AC" + "3" * 32


def documented() -> dict[str, dict[str, Any]]:
    """Section 2.2's sample of each message, by event (a sample may wrap onto indented
    lines)."""
    text = WIRE_FORMATS.read_text()
    section = text[text.index("### 2.2 Messages Twilio sends") : text.index("### 2.3")]
    block = re.search(r"```json\n(.*?)```", section, re.DOTALL)
    assert block is not None
    samples = re.sub(r"\n\s+", "", block[1]).splitlines()
    return {sample["event"]: sample for sample in map(json.loads, samples)}


def shape(value: Any) -> Any:
    """Keys and value types, all the way down: what a frame must share with the docs."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(item) for item in value]
    return type(value).__name__


def frames() -> TwilioFrames:
    return TwilioFrames(STREAM_SID, CALL_SID, ACCOUNT_SID)


def every_frame() -> dict[str, bytes]:
    built = frames()
    return {
        "connected": built.connected(),
        "start": built.start({"tenant": "acme-hvac"}),
        "media": built.media(b"/////w=="),
        "mark": built.mark("r:i:17"),
        "dtmf": built.dtmf("1"),
        "stop": built.stop(),
    }


@pytest.mark.parametrize("event", ["connected", "start", "media", "mark", "dtmf", "stop"])
def test_each_frame_has_the_documented_shape(event: str) -> None:
    assert shape(json.loads(every_frame()[event])) == shape(documented()[event])


def test_the_engine_reads_each_frame_as_sent() -> None:
    sent = every_frame()
    assert decode_twilio(sent["connected"]) == Connected("Call", "1.0.0")
    start = decode_twilio(sent["start"])
    assert isinstance(start, Start)
    assert (start.streamSid, start.start.callSid, start.start.accountSid) == (
        STREAM_SID, CALL_SID, ACCOUNT_SID,
    )  # fmt: skip
    assert start.start.customParameters == {"tenant": "acme-hvac"}
    media = decode_twilio(sent["media"])
    assert isinstance(media, Media)
    assert (media.streamSid, media.media.payload) == (STREAM_SID, "/////w==")
    mark = decode_twilio(sent["mark"])
    assert isinstance(mark, Mark)
    assert mark.mark.name == "r:i:17"
    dtmf = decode_twilio(sent["dtmf"])
    assert isinstance(dtmf, Dtmf)
    assert dtmf.dtmf.digit == "1"
    assert decode_twilio(sent["stop"]) == Stop(STREAM_SID)
    assert json.loads(sent["stop"])["stop"] == {"accountSid": ACCOUNT_SID, "callSid": CALL_SID}


def test_frames_are_numbered_as_twilio_numbers_them() -> None:
    built = frames()
    first = [json.loads(built.connected()), json.loads(built.start())]
    audio = bytes(range(160)) + bytes(range(160, 256)) + bytes(64)  # two frames of 20 ms
    media = [json.loads(frame) for frame in built.media_of(audio)]
    mark = json.loads(built.mark("m"))
    assert "sequenceNumber" not in first[0]
    assert [first[1]["sequenceNumber"], *(m["sequenceNumber"] for m in media)] == ["1", "2", "3"]
    assert mark["sequenceNumber"] == "4"  # one count for every frame after connected
    assert [(m["media"]["chunk"], m["media"]["timestamp"]) for m in media] == [
        ("1", "0"),
        ("2", "20"),
    ]
    assert b"".join(base64.b64decode(m["media"]["payload"]) for m in media) == audio


def test_the_stream_and_its_parameters_are_read_from_twiml() -> None:
    twiml = (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Connect>'
        '<Stream url="wss://engine.test/twilio/media"><Parameter name="token" value="t0k" />'
        '<Parameter name="project" value="smith-plumbing" /></Stream></Connect></Response>'
    )
    stream = stream_of(twiml)
    assert stream is not None
    assert stream.url == "wss://engine.test/twilio/media"
    assert stream.parameters == {"token": "t0k", "project": "smith-plumbing"}
    assert stream_of("<Response><Say>We are closed.</Say><Hangup/></Response>") is None

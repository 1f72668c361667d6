"""The fast path's frames against websockets' own: what one builds the other reads, and
everything uncommon is handed over untouched, from the right byte."""

from __future__ import annotations

import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from engine.ws_frames import MaskKeys, parse, text_frame

MAX = 1 << 20


def websockets_frame(opcode: Opcode, data: bytes, *, mask: bool, fin: bool = True) -> bytes:
    return Frame(opcode, data, fin).serialize(mask=mask, extensions=[])


def read_with_websockets(wire: bytes, *, mask: bool) -> Frame:
    reader = StreamReader()
    reader.feed_data(wire)
    parser = Frame.parse(reader.read_exact, mask=mask, max_size=MAX, extensions=[])
    try:
        next(parser)
    except StopIteration as done:
        frame: Frame = done.value
        return frame
    raise AssertionError("websockets wanted more bytes")


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 70000])
@pytest.mark.parametrize("masked", [False, True])
def test_every_length_encoding_reads_back_as_websockets_wrote_it(size: int, masked: bool) -> None:
    text = ("é" * size).encode()[:size].decode(errors="ignore").encode()  # multi-byte UTF-8
    wire = websockets_frame(Opcode.TEXT, text, mask=masked)
    buffer = bytearray(wire)
    parsed = parse(buffer, masked=masked, max_size=MAX)
    assert parsed.messages == [text.decode()]
    assert parsed.rest is None
    assert buffer == b""


@pytest.mark.parametrize("size", [3, 200, 70000])
@pytest.mark.parametrize("masked", [False, True])
def test_what_the_fast_path_writes_websockets_reads(size: int, masked: bool) -> None:
    data = b"x" * size
    key = MaskKeys().take() if masked else None
    frame = read_with_websockets(text_frame(data, key), mask=masked)
    assert (frame.opcode, frame.fin, bytes(frame.data)) == (Opcode.TEXT, True, data)


def test_a_frame_split_over_reads_waits_for_its_rest_and_loses_nothing() -> None:
    wire = b"".join(
        websockets_frame(Opcode.TEXT, f'{{"n":{n}}}'.encode() * 30, mask=True) for n in range(5)
    )
    buffer = bytearray()
    messages: list[str | bytes] = []
    for start in range(0, len(wire), 7):  # 7 bytes a read: headers split too
        buffer += wire[start : start + 7]
        parsed = parse(buffer, masked=True, max_size=MAX)
        assert parsed.rest is None
        messages += parsed.messages
    assert messages == [f'{{"n":{n}}}' * 30 for n in range(5)]
    assert buffer == b""


def test_control_frames_between_messages_go_to_websockets_in_order() -> None:
    wire = (
        websockets_frame(Opcode.TEXT, b"one", mask=True)
        + websockets_frame(Opcode.PING, b"p1", mask=True)
        + websockets_frame(Opcode.BINARY, b"\x00\x01", mask=True)
        + websockets_frame(Opcode.PONG, b"p2", mask=True)
    )
    parsed = parse(bytearray(wire), masked=True, max_size=MAX)
    assert parsed.messages == ["one", b"\x00\x01"]
    pings = [read_with_websockets(raw, mask=True) for raw in parsed.control]
    assert [(f.opcode, bytes(f.data)) for f in pings] == [
        (Opcode.PING, b"p1"),
        (Opcode.PONG, b"p2"),
    ]
    assert parsed.rest is None


@pytest.mark.parametrize(
    "uncommon",
    [
        websockets_frame(Opcode.TEXT, b"part", mask=True, fin=False),  # fragmented
        websockets_frame(Opcode.CONT, b"part", mask=True),  # a continuation out of nowhere
        websockets_frame(Opcode.TEXT, b"\xff\xfe", mask=True),  # not UTF-8: 1007
        websockets_frame(Opcode.TEXT, b"unmasked", mask=False),  # a client must mask
        websockets_frame(Opcode.CLOSE, b"\x03\xe8", mask=True),  # the close handshake
        bytes([0x81 | 0x40, 0x80 | 1]) + b"\x00" * 4 + b"a",  # a reserved bit
        bytes([0x83, 0x80 | 1]) + b"\x00" * 4 + b"a",  # an unknown opcode
        bytes([0x89, 0x80 | 126]) + (200).to_bytes(2, "big"),  # a control frame too long
    ],
)
def test_an_uncommon_frame_and_all_after_it_are_handed_over(uncommon: bytes) -> None:
    before = websockets_frame(Opcode.TEXT, b"before", mask=True)
    after = websockets_frame(Opcode.TEXT, b"after", mask=True)
    buffer = bytearray(before + uncommon + after)
    parsed = parse(buffer, masked=True, max_size=MAX)
    assert parsed.messages == ["before"]
    if uncommon[0] & 0x0F == Opcode.CLOSE:  # the close itself is a control frame
        assert parsed.control == [uncommon]
        assert parsed.rest == after
    else:
        assert parsed.control == []
        assert parsed.rest == uncommon + after
    assert buffer == b""


def test_a_frame_over_the_limit_is_handed_over_from_its_header() -> None:
    """websockets refuses it (1009) on the header alone: nothing waits for its payload."""
    header = bytes([0x81, 0x80 | 127]) + (MAX + 1).to_bytes(8, "big")
    parsed = parse(bytearray(header), masked=True, max_size=MAX)
    assert parsed.messages == []
    assert parsed.rest == header


def test_mask_keys_are_random_and_refilled() -> None:
    keys = MaskKeys()
    taken = [keys.take() for _ in range(3000)]  # past one pool of 1,024 keys
    assert all(len(key) == 4 for key in taken)
    assert len(set(taken)) > 2900  # 4 random bytes: collisions are rare

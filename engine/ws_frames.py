"""RFC 6455 data frames, the common case only, without websockets' parser. Pure.

websockets' Sans-I/O parser is a chain of generators (protocol, frame, stream reader)
and its writer a ``BytesIO`` per frame with a ``getrandom(2)`` call for every client
mask: on the per-frame path (a caller frame, a model delta, a mark, each 100-300 bytes)
that was a quarter of the engine's CPU (docs/performance.md, "The lean hot path"). The
frames a call's two sockets carry are almost all complete, unfragmented text frames, so
those are parsed and built here; everything else goes to websockets' protocol
unchanged: control frames (pings, pongs, close), fragmented messages, reserved bits,
wrong masking, unknown opcodes, oversized or invalid UTF-8 payloads. ``split`` says
where its part ends, so the caller feeds websockets exactly the bytes it would have had
from there on, and websockets answers them as before (pongs, close codes 1002, 1007,
1009).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from websockets.speedups import apply_mask

OP_TEXT = 0x1
OP_BINARY = 0x2
_FIN = 0x80
_RSV = 0x70
_MASKED = 0x80
MAX_CONTROL_PAYLOAD = 125
# Client mask keys come from the OS's random source (RFC 6455 10.3 asks for a strong
# one), 4 KiB at a time: one system call per 1,024 frames, not one per frame.
_MASK_POOL_BYTES = 4096


@dataclass(slots=True)
class Parsed:
    """What one ``parse`` found: complete data messages in order (text as ``str``,
    binary as ``bytes``), the control frames to hand to websockets (raw bytes, each in
    order relative to the others), and ``rest``: ``None`` while every byte was taken
    here, else the bytes from the first frame this parser leaves to websockets on
    (after which the connection stays with websockets for good)."""

    messages: list[str | bytes] = field(default_factory=list)
    control: list[bytes] = field(default_factory=list)
    rest: bytes | None = None


def parse(buffer: bytearray, *, masked: bool, max_size: int) -> Parsed:
    """Take the complete, common frames at the start of ``buffer`` (removed from it);
    a partial frame stays in it for the next read. ``masked``: frames from a client
    (a server reads masked frames, a client unmasked ones)."""
    parsed = Parsed()
    position, size = 0, len(buffer)
    while size - position >= 2:
        first, second = buffer[position], buffer[position + 1]
        opcode, length = first & 0x0F, second & 0x7F
        header = 2
        if length >= 126:
            header = 4 if length == 126 else 10
            if size - position < header:
                break  # the rest of the header comes in a later read
            length = int.from_bytes(buffer[position + 2 : position + header], "big")
        if masked:
            header += 4
        common = (
            not first & _RSV
            and bool(second & _MASKED) is masked
            and (
                (first & _FIN and opcode in (OP_TEXT, OP_BINARY) and length <= max_size)
                or (opcode in (0x8, 0x9, 0xA) and first & _FIN and length <= MAX_CONTROL_PAYLOAD)
            )
        )
        if not common:
            return _hand_over(buffer, position, parsed)  # websockets decides
        end = position + header + length
        if end > size:
            break  # the rest of this frame comes in a later read
        if opcode >= 0x8:
            parsed.control.append(bytes(buffer[position:end]))
            position = end
            if opcode == 0x8:
                return _hand_over(buffer, position, parsed)  # websockets closes
            continue
        payload: bytes | bytearray = buffer[position + header : end]
        if masked:
            payload = apply_mask(payload, buffer[position + header - 4 : position + header])
        if opcode == OP_TEXT:
            try:
                text = payload.decode()
            except UnicodeDecodeError:
                return _hand_over(buffer, position, parsed)  # websockets closes with 1007
            parsed.messages.append(text)
        else:
            parsed.messages.append(bytes(payload))
        position = end
    del buffer[:position]
    return parsed


def _hand_over(buffer: bytearray, position: int, parsed: Parsed) -> Parsed:
    parsed.rest = bytes(buffer[position:])
    buffer.clear()
    return parsed


class MaskKeys:
    """4-byte client mask keys from a pool filled by ``os.urandom``."""

    __slots__ = ("_next", "_pool")

    def __init__(self) -> None:
        self._pool = b""
        self._next = 0

    def take(self) -> bytes:
        if self._next >= len(self._pool):
            self._pool, self._next = os.urandom(_MASK_POOL_BYTES), 0
        key = self._pool[self._next : self._next + 4]
        self._next += 4
        return key


def text_frame(data: bytes, mask_key: bytes | None) -> bytes:
    """One unfragmented text frame holding ``data`` (UTF-8); masked with ``mask_key``
    when given (a client's frames must be)."""
    length = len(data)
    mask_bit = _MASKED if mask_key is not None else 0
    if length < 126:
        header = bytes((_FIN | OP_TEXT, mask_bit | length))
    elif length < 65536:
        header = bytes((_FIN | OP_TEXT, mask_bit | 126)) + length.to_bytes(2, "big")
    else:
        header = bytes((_FIN | OP_TEXT, mask_bit | 127)) + length.to_bytes(8, "big")
    if mask_key is None:
        return header + data
    return header + mask_key + apply_mask(data, mask_key)

"""Unsigned LEB128 varints, the integer encoding of serialised sketches.

Small numbers take one byte, which is what sketch bucket counts and the gaps
between sorted bucket keys mostly are; DynamoDB bills items by their bytes.
"""

from __future__ import annotations

_MAX_VARINT_BYTES = 10  # enough for any 64-bit value


def append_varint(out: bytearray, value: int) -> None:
    """Append ``value`` (>= 0) to ``out``; raises ValueError if it is negative."""
    if value < 0:
        raise ValueError(f"varint must be >= 0, got {value!r}")
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def read_varint(data: bytes, offset: int) -> tuple[int, int]:
    """Return ``(value, next_offset)`` of the varint at ``offset`` in ``data``.

    Raises ValueError if the bytes end inside the varint or it is longer than
    any 64-bit value needs.
    """
    value = 0
    shift = 0
    for position in range(offset, min(len(data), offset + _MAX_VARINT_BYTES)):
        byte = data[position]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position + 1
        shift += 7
    raise ValueError(f"truncated or overlong varint at byte {offset}")


def zigzag(value: int) -> int:
    """Map a signed int to an unsigned one, small magnitudes to small numbers."""
    return value * 2 if value >= 0 else -value * 2 - 1


def unzigzag(value: int) -> int:
    """Inverse of `zigzag`."""
    return value // 2 if value % 2 == 0 else -(value + 1) // 2

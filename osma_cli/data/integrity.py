"""Structure checks of PNG and JPEG files: damage that Pillow decodes without a word.

Pillow ignores a PNG cut short after its image data (no IEND chunk), never checks the
CRC of the image data chunks, and libjpeg's warnings (a restart marker out of sequence, a
marker in the middle of the compressed data, a bad Huffman code) are discarded: such files
decode, with wrong or missing pixels. A JPEG whose markers are intact has its compressed
data checked by ``jpeg_scan``. These checks read the file's bytes again (the operating system
has them cached) and say what is wrong, so the result can carry it. Each returns at most
one warning: after the first fault the rest of the structure is not trustworthy.
"""

from __future__ import annotations

import re
import struct
import zlib

from osma_cli.data.jpeg_scan import check_budget, scan_warnings

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
"""Markers without a length field (TEM and the restart markers)."""
_JPEG_AFTER_SCAN = frozenset({0xC4, 0xCC, 0xD9, 0xDA, 0xDB, 0xDC, 0xDD, 0xFE, *range(0xE0, 0xF0)})
"""Markers that may end a scan's compressed data: tables, the next scan, EOI, DNL, APPn, COM."""
_SCAN_MARKER = re.compile(rb"\xff+([^\x00\xff])")


def integrity_warnings(data: bytes, image_format: str | None) -> list[str]:
    """What is wrong with the structure of ``data`` (a whole file), for the formats checked."""
    if image_format == "PNG":
        return png_warnings(data)
    if image_format in ("JPEG", "MPO"):
        return jpeg_warnings(data)
    return []


def png_warnings(data: bytes) -> list[str]:
    """A PNG's chunks up to IEND: each complete and passing its CRC."""
    if not data.startswith(_PNG_SIGNATURE):
        return ["png: bad signature"]
    pos = len(_PNG_SIGNATURE)
    while True:
        if pos + 8 > len(data):
            return [f"png: cut short: no IEND chunk (file ends at byte {len(data)})"]
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        end = pos + 12 + length
        if end > len(data):
            name = kind.decode("latin-1")
            return [f"png: cut short: chunk {name} at byte {pos} needs {end - len(data)} more bytes"]
        crc = struct.unpack(">I", data[end - 4 : end])[0]
        if zlib.crc32(data[pos + 4 : end - 4]) != crc:
            return [f"png: chunk {kind.decode('latin-1')} at byte {pos} fails its CRC check (corrupt data)"]
        if kind == b"IEND":
            return []
        pos = end


def jpeg_warnings(data: bytes) -> list[str]:
    """A JPEG's segments up to EOI (of the first image: later data, e.g. MPO frames, is not read),
    then, if they are intact, its compressed data (``jpeg_scan``, up to ``check_budget()`` bytes)."""
    if not data.startswith(b"\xff\xd8"):
        return ["jpeg: no start-of-image marker"]
    pos = 2
    while True:
        while pos < len(data) and data[pos] == 0xFF and pos + 1 < len(data) and data[pos + 1] == 0xFF:
            pos += 1  # fill bytes before a marker
        if pos + 2 > len(data):
            return ["jpeg: cut short: no end-of-image marker"]
        if data[pos] != 0xFF:
            return [f"jpeg: expected a marker at byte {pos}, found 0x{data[pos]:02x} (corrupt data)"]
        marker = data[pos + 1]
        if marker == 0xD9:
            return scan_warnings(data, check_budget())
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        if pos + 4 > len(data):
            return ["jpeg: cut short: no end-of-image marker"]
        length = struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        end = pos + 2 + length
        if length < 2 or end > len(data):
            return [f"jpeg: cut short: segment 0x{marker:02x} at byte {pos} runs past the end of the file"]
        if marker != 0xDA:
            pos = end
            continue
        pos, problem = _scan_end(data, end)
        if problem is not None:
            return [problem]


def _scan_end(data: bytes, start: int) -> tuple[int, str | None]:
    """Where a scan's compressed data ends (its next marker), or what is wrong in it."""
    expected = 0
    for match in _SCAN_MARKER.finditer(data, start):
        marker = match.group(1)[0]
        at = match.end() - 2
        if 0xD0 <= marker <= 0xD7:
            if marker - 0xD0 != expected:
                return at, (
                    f"jpeg: restart marker {marker - 0xD0} at byte {at} where {expected} was due (corrupt data)"
                )
            expected = (expected + 1) % 8
            continue
        if marker in _JPEG_AFTER_SCAN:
            return at, None
        return at, f"jpeg: invalid marker 0x{marker:02x} inside the compressed data at byte {at} (corrupt data)"
    return len(data), "jpeg: cut short: no end-of-image marker"

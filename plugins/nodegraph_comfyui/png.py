"""Text chunks of a PNG file, read with the standard library only (validation must not import PIL).

ComfyUI's SaveImage writes the queued API prompt in a `prompt` chunk and the UI graph in a
`workflow` chunk (tEXt; some tools re-save them as iTXt or zTXt), and nodegraph writes `nodegraph`.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_TEXT_BYTES = 16 * 1024 * 1024


class NotPng(ValueError):
    """The file is not a PNG, or its chunk structure is broken."""


def is_png(path: Path) -> bool:
    """Whether the file starts with the PNG signature."""
    try:
        with open(path, "rb") as file:
            return file.read(8) == PNG_SIGNATURE
    except OSError:
        return False


def text_chunks(path: Path) -> dict[str, str]:
    """Every tEXt/iTXt/zTXt keyword and its text (the first of each keyword wins), up to IEND."""
    with open(path, "rb") as file:
        data = file.read()
    if not data.startswith(PNG_SIGNATURE):
        raise NotPng(f"'{path}' is not a PNG file")
    texts: dict[str, str] = {}
    pos = len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if len(body) != length:
            raise NotPng(f"'{path}' is truncated inside a {kind!r} chunk")
        pos += 12 + length
        if kind == b"IEND":
            break
        text = _decode(kind, body)
        if text is not None and text[0] not in texts:
            texts[text[0]] = text[1]
    return texts


def _decode(kind: bytes, body: bytes) -> tuple[str, str] | None:
    """(keyword, text) of one text chunk, or None for other chunks and undecodable ones."""
    key, sep, rest = body.partition(b"\x00")
    if not sep:
        return None
    keyword = key.decode("latin-1")
    try:
        if kind == b"tEXt":
            return keyword, rest.decode("utf-8", errors="replace")
        if kind == b"zTXt":
            return keyword, _inflate(rest[1:]).decode("utf-8", errors="replace")
        if kind == b"iTXt":
            compressed, rest = rest[0], rest[2:]
            _lang, _, rest = rest.partition(b"\x00")
            _translated, _, text = rest.partition(b"\x00")
            raw = _inflate(text) if compressed else text
            return keyword, raw.decode("utf-8", errors="replace")
    except (zlib.error, IndexError):
        return None
    return None


def _inflate(data: bytes) -> bytes:
    """zlib-decompress at most MAX_TEXT_BYTES (a compressed chunk cannot expand without bound)."""
    inflater = zlib.decompressobj()
    out = inflater.decompress(data, MAX_TEXT_BYTES)
    if inflater.unconsumed_tail:
        raise zlib.error("text chunk too large")
    return out

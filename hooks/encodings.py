"""One reader per stored encoding: stored bytes in, the bytes GET returns out.

Every encoding ever written stays here, readable, forever: data on disk
outlives the code that wrote it. The layouts are in docs/stored-format.md,
and tests/data/stored/ holds one file per encoding, written by the version
that introduced it, which must keep reading back to the original.

These calls run where they are made: lepton_jpeg_python holds the GIL, so the
server runs "lepton-jpeg" in ImageCompressor's rebuild processes (see
compressor.py); the others release it in their C code.
"""

from __future__ import annotations

from collections.abc import Callable

import lepton_jpeg_python
import pylibjxl

from hooks.png_exact import decode as png_redeflate
from hooks.results import IDENTITY, JXL_JPEG, LEPTON_JPEG, PNG_REDEFLATE


def _identity(data: bytes) -> bytes:
    return data


def _lepton(data: bytes) -> bytes:
    return bytes(lepton_jpeg_python.decompress_bytes(data))


def _jxl(data: bytes) -> bytes:
    return bytes(pylibjxl.jxl_to_jpeg(data))


READERS: dict[str, Callable[[bytes], bytes]] = {
    IDENTITY: _identity,
    JXL_JPEG: _jxl,
    LEPTON_JPEG: _lepton,
    PNG_REDEFLATE: png_redeflate,
}

# Encodings whose rebuild holds the GIL for long: run them in a process, not a request thread.
HOLDS_GIL = frozenset({LEPTON_JPEG})


def decode(data: bytes, encoding: str) -> bytes:
    """The original bytes of a file stored with `encoding`; ValueError for an unknown encoding."""
    reader = READERS.get(encoding)
    if reader is None:
        raise ValueError(f"unknown encoding {encoding!r}")
    return reader(data)


def is_reversible(encoding: str) -> bool:
    """Whether this encoding promises the upload back bit for bit (so it must be checked before it is stored)."""
    return encoding != IDENTITY and encoding in READERS

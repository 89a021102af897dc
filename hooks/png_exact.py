"""png-redeflate: a PNG stored as its inflated scanlines, rebuilt byte for byte by re-deflating them.

Most PNGs are deflated by zlib with one of a few parameter sets. When
re-deflating the inflated IDAT stream with some (level, memLevel, strategy,
window) reproduces that stream exactly, the file is stored as those
parameters, the IDAT chunk sizes, every other byte of the file verbatim, and
the scanlines compressed with a stronger codec. The rebuild re-deflates and
re-chunks; the chunk CRCs come out identical because their bytes do.

Two scanline codecs, chosen per file by size (measured in bench/compress.py):
xz of the filtered scanlines (diagrams, icons, screenshots), or, for 8-bit
grey, RGB and RGBA images that are not interlaced, the pixels as lossless
JPEG XL plus one filter-type byte per row (photos): the rebuild re-filters the
pixels with those filter types, which is exact, since PNG filtering is a pure
function of the pixels above and to the left.
Above 1 MiB of scanlines, a codec that loses clearly (by 1.5x) on a middle
band of rows is not run on the whole (_contenders).

Anything that does not reproduce (another deflater: zopfli, libdeflate, a
zlib-ng build; a damaged stream) is declined, and stored as uploaded. The
container layout is in docs/stored-format.md; encode() and decode() here are
its only writer and reader.

Bounds: the IDAT stream is inflated no further than the size the header
declares (rows x (1 + row bytes), summed over the Adam7 passes) and never past
`max_inflated`, so a small file declaring a huge image costs nothing.
"""

from __future__ import annotations

import io
import lzma
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pylibjxl
from PIL import Image

SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAGIC = b"uPNG"
VERSION = 1
MAX_INFLATED = 1 << 30  # 1 GiB of scanlines: well over a 40 MP RGBA 16-bit image

# Scanline codecs (the byte after the parameters)
CODEC_XZ = 1  # head + tail + scanlines, one xz stream
CODEC_JXL = 2  # head + tail + row filter bytes in xz, pixels in lossless JPEG XL
_JXL_CHANNELS = {0: 1, 2: 3, 6: 4}  # 8-bit colour types JPEG XL takes as they are (not grey + alpha)
_PIL_MODES = {1: "L", 3: "RGB", 4: "RGBA"}

# zlib strategies, by the numbers zlib itself uses (stored in the container).
STRATEGIES = (zlib.Z_DEFAULT_STRATEGY, zlib.Z_FILTERED, zlib.Z_HUFFMAN_ONLY, zlib.Z_RLE, zlib.Z_FIXED)

# Fixed part of the container: magic, version, level, memLevel, strategy, wbits,
# codec, then head length, tail length, inflated length, IDAT chunk count.
_HEADER = struct.Struct(">4sBBBBBBIIQI")
_XZ_EXTREME_BELOW = 8 << 20  # xz -9e gains up to 5 % over -9 but takes ~2x as long: worth it on small inputs
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel
# Adam7 passes: (x start, y start, x step, y step)
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
_FIRST_PROBE = 1 << 16  # input bytes fed to every candidate before any is deflated in full
_SAMPLE_ABOVE = 4 << 20  # scanlines beyond this: try a codec on a sample before the whole
_SAMPLE = 256 << 10
_MIN_GAIN = 0.03
_CHOOSE_ABOVE = 1 << 20  # scanlines beyond this: a codec clearly losing on a band of rows is not run in full
_CLEAR_LOSS = 1.5


class Declined(Exception):
    """This PNG cannot be stored reversibly by this codec: store it as uploaded."""


@dataclass(frozen=True)
class Params:
    """The zlib settings that reproduce a stream."""

    level: int
    mem_level: int
    strategy: int
    wbits: int

    def compressor(self) -> zlib._Compress:
        return zlib.compressobj(self.level, zlib.DEFLATED, self.wbits, self.mem_level, self.strategy)

    def deflate(self, raw: bytes) -> bytes:
        c = self.compressor()
        return c.compress(raw) + c.flush()


@dataclass(frozen=True)
class Parsed:
    """A PNG split around its one run of IDAT chunks."""

    head: bytes  # signature and every chunk before the first IDAT, verbatim
    idat_sizes: tuple[int, ...]
    stream: bytes  # the concatenated IDAT data: one zlib stream
    tail: bytes  # every byte after the last IDAT chunk (IEND, APNG fdAT, trailing data), verbatim
    expected: int  # inflated size the header declares


def encode(data: bytes, *, max_inflated: int = MAX_INFLATED) -> bytes:
    """The png-redeflate container for `data`; raises Declined when it would not rebuild exactly."""
    parsed = parse(data)
    if parsed.expected > max_inflated:
        raise Declined(f"declares {parsed.expected} bytes of scanlines, over the {max_inflated}-byte limit")
    raw = inflate(parsed.stream, parsed.expected)
    params = find_params(raw, parsed.stream)
    if params is None:
        raise Declined("no zlib setting reproduces the IDAT stream")
    geometry = Geometry.of(parsed.head)
    pixels = _pixels(data, geometry) if geometry is not None else None
    run_xz, run_jxl = _contenders(raw, pixels, geometry)
    bodies = {}
    if run_xz and _promising(raw, params, _xz):
        bodies[CODEC_XZ] = _xz(parsed.head + parsed.tail + raw)
    if run_jxl and pixels is not None and _promising(raw, params, lambda band: _jxl_band(band, geometry)):
        body = _pixel_body(parsed, raw, pixels, geometry)
        if body is not None:
            bodies[CODEC_JXL] = body
    if not bodies:
        raise Declined("neither scanline codec beats deflate on a sample")
    codec = min(bodies, key=lambda c: len(bodies[c]))
    header = _HEADER.pack(MAGIC, VERSION, params.level, params.mem_level, params.strategy, params.wbits, codec,
                          len(parsed.head), len(parsed.tail), len(raw), len(parsed.idat_sizes))
    return header + struct.pack(f">{len(parsed.idat_sizes)}I", *parsed.idat_sizes) + bodies[codec]


def decode(blob: bytes) -> bytes:
    """The original PNG, bit for bit, from a png-redeflate container (every version so far)."""
    if len(blob) < _HEADER.size or blob[:4] != MAGIC:
        raise ValueError("not a png-redeflate container")
    _magic, version, level, mem_level, strategy, wbits, codec, head_len, tail_len, raw_len, count = (
        _HEADER.unpack_from(blob)
    )
    if version != VERSION or codec not in (CODEC_XZ, CODEC_JXL):
        raise ValueError(f"png-redeflate version {version} codec {codec} is not known to this reader")
    sizes = struct.unpack_from(f">{count}I", blob, _HEADER.size)
    body = memoryview(blob)[_HEADER.size + 4 * count :]
    if codec == CODEC_XZ:
        plain = _unxz(body, head_len + tail_len + raw_len)
        head, tail, raw = plain[:head_len], plain[head_len : head_len + tail_len], plain[head_len + tail_len :]
    else:
        head, tail, raw = _decode_pixel_body(body, head_len, tail_len, raw_len)
    stream = Params(level, mem_level, strategy, wbits).deflate(raw)
    if sum(sizes) != len(stream):
        raise ValueError("png-redeflate: re-deflated stream does not fit the stored IDAT sizes")
    return head + _idat_chunks(stream, sizes) + tail


# --- scanline codecs ---------------------------------------------------------------


def _promising(raw: bytes, params: Params, codec: Callable[[bytes], bytes | None]) -> bool:
    """Whether `codec` beats the file's own deflate by _MIN_GAIN on a sample from the middle.

    Large images only: on a 12 MP noisy photo xz takes minutes to save
    nothing, so a 256 KiB sample decides whether the whole is worth it.
    """
    if len(raw) <= _SAMPLE_ABOVE:
        return True
    middle = len(raw) // 2
    sample = raw[middle : middle + _SAMPLE]
    out = codec(sample)
    return out is not None and len(out) < (1 - _MIN_GAIN) * len(params.deflate(sample))


def _jxl_band(sample: bytes, geometry: Geometry) -> bytes | None:
    """JPEG XL of the whole rows in a sample of scanlines (filter bytes dropped, rows left filtered).

    Filtered rows are not the pixels, but un-filtering the sample would cost
    a Pillow decode of the whole file; as an estimate of how well JPEG XL
    predicts this image, the filtered rows understate it, which errs towards xz.
    """
    stride = 1 + geometry.width * geometry.channels
    rows = len(sample) // stride
    if rows < 8:
        return None
    band = np.frombuffer(sample[: rows * stride], np.uint8).reshape(rows, stride)[:, 1:]
    return bytes(pylibjxl.encode(band.reshape(rows, geometry.width, geometry.channels), lossless=True))


def _xz(plain: bytes) -> bytes:
    """xz -9 (-9e below 8 MiB), its dictionary no larger than the input: same output size, far less set-up."""
    preset = 9 | lzma.PRESET_EXTREME if len(plain) < _XZ_EXTREME_BELOW else 9
    dict_size = min(64 << 20, max(1 << 16, len(plain)))
    filters = [{"id": lzma.FILTER_LZMA2, "preset": preset, "dict_size": dict_size}]
    return lzma.compress(plain, format=lzma.FORMAT_XZ, check=lzma.CHECK_NONE, filters=filters)


def _unxz(body: bytes | memoryview, size: int) -> bytes:
    """Exactly `size` bytes out of one xz stream, never more."""
    unpacker = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    plain = unpacker.decompress(body, max_length=size)
    if len(plain) != size or not unpacker.eof or unpacker.unused_data:
        raise ValueError("png-redeflate body is damaged")
    return plain


@dataclass(frozen=True)
class Geometry:
    """What re-filtering needs: rows, columns, bytes per pixel (8-bit samples only)."""

    height: int
    width: int
    channels: int

    @classmethod
    def of(cls, head: bytes) -> Geometry | None:
        """The geometry of a non-interlaced 8-bit grey, RGB or RGBA PNG, else None."""
        ihdr = _find_ihdr(head)
        if ihdr is None:
            return None
        width, height, depth, colour, _method, _filter, interlace = struct.unpack(">IIBBBBB", ihdr)
        if depth != 8 or interlace != 0 or colour not in _JXL_CHANNELS:
            return None
        return cls(height, width, _JXL_CHANNELS[colour])


def _pixels(data: bytes, geometry: Geometry) -> np.ndarray | None:
    """The unfiltered pixels (rows x bytes) as Pillow decodes them (in C), or None when its mode differs."""
    with Image.open(io.BytesIO(data), formats=["PNG"]) as image:
        if image.mode != _PIL_MODES[geometry.channels] or image.size != (geometry.width, geometry.height):
            return None
        return np.frombuffer(image.tobytes(), np.uint8).reshape(geometry.height, -1)


def _contenders(raw: bytes, pixels: np.ndarray | None, geometry: Geometry | None) -> tuple[bool, bool]:
    """(run xz, run JPEG XL) on the whole image: a codec clearly losing on a band of rows is skipped.

    Only above _CHOOSE_ABOVE bytes of scanlines, where a full encode costs
    seconds. Each codec compresses the same middle band of rows, xz the
    filtered scanlines, JPEG XL the pixels; measured on the real corpus
    (tests/data/corpus_real), a 6.4 MB diagram spent 4.3 s on a JPEG XL body
    5x xz's, a 13 MB plot 4.7 s on one 1.7x xz's, while the two were within
    _CLEAR_LOSS on the files where both were close.
    """
    if pixels is None or geometry is None or len(raw) <= _CHOOSE_ABOVE:
        return True, pixels is not None
    height, stride = pixels.shape
    rows = min(height, max(8, _SAMPLE // (stride + 1)))
    first = (height - rows) // 2
    xz = len(_xz(raw[first * (stride + 1) : (first + rows) * (stride + 1)]))
    band = pixels[first : first + rows]
    jxl = len(pylibjxl.encode(band.reshape(rows, geometry.width, geometry.channels), lossless=True))
    return xz <= _CLEAR_LOSS * jxl, jxl <= _CLEAR_LOSS * xz


def _pixel_body(parsed: Parsed, raw: bytes, pixels: np.ndarray, geometry: Geometry) -> bytes | None:
    """CODEC_JXL's body, or None when it would not rebuild.

    refilter() must give back the very scanlines, which also proves
    Pillow's pixels are the ones in the file.
    """
    filters = raw[:: len(raw) // geometry.height]
    if max(filters) > 4:
        return None
    jxl = pylibjxl.encode(pixels.reshape(geometry.height, geometry.width, geometry.channels), lossless=True)
    back = np.asarray(pylibjxl.decode(jxl)).reshape(geometry.height, -1)
    if not np.array_equal(back, pixels) or refilter(back, filters, geometry.channels) != raw:
        return None
    side = _xz(parsed.head + parsed.tail + filters)
    return struct.pack(">I", len(side)) + side + jxl


def _decode_pixel_body(body: memoryview, head_len: int, tail_len: int, raw_len: int) -> tuple[bytes, bytes, bytes]:
    """(head, tail, scanlines) out of a CODEC_JXL body."""
    (side_len,) = struct.unpack_from(">I", body)
    head = _find_head(body[4 : 4 + side_len], head_len, tail_len, raw_len)
    geometry = Geometry.of(head[0])
    if geometry is None:
        raise ValueError("png-redeflate pixel body without an 8-bit IHDR")
    pixels = np.asarray(pylibjxl.decode(bytes(body[4 + side_len :]))).reshape(geometry.height, -1)
    if pixels.shape[1] != geometry.width * geometry.channels:
        raise ValueError("png-redeflate pixels do not match the IHDR")
    raw = refilter(pixels, head[2], geometry.channels)
    if len(raw) != raw_len:
        raise ValueError("png-redeflate pixels do not fill the declared scanlines")
    return head[0], head[1], raw


def _find_head(side: memoryview, head_len: int, tail_len: int, raw_len: int) -> tuple[bytes, bytes, bytes]:
    """(head, tail, filter bytes) from the xz side stream; the filter bytes are whatever follows."""
    unpacker = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    plain = unpacker.decompress(side, max_length=head_len + tail_len + raw_len)
    if not unpacker.eof or len(plain) < head_len + tail_len:
        raise ValueError("png-redeflate side stream is damaged")
    return plain[:head_len], plain[head_len : head_len + tail_len], plain[head_len + tail_len :]


def _find_ihdr(head: bytes) -> bytes | None:
    pos = len(SIGNATURE)
    if head[pos + 4 : pos + 8] != b"IHDR" or len(head) < pos + 8 + 13:
        return None
    return head[pos + 8 : pos + 21]


def refilter(pixels: np.ndarray, filters: bytes, bpp: int) -> bytes:
    """The filtered scanlines of `pixels` (rows x bytes), each row with its own filter type.

    Cheap, unlike un-filtering: filtering reads only unfiltered bytes, so
    every row is computed with whole-array operations.
    """
    height, stride = pixels.shape
    out = np.empty((height, stride + 1), np.uint8)
    out[:, 0] = np.frombuffer(filters, np.uint8)
    block = 1024
    for start in range(0, height, block):
        stop = min(height, start + block)
        cur = pixels[start:stop].astype(np.int16)
        up = np.zeros_like(cur)
        up[1:] = cur[:-1]
        if start:
            up[0] = pixels[start - 1]
        left = np.zeros_like(cur)
        left[:, bpp:] = cur[:, :-bpp]
        upleft = np.zeros_like(cur)
        upleft[:, bpp:] = up[:, :-bpp]
        kinds = out[start:stop, 0]
        rows = cur.copy()  # filter 0 (None)
        for kind, pred in ((1, left), (2, up), (3, (left + up) >> 1), (4, None)):
            chosen = kinds == kind
            if not chosen.any():
                continue
            if pred is None:
                pred = _paeth(left[chosen], up[chosen], upleft[chosen])
                rows[chosen] = cur[chosen] - pred
            else:
                rows[chosen] = cur[chosen] - pred[chosen]
        out[start:stop, 1:] = rows & 0xFF
    return out.tobytes()


def _paeth(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """The PNG Paeth predictor, element-wise (a left, b up, c upper left)."""
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


# --- parsing ---------------------------------------------------------------------


def parse(data: bytes) -> Parsed:
    """Split a PNG around its IDAT run; Declined for anything this codec does not take."""
    if not data.startswith(SIGNATURE):
        raise Declined("not a PNG")
    pos, first, last = len(SIGNATURE), None, None
    sizes: list[int] = []
    parts: list[bytes] = []
    ihdr = None
    while pos + 12 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        end = pos + 12 + length
        if end > len(data):
            raise Declined("chunk runs past the end of the file")
        if kind == b"IHDR" and ihdr is None:
            ihdr = data[pos + 8 : pos + 8 + length]
        if kind == b"IDAT":
            if last is not None and last != pos:
                raise Declined("IDAT chunks are not consecutive")
            body = data[pos + 8 : pos + 8 + length]
            if struct.unpack_from(">I", data, end - 4)[0] != zlib.crc32(data[pos + 4 : pos + 8 + length]):
                raise Declined("IDAT chunk CRC is wrong")
            first = pos if first is None else first
            last = end
            sizes.append(length)
            parts.append(body)
        pos = end
        if kind == b"IEND":
            break
    if first is None or last is None or ihdr is None:
        raise Declined("no IHDR or no IDAT")
    return Parsed(data[:first], tuple(sizes), b"".join(parts), data[last:], declared_size(ihdr))


def declared_size(ihdr: bytes) -> int:
    """Bytes of filtered scanlines the header declares: rows x (1 + row bytes), per Adam7 pass when interlaced."""
    if len(ihdr) != 13:
        raise Declined("IHDR is not 13 bytes")
    width, height, depth, colour, _method, _filter, interlace = struct.unpack(">IIBBBBB", ihdr)
    if colour not in _CHANNELS or depth not in (1, 2, 4, 8, 16) or width == 0 or height == 0:
        raise Declined("IHDR is not valid")
    bits = depth * _CHANNELS[colour]
    if interlace == 0:
        return height * (1 + (width * bits + 7) // 8)
    if interlace != 1:
        raise Declined("unknown interlace method")
    total = 0
    for x0, y0, dx, dy in _ADAM7:
        cols = (width - x0 + dx - 1) // dx if width > x0 else 0
        rows = (height - y0 + dy - 1) // dy if height > y0 else 0
        if cols and rows:
            total += rows * (1 + (cols * bits + 7) // 8)
    return total


def inflate(stream: bytes, expected: int) -> bytes:
    """The scanlines, read no further than `expected` bytes; Declined unless the stream holds exactly that."""
    if len(stream) < 2 or (stream[0] & 0x0F) != 8 or (stream[0] << 8 | stream[1]) % 31:
        raise Declined("IDAT does not start with a zlib header")
    unpacker = zlib.decompressobj()
    try:
        raw = unpacker.decompress(stream, expected + 1)
    except zlib.error as exc:
        raise Declined(f"IDAT does not inflate: {exc}") from exc
    if len(raw) != expected or not unpacker.eof or unpacker.unused_data or unpacker.unconsumed_tail:
        raise Declined(f"IDAT holds {len(raw)}{'+' if not unpacker.eof else ''} bytes, not the {expected} declared,"
                       " or data after its end")
    return raw


# --- parameter search ---------------------------------------------------------------


def candidates(stream: bytes) -> tuple[list[Params], list[Params]]:
    """Every zlib setting consistent with the stream's header: (the common ones, the rest).

    zlib writes the window size (CINFO) and a level class (FLEVEL) into the
    two-byte header: FLEVEL 0 is level 0-1 or a Huffman-only/RLE/fixed
    strategy, 1 is level 2-5, 2 is level 6, 3 is level 7-9. libpng and
    Pillow use memLevel 8 or 9 with the default or the filtered strategy:
    those are tried first, on their own.
    """
    wbits = (stream[0] >> 4) + 8
    windows = (wbits, 8) if wbits == 9 else (wbits,)  # zlib writes windowBits 8 as 9
    flevel = stream[1] >> 6
    plain = (zlib.Z_DEFAULT_STRATEGY, zlib.Z_FILTERED)
    common: list[tuple[int, int]] = []
    rare: list[tuple[int, int]] = []
    if flevel == 0:
        common += [(1, s) for s in plain]
        rare += [(0, zlib.Z_DEFAULT_STRATEGY), (1, zlib.Z_HUFFMAN_ONLY), (1, zlib.Z_RLE)]  # level >0 changes neither
        rare += [(level, zlib.Z_FIXED) for level in range(1, 10)]
    else:
        common += [(level, s) for level in {1: (2, 3, 4, 5), 2: (6,), 3: (9, 7, 8)}[flevel] for s in plain]

    def expand(combos: list[tuple[int, int]], mem_levels: tuple[int, ...]) -> list[Params]:
        return [Params(lvl, mem, strategy, w) for mem in mem_levels for lvl, strategy in combos for w in windows]

    first = expand(common, (8, 9))
    rest = expand(common, (7, 6, 5, 4, 3, 2, 1)) + expand(rare, (8, 9, 7, 6, 5, 4, 3, 2, 1))
    return first, rest


def find_params(raw: bytes, stream: bytes) -> Params | None:
    """The first candidate whose deflate of `raw` is exactly `stream`, the common settings first."""
    for stage in candidates(stream):
        found = _search(stage, raw, stream)
        if found is not None:
            return found
    return None


def _search(stage: list[Params], raw: bytes, stream: bytes) -> Params | None:
    """Deflate `raw` with every candidate of `stage` at once, dropping each as soon as it strays.

    Cheap first: every candidate deflates a growing prefix of the input, and
    is dropped when the bytes it has emitted differ from the stream's. With
    Z_NO_FLUSH zlib emits only finished blocks, so what it has emitted is
    always a prefix of its final output; a full deflate is only ever paid by
    the candidates still alive at the end.
    """
    alive = [(p, p.compressor(), bytearray()) for p in stage]
    fed, step = 0, _FIRST_PROBE
    while alive and fed < len(raw):
        piece = raw[fed : fed + step]
        fed += len(piece)
        survivors = []
        for params, comp, out in alive:
            out += comp.compress(piece)
            if len(out) <= len(stream) and stream.startswith(out):
                survivors.append((params, comp, out))
        alive, step = survivors, step * 4
    for params, comp, out in alive:
        out += comp.flush()
        if out == stream:
            return params
    return None


def _idat_chunks(stream: bytes, sizes: tuple[int, ...]) -> bytes:
    """IDAT chunks carrying `stream`, split at the stored sizes, each with its CRC."""
    out = bytearray()
    pos = 0
    for size in sizes:
        body = stream[pos : pos + size]
        pos += size
        out += struct.pack(">I", size) + b"IDAT" + body + struct.pack(">I", zlib.crc32(b"IDAT" + body))
    return bytes(out)

"""Time the bare optimizers, and ImageCompressor end to end, on the corpus and on 12-megapixel files.

    python -m bench.compress_bare [--no-12mp]

Prints bytes saved per format on tests/data/corpus, then, for a generated
12 MP JPEG (with EXIF, ICC, XMP) and PNG, the time of every path. If a
`jpegtran` binary is on PATH (Debian: libjpeg-turbo-progs) it is measured
beside mozjpeg, which is how hooks/optimizers.py's JPEG choice was made.
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pylibjxl

from hooks import ImageCompressor
from hooks.formats import sniff
from hooks.optimizers import Settings, optimizer_for
from tests.data import make_corpus

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "data" / "corpus"
SETTINGS = Settings()
Transform = Callable[[bytes], "bytes | None"]


def jpegtran(*args: str) -> Transform:
    def run(data: bytes) -> bytes:
        return subprocess.run(["jpegtran", *args], input=data, capture_output=True, check=True).stdout

    return run


def registered(mode: str, fmt: str) -> Transform:
    optimizer = optimizer_for(mode, fmt)
    assert optimizer is not None, (mode, fmt)
    return lambda data: optimizer.optimize(data, SETTINGS)


def timed(fn: Transform, data: bytes) -> tuple[bytes | None, float]:
    started = time.perf_counter()
    out = fn(data)
    return out, time.perf_counter() - started


def corpus_savings() -> None:
    """Bytes saved per format and mode by the registered optimizer, keeping only smaller results."""
    print("== corpus: bytes saved by the registered optimizer (original kept when not smaller)")
    for mode in ("lossless", "exact", "lossy"):
        totals: dict[str, list[int]] = {}
        for path in sorted(CORPUS.iterdir()):
            data = path.read_bytes()
            fmt = sniff(data[:32])
            if fmt is None or path.name in ("bomb.png", "truncated.jpg"):
                continue
            optimizer = optimizer_for(mode, fmt)
            out = None
            if optimizer is not None:
                try:
                    out = optimizer.optimize(data, SETTINGS)
                except Exception as exc:  # a bench reports, it does not stop
                    print(f"   {path.name}: {exc}")
            kept = len(out) if out is not None and len(out) < len(data) else len(data)
            before, after = totals.setdefault(fmt, [0, 0])
            totals[fmt] = [before + len(data), after + kept]
        for fmt, (before, after) in sorted(totals.items()):
            saved = before - after
            print(f"{mode:9} {fmt:5} {before:9} -> {after:9}  saved {saved:8} ({100 * saved / before:5.1f} %)")


def twelve_mp() -> None:
    """Every path on a 12 MP JPEG and PNG, bare and through ImageCompressor."""
    started = time.perf_counter()
    photo = make_corpus.photo((4000, 3000), seed=42)
    metadata = {"exif": make_corpus.exif_bytes(), "icc_profile": make_corpus.srgb_icc(), "xmp": make_corpus.XMP}
    jpeg = make_corpus.jpeg(photo, quality=92, **metadata)
    out = io.BytesIO()
    photo.save(out, "PNG")
    png = out.getvalue()
    print(f"\n== 12 MP files generated in {time.perf_counter() - started:.1f} s: JPEG {len(jpeg)} B, PNG {len(png)} B")

    paths: list[tuple[str, Transform, bytes]] = [
        ("jpeg lossless: mozjpeg (chosen)", registered("lossless", "jpeg"), jpeg),
        ("jpeg exact: jpeg_to_jxl + verify", registered("exact", "jpeg"), jpeg),
        ("jpeg lossy: pillow q85", registered("lossy", "jpeg"), jpeg),
        ("png lossless: oxipng level 2", registered("lossless", "png"), png),
    ]
    if shutil.which("jpegtran"):
        paths[1:1] = [
            ("jpeg: jpegtran -copy all -progressive", jpegtran("-copy", "all", "-progressive"), jpeg),
            ("jpeg: jpegtran -copy all -optimize", jpegtran("-copy", "all", "-optimize"), jpeg),
        ]
    for name, fn, data in paths:
        result, seconds = timed(fn, data)
        size = len(result) if result is not None else len(data)
        print(f"{name:40} {seconds:6.2f} s  {len(data):9} -> {size:9} ({100 * (len(data) - size) / len(data):5.1f} %)")
    jxl = pylibjxl.jpeg_to_jxl(jpeg)
    _, seconds = timed(pylibjxl.jxl_to_jpeg, jxl)
    print(f"{'jxl restore (GET of exact mode)':40} {seconds:6.2f} s")

    with tempfile.TemporaryDirectory() as tmp, ImageCompressor() as compressor:
        warm = Path(tmp) / "warm.jpg"
        warm.write_bytes((CORPUS / "progressive.jpg").read_bytes())
        compressor.process(str(warm), "lossless")  # start the pool outside the timings
        for name, data, modes in (("12mp.jpg", jpeg, ("lossless", "exact", "lossy")), ("12mp.png", png, ("lossless",))):
            path = Path(tmp) / name
            path.write_bytes(data)
            for mode in modes:
                started = time.perf_counter()
                outcome = compressor.process(str(path), mode)
                label = f"ImageCompressor {name} {mode}"
                print(f"{label:40} {time.perf_counter() - started:6.2f} s  {outcome.reason}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-12mp", action="store_true", help="corpus only")
    args = parser.parse_args()
    corpus_savings()
    if not args.no_12mp:
        twelve_mp()


if __name__ == "__main__":
    main()

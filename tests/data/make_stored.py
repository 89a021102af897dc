"""Write tests/data/stored/: one file per stored encoding, as this version writes it.

Run once when an encoding (or a new version of one) is added, and commit the
output; never rewrite an existing file. tests/test_exact_codecs.py reads every
file back with today's readers and compares it with the original's SHA-256
(in manifest.json): data on disk outlives the code that wrote it.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402

from hooks import png_exact  # noqa: E402
from hooks.optimizers import Settings, jxl_transcode, lepton_encode  # noqa: E402

CORPUS = ROOT / "tests" / "data" / "corpus"
STORED = ROOT / "tests" / "data" / "stored"


def small_rgba_png() -> bytes:
    """A 48x32 RGBA PNG written by Pillow: stored with png-redeflate's JPEG XL pixel codec."""
    image = Image.radial_gradient("L").resize((48, 32)).convert("RGBA")
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def main() -> None:
    progressive = (CORPUS / "progressive.jpg").read_bytes()
    gray16 = (CORPUS / "gray16_reducible.png").read_bytes()
    rgba = small_rgba_png()
    entries = {
        "identity.bin": ("identity", b"stored as uploaded\n", b"stored as uploaded\n"),
        "progressive.jxl-jpeg": ("jxl-jpeg", progressive, jxl_transcode(progressive, Settings())),
        "progressive.lepton-jpeg": ("lepton-jpeg", progressive, lepton_encode(progressive, Settings())),
        "gray16-xz.png-redeflate": ("png-redeflate", gray16, png_exact.encode(gray16)),
        "rgba-jxl.png-redeflate": ("png-redeflate", rgba, png_exact.encode(rgba)),
    }
    STORED.mkdir(exist_ok=True)
    manifest = {}
    for name, (encoding, original, stored) in entries.items():
        assert stored is not None, name
        if not (STORED / name).exists():  # never rewrite what an earlier version wrote
            (STORED / name).write_bytes(stored)
        manifest[name] = {"encoding": encoding, "sha256": hashlib.sha256(original).hexdigest(), "size": len(original)}
    (STORED / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()

"""Generate the small image corpus used by tests/test_hooks.py.

Run once (``python tests/data/make_corpus.py``) and commit tests/data/corpus/.
Everything is drawn with Pillow from a seeded ``random.Random`` so the same
Pillow version writes the same bytes. Images are "photo-like" (smooth
gradients, soft shapes and fine noise) so optimizers have real work to do,
and each carries the metadata the hooks must keep.
"""

from __future__ import annotations

import io
import random
import struct
import zlib
from pathlib import Path

from PIL import Image, ImageCms, ImageDraw, ImageFilter, PngImagePlugin

CORPUS = Path(__file__).resolve().parent / "corpus"

XMP = (
    b'<?xpacket begin="\xef\xbb\xbf" id="W5M0MpCehiHzreSzNTczkc9d"?>'
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
    b'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/">'
    b"<dc:creator><rdf:Seq><rdf:li>uss_dav corpus</rdf:li></rdf:Seq></dc:creator>"
    b"</rdf:Description></rdf:RDF></x:xmpmeta>"
    b'<?xpacket end="w"?>'
)

# Stand-in for the video a "motion photo" carries after the JPEG's EOI.
MP4_TRAILER = b"\0\0\0\x18ftypmp42\0\0\0\0mp42isom" + bytes(range(256)) * 8


def srgb_icc() -> bytes:
    """A real ICC profile, so 'ICC kept' is tested with realistic bytes."""
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def exif_bytes() -> bytes:
    """EXIF with Orientation=6 (rotate 90 CW), camera and date fields."""
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation
    exif[0x010F] = "USS Camera Co."  # Make
    exif[0x0110] = "Model 7"  # Model
    exif[0x0132] = "2024:05:06 07:08:09"  # DateTime
    exif.get_ifd(0x8769)[0x9003] = "2024:05:06 07:08:09"  # DateTimeOriginal
    return exif.tobytes()


def noise(rng: random.Random, mode: str, size: tuple[int, int]) -> Image.Image:
    """Uniform noise image; seeded, so deterministic."""
    bands = len(mode)
    return Image.frombytes(mode, size, rng.randbytes(size[0] * size[1] * bands))


def photo(size: tuple[int, int], seed: int) -> Image.Image:
    """An RGB image with the statistics of a photo: gradients, blurred shapes, grain."""
    rng = random.Random(seed)
    w, h = size
    light = noise(rng, "L", (w // 60 + 2, h // 60 + 2)).resize(size, Image.Resampling.BICUBIC)
    channels = []
    for angle in (0, 60, 150):
        gradient = Image.linear_gradient("L").rotate(angle, resample=Image.Resampling.BICUBIC, expand=False)
        gradient = gradient.resize(size, Image.Resampling.BICUBIC)
        tint = noise(rng, "L", (w // 30 + 2, h // 30 + 2)).resize(size, Image.Resampling.BICUBIC)
        channels.append(Image.blend(Image.blend(gradient, light, 0.4), tint, 0.15))
    image = Image.merge("RGB", channels)
    draw = ImageDraw.Draw(image)
    for _ in range(8):
        x, y = rng.randrange(w), rng.randrange(h)
        r = rng.randrange(min(w, h) // 16, min(w, h) // 4)
        grey = rng.randrange(40, 220)
        colour = (grey + rng.randrange(-30, 30), grey + rng.randrange(-30, 30), grey + rng.randrange(-30, 30))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(radius=max(w, h) / 120))
    return Image.blend(image, noise(rng, "RGB", size), 0.07)


def jpeg(image: Image.Image, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", **params)
    return out.getvalue()


def png(image: Image.Image, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG", **params)
    return out.getvalue()


def png16_gray(size: tuple[int, int], seed: int, reducible: bool) -> bytes:
    """16-bit grayscale PNG. If reducible, every sample is v*257 (fits 8 bits exactly)."""
    rng = random.Random(seed)
    w, h = size
    base = photo(size, seed).convert("L").tobytes()
    low = rng.randbytes(w * h)
    samples = bytearray()
    for i, v in enumerate(base):
        samples += struct.pack("<H", v * 257 if reducible else (v << 8) | low[i])
    return png(Image.frombytes("I;16", size, bytes(samples)))


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def bomb_png() -> bytes:
    """A tiny, well-formed PNG header declaring 100000 x 100000 grayscale pixels."""
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1024)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def frames(size: tuple[int, int], seed: int, count: int) -> list[Image.Image]:
    """Frames of a ball moving over a still photo background, like a real animation."""
    background = photo(size, seed)
    result = []
    for i in range(count):
        frame = background.copy()
        x = size[0] * (i + 1) // (count + 1)
        ImageDraw.Draw(frame).ellipse((x - 12, 30, x + 12, 54), fill=(250, 40, 30))
        result.append(frame)
    return result


def build() -> dict[str, bytes]:
    """Every corpus file, by name."""
    icc = srgb_icc()
    exif = exif_bytes()
    big = photo((640, 480), seed=1)
    files: dict[str, bytes] = {}

    files["photo_exif_icc_xmp.jpg"] = jpeg(big, quality=92, exif=exif, icc_profile=icc, xmp=XMP)
    files["progressive.jpg"] = jpeg(photo((480, 360), seed=2), quality=88, progressive=True, exif=exif)
    cmyk = Image.merge("CMYK", (*photo((320, 240), seed=3).split(), Image.linear_gradient("L").resize((320, 240))))
    files["cmyk.jpg"] = jpeg(cmyk, quality=90)
    # Data after the first image's EOI, as phones write it: must survive untouched.
    out = io.BytesIO()
    photo((320, 240), seed=14).save(
        out, "MPO", save_all=True, append_images=[photo((160, 120), seed=15)], quality=90, exif=exif
    )
    files["mpo_gain_map.jpg"] = out.getvalue()
    files["motion_photo.jpg"] = jpeg(photo((320, 240), seed=16), quality=90) + MP4_TRAILER
    files["truncated.jpg"] = files["photo_exif_icc_xmp.jpg"][: len(files["photo_exif_icc_xmp.jpg"]) * 6 // 10]

    info = PngImagePlugin.PngInfo()
    info.add_text("Title", "uss_dav corpus")
    info.add_text("Comment", "photo-like test image " * 4, zip=True)
    info.add_itxt("Description", "description with non-ASCII text: \u00e9t\u00e9", lang="fr", tkey="Description")
    info.add_itxt("XML:com.adobe.xmp", XMP.decode("utf-8"))
    files["text_icc.png"] = png(photo((320, 240), seed=4), pnginfo=info, icc_profile=icc)
    files["gray16.png"] = png16_gray((160, 120), seed=5, reducible=False)
    files["gray16_reducible.png"] = png16_gray((160, 120), seed=6, reducible=True)
    rgba = photo((256, 192), seed=7)
    rgba.putalpha(Image.radial_gradient("L").resize((256, 192)))
    files["rgba.png"] = png(rgba)

    apng = frames((160, 120), seed=8, count=3)
    out = io.BytesIO()
    apng[0].save(out, "PNG", save_all=True, append_images=apng[1:], duration=[100, 200, 300], loop=0)
    files["animated.apng"] = out.getvalue()

    gif = [f.quantize(64, dither=Image.Dither.NONE) for f in frames((160, 120), seed=9, count=3)]
    out = io.BytesIO()
    gif[0].save(out, "GIF", save_all=True, append_images=gif[1:], duration=[100, 150, 200], loop=0, optimize=False)
    files["animated.gif"] = out.getvalue()
    out = io.BytesIO()
    photo((200, 150), seed=10).quantize(256).save(out, "GIF", optimize=False)
    files["static.gif"] = out.getvalue()

    out = io.BytesIO()
    photo((320, 240), seed=11).save(out, "WEBP", quality=92, exif=exif, icc_profile=icc)
    files["photo.webp"] = out.getvalue()
    out = io.BytesIO()
    photo((320, 240), seed=12).save(out, "TIFF", compression="tiff_lzw")
    files["photo.tiff"] = out.getvalue()
    out = io.BytesIO()
    photo((256, 192), seed=13).save(out, "BMP")
    files["photo.bmp"] = out.getvalue()

    files["bomb.png"] = bomb_png()
    files["notes.txt"] = b"Not an image: a plain text note.\n" * 20
    return files


def main() -> None:
    CORPUS.mkdir(parents=True, exist_ok=True)
    for name, data in sorted(build().items()):
        (CORPUS / name).write_bytes(data)
    total = sum(p.stat().st_size for p in CORPUS.iterdir())
    # A script's own report, not library code.
    print(f"wrote {len(list(CORPUS.iterdir()))} files, {total} bytes, to {CORPUS}")


if __name__ == "__main__":
    main()

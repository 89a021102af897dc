"""`python -m uss_dav import PATH`: a store in the seed application's layout, imported into a live server's data directory."""

from __future__ import annotations

import hashlib
import io
import os
import re
import secrets
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
from PIL import Image

from tests.server import ROOT, RunningServer, write_config

FORMATS = [("PNG", "png", {"compress_level": 0}), ("JPEG", "jpg", {"quality": 90}), ("GIF", "gif", {}),
           ("WEBP", "webp", {"lossless": True})]


def make_image(fmt: str, seed: int, save: dict[str, object]) -> bytes:
    """A small image with some structure, so compressors have something to do."""
    w, h = 24 + seed % 17, 16 + seed % 11
    image = Image.new("RGB", (w, h))
    image.putdata([((x * seed) % 256, (y * 9 + seed) % 256, (x * y) % 256) for y in range(h) for x in range(w)])
    buf = io.BytesIO()
    image.save(buf, fmt, **save)
    return buf.getvalue()


def make_seed(root: Path, keys: int = 3, images: int = 17) -> dict[str, dict[str, bytes]]:
    """PATH/files/<key>/<image> with files/key_list.txt: {key: {name: bytes}}."""
    files = root / "files"
    files.mkdir(parents=True)
    tree: dict[str, dict[str, bytes]] = {}
    for k in range(keys):
        key = f"seed{k}-{secrets.token_hex(8)}"
        (files / key).mkdir()
        tree[key] = {}
        for i in range(images):
            fmt, ext, save = FORMATS[(i + k) % len(FORMATS)]
            data = make_image(fmt, 3 + i + 20 * k, save)
            (files / key / f"img{i:02d}.{ext}").write_bytes(data)
            tree[key][f"img{i:02d}.{ext}"] = data
    (files / "key_list.txt").write_text("".join(f"{key}\n" for key in tree) + "\n")
    return tree


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Every file under root: content hash and mtime (ns)."""
    return {
        str(p.relative_to(root)): (hashlib.sha1(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def run_import(server: RunningServer, *args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "uss_dav", "--config", str(config or server.config), "--data-dir", str(server.data_dir),
         "import", *args],
        cwd=ROOT, env=server.env, capture_output=True, text=True, timeout=120, check=False,
    )


def imported(server: RunningServer, *args: str, config: Path | None = None) -> str:
    done = run_import(server, *args, config=config)
    assert done.returncode == 0, done.stderr
    return done.stdout


def summary_numbers(out: str) -> dict[str, int]:
    numbers = {
        "created": r"keys: (\d+) created", "reused": r"(\d+) already present", "files": r"imported (\d+) file",
        "before": r": (\d+) bytes ->", "after": r"-> (\d+) bytes stored", "unchanged": r"already imported: (\d+)",
        "skipped": r"skipped: (\d+)",
    }
    found = {name: re.search(pattern, out) for name, pattern in numbers.items()}
    assert all(found.values()), out
    return {name: int(m.group(1)) for name, m in found.items()}  # type: ignore[union-attr]


def dav_get(server: RunningServer, key: str, name: str) -> requests.Response:
    return requests.get(f"{server.url}/{name}", auth=(key, ""), timeout=30)


def decoded(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGBA").tobytes()


# --- tests ------------------------------------------------------------------------------------


def test_import_as_is_keeps_every_key_and_byte_and_a_second_run_changes_nothing(
    server: RunningServer, tmp_path: Path
) -> None:
    tree = make_seed(tmp_path / "seed")
    source_before = snapshot(tmp_path / "seed")

    out = imported(server, str(tmp_path / "seed"), "--as-is")
    total = sum(len(images) for images in tree.values())
    numbers = summary_numbers(out)
    assert numbers == {"created": 3, "reused": 0, "files": total, "before": numbers["before"],
                       "after": numbers["before"], "unchanged": 0, "skipped": 0}
    assert numbers["before"] == sum(len(d) for images in tree.values() for d in images.values())
    for key, images in tree.items():
        assert key not in out
        listing = requests.get(f"{server.url}/api/v1/images", auth=(key, ""), timeout=10).json()["images"]
        assert [i["name"] for i in listing] == sorted(images)
        for name, data in images.items():
            got = dav_get(server, key, name)
            assert got.status_code == 200 and got.content == data, name
        # The source's modification time is kept.
        source_mtime = (tmp_path / "seed" / "files" / key / listing[0]["name"]).stat().st_mtime
        assert listing[0]["modified"] == datetime.fromtimestamp(int(source_mtime), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    data_before = snapshot(server.data_dir / "collections")
    keys_before = snapshot(server.data_dir / "keys")
    again = summary_numbers(imported(server, str(tmp_path / "seed"), "--as-is"))
    assert again == {"created": 0, "reused": 3, "files": 0, "before": 0, "after": 0, "unchanged": total, "skipped": 0}
    assert snapshot(server.data_dir / "collections") == data_before
    assert snapshot(server.data_dir / "keys") == keys_before
    assert snapshot(tmp_path / "seed") == source_before


def test_import_with_compression_keeps_pixels_stores_less_and_is_idempotent(
    server: RunningServer, tmp_path: Path
) -> None:
    tree = make_seed(tmp_path / "seed", keys=3, images=16)
    # The keys it makes take the configured mode: lossless here (no longer the default).
    lossless = write_config(tmp_path / "lossless.yaml", compression={"mode": "lossless"})
    numbers = summary_numbers(imported(server, str(tmp_path / "seed"), config=lossless))
    total = sum(len(images) for images in tree.values())
    assert numbers["files"] == total and numbers["after"] < numbers["before"]
    shrunk = 0
    for key, images in tree.items():
        for name, data in images.items():
            got = dav_get(server, key, name)
            assert got.status_code == 200, name
            assert decoded(got.content) == decoded(data), name
            shrunk += len(got.content) < len(data)
            meta = requests.get(f"{server.url}/api/v1/images/{name}/meta", auth=(key, ""), timeout=10).json()
            assert meta["uploaded_size"] == len(data)
    assert shrunk >= total // 4  # the level-0 PNGs at least

    data_before = snapshot(server.data_dir / "collections")
    again = summary_numbers(imported(server, str(tmp_path / "seed"), config=lossless))
    assert (again["files"], again["unchanged"], again["created"]) == (0, total, 0)
    assert snapshot(server.data_dir / "collections") == data_before


def test_import_skips_what_it_cannot_take_with_reasons_and_never_overwrites(
    server: RunningServer, tmp_path: Path
) -> None:
    tree = make_seed(tmp_path / "seed", keys=1, images=3)
    (key,) = tree
    folder = tmp_path / "seed" / "files" / key
    (folder / "notes.txt").write_text("not an image")
    (folder / "sub").mkdir()
    (folder / "x..y.png").write_bytes(tree[key]["img00.png"])
    os.symlink(folder / "img00.png", folder / "link.png")
    (tmp_path / "seed" / "files" / "unlisted-folder").mkdir()

    out = imported(server, str(tmp_path / "seed"))
    assert summary_numbers(out)["files"] == 3
    for reason in ("not an image", "not a regular file", "'..'", "not keys listed"):
        assert reason in out, reason
    assert key not in out

    # Someone replaces an imported image; the next import reports it and leaves it alone.
    other = make_image("PNG", 99, {})
    assert requests.put(f"{server.url}/img00.png", data=other, auth=(key, ""), timeout=10).status_code == 204
    out = imported(server, str(tmp_path / "seed"))
    assert "img00.png: the name is taken by other content" in out
    assert decoded(dav_get(server, key, "img00.png").content) == decoded(other)


def test_an_old_key_already_present_is_reused_with_its_collection(server: RunningServer, tmp_path: Path) -> None:
    tree = make_seed(tmp_path / "seed", keys=1, images=2)
    (key,) = tree
    assert summary_numbers(imported(server, str(tmp_path / "seed")))["created"] == 1
    requests.put(f"{server.url}/extra.png", data=make_image("PNG", 5, {}), auth=(key, ""), timeout=10)
    (tmp_path / "seed" / "files" / key / "new.png").write_bytes(make_image("PNG", 7, {}))
    numbers = summary_numbers(imported(server, str(tmp_path / "seed")))
    assert (numbers["created"], numbers["reused"], numbers["files"], numbers["unchanged"]) == (0, 1, 1, 2)
    names = [i["name"] for i in requests.get(f"{server.url}/api/v1/images", auth=(key, ""), timeout=10).json()["images"]]
    assert names == sorted(["extra.png", "new.png", *tree[key]])


@pytest.mark.parametrize("layout", ["missing", "no-key-list"])
def test_a_source_in_another_layout_is_refused_with_exit_status_2(
    server: RunningServer, tmp_path: Path, layout: str
) -> None:
    if layout == "no-key-list":
        (tmp_path / "files").mkdir()
    done = run_import(server, str(tmp_path if layout == "no-key-list" else tmp_path / "nowhere"))
    assert done.returncode == 2 and "import:" in done.stderr

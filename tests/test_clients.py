"""Real WebDAV clients against a running server: rclone, cadaver and webdav4.

Every test gets its own key (and so its own empty collection). Bytes are
always checked on the server side too, over plain HTTP with the same key.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import pytest
import requests

from tests.client import (
    CMD_TIMEOUT,
    RCLONE,
    Rclone,
    get_bytes,
    local_files,
    propfind,
    require_tool,
    session_for,
    url_of,
)
from tests.server import RunningServer

CADAVER = "/usr/bin/cadaver"

NON_ASCII = "Grüße ñ 日本.txt"


# --- helpers -------------------------------------------------------------------


def remote_tree(session: requests.Session, server: RunningServer) -> dict[str, int | None]:
    """Every member of the collection: relative path -> size (folders end in '/' and map to None)."""
    found: dict[str, int | None] = {}
    todo = ["/"]
    while todo:
        folder = todo.pop()
        r = propfind(session, server.url + quote(folder), "1")
        assert r.status_code == 207, f"PROPFIND {folder}: {r.status_code} {r.text[:300]}"
        for response in ET.fromstring(r.content).iter("{DAV:}response"):
            href = unquote(urlsplit(response.findtext("{DAV:}href") or "").path)
            if href.rstrip("/") == folder.rstrip("/"):
                continue
            rel = href.strip("/")
            if response.find(".//{DAV:}resourcetype/{DAV:}collection") is not None:
                found[rel + "/"] = None
                todo.append("/" + rel + "/")
            else:
                found[rel] = int(response.findtext(".//{DAV:}getcontentlength") or -1)
    return found


def files_only(tree: dict[str, int | None]) -> dict[str, int]:
    return {path: size for path, size in tree.items() if size is not None}


def assert_server_matches(session: requests.Session, server: RunningServer, root: Path) -> None:
    """The collection holds exactly the files under `root`, byte for byte."""
    local = local_files(root)
    remote = files_only(remote_tree(session, server))
    assert remote == {path: len(data) for path, data in local.items()}
    for path, data in local.items():
        got = get_bytes(session, server, path)
        assert got == data, f"/{path}: server has {len(got)} bytes that differ from the {len(data)} local ones"


def put(session: requests.Session, server: RunningServer, rel: str, data: bytes) -> None:
    r = session.put(url_of(server, rel), data=data, timeout=30)
    assert r.status_code in (200, 201, 204), f"PUT /{rel}: {r.status_code} {r.text[:300]}"


# --- rclone --------------------------------------------------------------------


def parse_listing(output: bytes, fields: int) -> dict[str, int]:
    """`rclone ls` (fields=1) or `lsl` (fields=3) output -> path -> size."""
    listed = {}
    for line in output.decode().splitlines():
        parts = line.split(None, fields)
        assert len(parts) == fields + 1, f"unexpected listing line {line!r}"
        listed[parts[-1]] = int(parts[0])
    return listed


def make_tree(root: Path) -> None:
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "empty.txt").write_bytes(b"")
    (root / "small.txt").write_bytes(b"hello, rclone\n")
    (root / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 7))
    (root / "sub" / "nested.bin").write_bytes(os.urandom(100_003))
    (root / "sub" / NON_ASCII).write_bytes("ünïcödé content\n".encode())
    (root / "sub" / "deeper" / "leaf.txt").write_bytes(b"leaf\n")


def test_rclone_copy_list_cat_delete_check(server: RunningServer, key: str, tmp_path: Path) -> None:
    require_tool(RCLONE)
    src = tmp_path / "src"
    make_tree(src)
    rc = Rclone(tmp_path, server, key)
    with session_for(key) as dav:
        rc.run("copy", str(src), ":webdav:")
        assert_server_matches(dav, server, src)
        sizes = {path: len(data) for path, data in local_files(src).items()}

        assert parse_listing(rc.run("ls", ":webdav:").stdout, 1) == sizes
        lsl = rc.run("lsl", ":webdav:").stdout
        assert parse_listing(lsl, 3) == sizes
        for line in lsl.decode().splitlines():
            assert re.match(r"^\s*\d+ \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ ", line), line

        assert rc.run("cat", ":webdav:big.bin").stdout == (src / "big.bin").read_bytes()
        assert rc.run("cat", f":webdav:sub/{NON_ASCII}").stdout == (src / "sub" / NON_ASCII).read_bytes()
        assert rc.run("cat", ":webdav:empty.txt").stdout == b""

        rc.run("deletefile", ":webdav:small.txt")
        assert dav.get(url_of(server, "small.txt"), timeout=30).status_code == 404
        rc.run("delete", ":webdav:sub")  # every file under sub/, folders stay
        remote = remote_tree(dav, server)
        assert not [p for p in files_only(remote) if p.startswith("sub/")], remote
        assert "sub/" in remote and "sub/deeper/" in remote
        assert set(files_only(remote)) == {"empty.txt", "big.bin"}

        # A local change of size is uploaded over the old file (vendor other compares sizes).
        (src / "empty.txt").write_bytes(b"no longer empty\n")
        rc.run("copy", str(src), ":webdav:")
        assert_server_matches(dav, server, src)

        rc.run("check", str(src), ":webdav:")
        rc.run("check", "--size-only", str(src), ":webdav:")
        rc.run("check", "--download", str(src), ":webdav:")  # compares every byte
        # ... and check is able to fail: a differing file makes it exit non-zero.
        put(dav, server, "small.txt", b"other bytes of another length\n")
        assert rc.run("check", str(src), ":webdav:", check=False).returncode != 0


def test_rclone_other_key_sees_nothing(server: RunningServer, key: str, tmp_path: Path) -> None:
    require_tool(RCLONE)
    with session_for(key) as dav:
        put(dav, server, "secret-a.txt", b"A's secret\n")
    _other_id, other = server.create_key()
    # Key B through an env-configured remote with Basic auth (user + obscured password).
    obscured = subprocess.run(
        [RCLONE, "obscure", other], capture_output=True, text=True, timeout=CMD_TIMEOUT, check=True
    ).stdout.strip()
    rc = Rclone(tmp_path, server, "unused")
    rc.env.update({
        "RCLONE_CONFIG_B_TYPE": "webdav",
        "RCLONE_CONFIG_B_URL": server.url + "/",
        "RCLONE_CONFIG_B_VENDOR": "other",
        "RCLONE_CONFIG_B_USER": "anyone",
        "RCLONE_CONFIG_B_PASS": obscured,
    })
    assert rc.run("lsf", "-R", "B:").stdout == b""
    assert rc.run("cat", "B:secret-a.txt", check=False).returncode != 0
    # B writing the same name leaves A's file alone.
    rc.run("rcat", "B:secret-a.txt", input=b"B's own\n")
    assert rc.run("cat", "B:secret-a.txt").stdout == b"B's own\n"
    with session_for(key) as dav:
        assert get_bytes(dav, server, "secret-a.txt") == b"A's secret\n"
    # And A (the on-the-fly remote with the bearer token) still lists only its file.
    rc_a = Rclone(tmp_path, server, key)
    assert rc_a.run("lsf", "-R", ":webdav:").stdout.decode().split() == ["secret-a.txt"]
    # A wrong key is a failure, not an empty listing.
    rc_bad = Rclone(tmp_path, server, key + "x")
    bad = rc_bad.run("lsf", ":webdav:", check=False)
    assert bad.returncode != 0 and b"401" in bad.stderr, bad.stderr


# --- cadaver -------------------------------------------------------------------


def cadaver(server: RunningServer, key: str, home: Path, cwd: Path, script: list[str]) -> str:
    """Run cadaver with `script` on stdin; credentials come only from $HOME/.netrc."""
    home.mkdir(exist_ok=True)
    netrc = home / ".netrc"
    # The server takes a non-empty Basic password as the key, so the key goes there.
    netrc.write_text(f"machine 127.0.0.1\nlogin anything\npassword {key}\n")
    netrc.chmod(0o600)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
    done = subprocess.run(
        [CADAVER, server.url + "/"], input="\n".join([*script, "quit", ""]).encode(),
        capture_output=True, timeout=CMD_TIMEOUT, cwd=cwd, env=env,
    )
    out = done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")
    assert done.returncode == 0, f"cadaver exited {done.returncode}:\n{out}"
    # cadaver exits 0 whatever happens: an authentication failure shows only in its output
    # (and then it reads the next script line as a user name).
    assert "Authentication required" not in out and "Could not" not in out, out
    return out


def cadaver_steps(out: str) -> list[tuple[str, str]]:
    """(command, its output) for each command cadaver echoed after its prompt."""
    steps = []
    for chunk in re.split(r"dav:/[^>\n]*> ", out)[1:]:
        command, _, result = chunk.partition("\n")
        steps.append((command.strip(), result))
    return steps


def listed_names(listing: str) -> set[str]:
    """Names in the output of cadaver's `ls` (a name may contain spaces)."""
    names = set()
    for line in listing.splitlines():
        m = re.match(r"^(?:Coll:)?\s+(.+?)\s+\d+\s+\w{3}\s+\d+\s+[\d:]+$", line)
        if m:
            names.add(m.group(1))
    return names


def test_cadaver_netrc_put_get_ls_mkcol_delete(server: RunningServer, key: str, tmp_path: Path) -> None:
    require_tool(CADAVER)
    work = tmp_path / "work"
    work.mkdir()
    payload = os.urandom(200_001)
    (work / "local.bin").write_bytes(payload)
    (work / "grüße.txt").write_bytes("grüße\n".encode())
    (work / "empty.txt").write_bytes(b"")
    script = [
        "mkcol docs",
        "put local.bin docs/remote.bin",
        "put grüße.txt",
        "put empty.txt",
        'put local.bin "with space.bin"',
        "ls",
        "ls docs",
        "get docs/remote.bin back.bin",
        "get grüße.txt back.txt",
        "delete grüße.txt",
        "ls",
    ]
    out = cadaver(server, key, tmp_path / "home", work, script)
    steps = cadaver_steps(out)
    assert [c for c, _ in steps] == [*script, "quit"], out
    for command, result in steps[:-1]:
        assert "succeeded" in result and "failed" not in result, f"{command!r}:\n{result}"

    results = dict(zip(script, (r for _c, r in steps)))
    first_ls, last_ls = steps[5][1], steps[10][1]
    assert {"docs", "grüße.txt", "empty.txt", "with space.bin"} <= listed_names(first_ls), first_ls
    assert "remote.bin" in listed_names(results["ls docs"])
    assert "grüße.txt" not in listed_names(last_ls) and "docs" in listed_names(last_ls), last_ls

    assert (work / "back.bin").read_bytes() == payload
    assert (work / "back.txt").read_bytes() == "grüße\n".encode()
    with session_for(key) as dav:
        assert get_bytes(dav, server, "docs/remote.bin") == payload
        assert get_bytes(dav, server, "with space.bin") == payload
        assert get_bytes(dav, server, "empty.txt") == b""
        assert dav.get(url_of(server, "grüße.txt"), timeout=30).status_code == 404
        assert remote_tree(dav, server) == {
            "docs/": None, "docs/remote.bin": len(payload), "empty.txt": 0, "with space.bin": len(payload),
        }


def test_cadaver_other_key_sees_nothing(server: RunningServer, key: str, tmp_path: Path) -> None:
    require_tool(CADAVER)
    with session_for(key) as dav:
        put(dav, server, "secret-a.txt", b"A's secret\n")
    _other_id, other = server.create_key()
    work = tmp_path / "work"
    work.mkdir()
    out = cadaver(server, other, tmp_path / "home", work, ["ls", "get secret-a.txt stolen.txt", "delete secret-a.txt"])
    steps = dict(cadaver_steps(out))
    assert "collection is empty" in steps["ls"] and "secret-a.txt" not in steps["ls"], out
    assert "failed" in steps["get secret-a.txt stolen.txt"] and "404" in steps["get secret-a.txt stolen.txt"], out
    assert "failed" in steps["delete secret-a.txt"], out
    assert not (work / "stolen.txt").exists() or (work / "stolen.txt").read_bytes() == b""
    with session_for(key) as dav:
        assert get_bytes(dav, server, "secret-a.txt") == b"A's secret\n"


# --- webdav4 -------------------------------------------------------------------


@pytest.fixture
def w4(server: RunningServer, key: str) -> Iterator[object]:
    from webdav4.client import Client

    client = Client(server.url + "/", auth=("anyone", key), retry=False, timeout=30)
    try:
        yield client
    finally:
        client.http.close()


def download(client: object, path: str) -> bytes:
    buf = io.BytesIO()
    client.download_fileobj(path, buf)  # type: ignore[attr-defined]
    return buf.getvalue()


def test_webdav4_upload_ls_download_mkdir_move_copy_remove(server: RunningServer, key: str, w4) -> None:
    from webdav4.client import ResourceAlreadyExists, ResourceNotFound

    big = os.urandom(2 * 1024 * 1024 + 3)
    small = "ünïcödé\n".encode()
    w4.upload_fileobj(io.BytesIO(big), "big.bin")
    w4.upload_fileobj(io.BytesIO(b""), "empty.bin")
    w4.upload_fileobj(io.BytesIO(small), NON_ASCII)
    with pytest.raises(ResourceAlreadyExists):
        w4.upload_fileobj(io.BytesIO(b"x"), "big.bin")  # overwrite=False is refused by the client

    listing = {e["name"]: e for e in w4.ls("", detail=True)}
    assert set(listing) == {"big.bin", "empty.bin", NON_ASCII}
    assert listing["big.bin"]["content_length"] == len(big) and listing["big.bin"]["type"] == "file"
    assert listing["empty.bin"]["content_length"] == 0
    assert listing[NON_ASCII]["content_length"] == len(small)
    assert download(w4, "big.bin") == big
    assert download(w4, NON_ASCII) == small
    assert download(w4, "empty.bin") == b""

    w4.mkdir("folder")
    assert w4.isdir("folder")
    w4.move("big.bin", "folder/moved.bin")
    assert not w4.exists("big.bin")
    w4.copy("folder/moved.bin", "copy.bin")
    w4.copy("folder", "folder2")
    w4.upload_fileobj(io.BytesIO(b"new"), "copy.bin", overwrite=True)
    assert sorted(w4.ls("", detail=False)) == sorted(["copy.bin", "empty.bin", "folder", "folder2", NON_ASCII])
    assert w4.ls("folder2", detail=False) == ["folder2/moved.bin"]
    assert download(w4, "folder/moved.bin") == big
    assert download(w4, "folder2/moved.bin") == big
    assert download(w4, "copy.bin") == b"new"

    w4.remove("folder")
    w4.remove(NON_ASCII)
    assert not w4.exists("folder") and not w4.exists(NON_ASCII)
    with pytest.raises(ResourceNotFound):
        download(w4, "folder/moved.bin")

    with session_for(key) as dav:  # what the server holds, seen without webdav4
        assert remote_tree(dav, server) == {
            "copy.bin": 3, "empty.bin": 0, "folder2/": None, "folder2/moved.bin": len(big),
        }
        assert get_bytes(dav, server, "folder2/moved.bin") == big


def test_webdav4_other_key_sees_nothing(server: RunningServer, key: str, w4) -> None:
    from webdav4.client import Client, ResourceNotFound

    w4.upload_fileobj(io.BytesIO(b"A's secret\n"), "secret-a.txt")
    w4.mkdir("a-folder")
    _other_id, other = server.create_key()
    b = Client(server.url + "/", auth=(other, ""), retry=False, timeout=30)
    try:
        assert b.ls("", detail=False) == []
        assert not b.exists("secret-a.txt") and not b.exists("a-folder")
        with pytest.raises(ResourceNotFound):
            download(b, "secret-a.txt")
        with pytest.raises(ResourceNotFound):
            b.remove("secret-a.txt")
        b.upload_fileobj(io.BytesIO(b"B's own"), "secret-a.txt")
        assert download(b, "secret-a.txt") == b"B's own"
    finally:
        b.http.close()
    assert download(w4, "secret-a.txt") == b"A's secret\n"
    assert sorted(w4.ls("", detail=False)) == ["a-folder", "secret-a.txt"]

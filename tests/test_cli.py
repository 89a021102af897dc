"""The key management CLI and key authentication, end to end against the running server."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from tests.client import LOCK_BODY
from tests.server import ROOT, RunningServer, ServerFactory, collection_dir

KEY_RE = re.compile(r"^uss_[A-Za-z0-9_-]{43,}$")
#: Anything that looks like a key, anywhere in a text.
ANY_KEY = re.compile(r"uss_[A-Za-z0-9_-]{20,}")
CHALLENGE = re.compile(r'^Basic realm="uss_dav"(\s*,\s*charset="?utf-8"?)?$', re.IGNORECASE)


# --- helpers -------------------------------------------------------------------


def run_cli(server: RunningServer, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m uss_dav ARGS` on the server's data directory, whatever its exit status."""
    return subprocess.run(
        [sys.executable, "-m", "uss_dav", "--config", str(server.config), "--data-dir", str(server.data_dir), *args],
        cwd=ROOT, env=server.env, capture_output=True, text=True, timeout=60,
    )


def parse_id_key(out: str) -> tuple[str, str]:
    id_match = re.search(r"^id: (\S+)$", out, re.MULTILINE)
    key_match = re.search(r"^key: (\S+)$", out, re.MULTILINE)
    assert id_match and key_match, f"no id/key lines in {out!r}"
    return id_match.group(1), key_match.group(1)


def sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def as_key(key: str) -> dict[str, str]:
    return {"Authorization": basic(key, "")}


def put(server: RunningServer, key: str, rel: str, data: bytes) -> None:
    r = requests.put(f"{server.url}/{rel}", data=data, headers=as_key(key), timeout=30)
    assert r.status_code in (200, 201, 204), f"PUT /{rel}: {r.status_code} {r.text[:300]}"


def get(server: RunningServer, key: str, rel: str) -> requests.Response:
    return requests.get(f"{server.url}/{rel}", headers=as_key(key), timeout=30)


def assert_401(r: requests.Response) -> None:
    assert r.status_code == 401, f"{r.request.method} {r.request.url}: {r.status_code} {r.text[:300]}"
    challenge = r.headers.get("WWW-Authenticate", "")
    assert CHALLENGE.match(challenge), f"WWW-Authenticate: {challenge!r}"


def list_rows(server: RunningServer) -> tuple[str, dict[str, list[str]]]:
    """`keys list` output and its rows by id (id, label, created, files, bytes; label may be empty).

    The scope and expires columns are checked by the scope tests and left out here.
    """
    out = server.cli("keys", "list")
    lines = out.splitlines()
    assert re.match(r"^id\s+label\s+created\s+scope\s+expires\s+files\s+bytes\s*$", lines[0]), lines[0]
    rows = {}
    for line in lines[1:]:
        fields = line.split()
        # id, [label words...], created, scope, expires, files, bytes
        rows[fields[0]] = [fields[0], " ".join(fields[1:-5]), fields[-5], *fields[-2:]]
    return out, rows


def files_under(root: Path) -> Iterator[Path]:
    return (p for p in root.rglob("*") if p.is_file())


#: Every key any test here made, for the log check at the end.
SEEN_KEYS: list[str] = []


@pytest.fixture
def made(server: RunningServer) -> Iterator[list[str]]:
    keys: list[str] = []
    yield keys
    SEEN_KEYS.extend(keys)


def create(server: RunningServer, made: list[str], *options: str) -> tuple[str, str]:
    key_id, key = server.create_key(*options)
    made.append(key)
    return key_id, key


# --- keys create ---------------------------------------------------------------


def test_create_prints_a_key_that_works_at_once_and_is_stored_only_hashed(
    server: RunningServer, made: list[str]
) -> None:
    label = "create-test"
    out = server.cli("keys", "create", "--label", label)
    key_id, key = parse_id_key(out)
    made.append(key)
    assert KEY_RE.match(key), key
    assert len(key) >= 4 + 43
    assert re.match(r"^[A-Za-z0-9_-]+$", key_id)

    put(server, key, "first.bin", b"\x00\x01 first bytes")
    r = get(server, key, "first.bin")
    assert r.status_code == 200 and r.content == b"\x00\x01 first bytes"

    record_path = server.data_dir / "keys" / f"{sha256(key)}.json"
    assert record_path.is_file(), sorted(p.name for p in (server.data_dir / "keys").iterdir())
    record = json.loads(record_path.read_text())
    assert record["id"] == key_id and record["label"] == label
    leaks = [str(p) for p in files_under(server.data_dir) if key.encode() in p.read_bytes()]
    assert leaks == [], f"the key is stored in {leaks}"
    assert not [p for p in server.data_dir.rglob("*") if key in p.name]

    other_id, other_key = create(server, made)
    assert other_id != key_id and other_key != key


def test_generate_alias_creates_a_working_key(server: RunningServer, made: list[str]) -> None:
    key_id, key = parse_id_key(server.cli("keys", "generate", "--label", "via-generate"))
    made.append(key)
    assert KEY_RE.match(key)
    put(server, key, "g.txt", b"generated")
    assert get(server, key, "g.txt").content == b"generated"
    assert list_rows(server)[1][key_id][1] == "via-generate"


# --- keys list -----------------------------------------------------------------


def test_list_shows_id_label_created_files_bytes_and_never_a_key(server: RunningServer, made: list[str]) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    key_id, key = create(server, made, "--label", "list-test")
    empty_id, _empty_key = create(server, made, "--label", "list-empty")
    put(server, key, "one.bin", b"1" * 1234)
    r = requests.request("MKCOL", f"{server.url}/folder", headers=as_key(key), timeout=30)
    assert r.status_code == 201, r.text
    put(server, key, "folder/two.bin", b"2" * 56789)

    out, rows = list_rows(server)
    assert key_id in rows and empty_id in rows, out
    _id, label, created, files, size = rows[key_id]
    assert label == "list-test"
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", created), created
    when = datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert before <= when <= datetime.now(UTC), created
    assert (int(files), int(size)) == (2, 1234 + 56789), out
    assert rows[empty_id][1:] == ["list-empty", rows[empty_id][2], "0", "0"], out
    assert not ANY_KEY.search(out), out
    for k in made:
        assert k not in out and sha256(k) not in out


# --- keys rotate ---------------------------------------------------------------


def test_rotate_keeps_the_collection_and_refuses_the_old_key_at_once(server: RunningServer, made: list[str]) -> None:
    assert server.proc is not None
    pid = server.proc.pid
    key_id, old = create(server, made, "--label", "rotate-test")
    put(server, old, "kept.txt", b"kept across rotation")

    new_id, new = parse_id_key(server.cli("keys", "rotate", key_id))
    made.append(new)
    assert new_id == key_id and new != old and KEY_RE.match(new)
    assert_401(get(server, old, "kept.txt"))
    r = get(server, new, "kept.txt")
    assert r.status_code == 200 and r.content == b"kept across rotation"
    listing = requests.request("PROPFIND", server.url + "/", headers={**as_key(new), "Depth": "1"}, timeout=30)
    assert listing.status_code == 207 and "kept.txt" in listing.text
    assert not (server.data_dir / "keys" / f"{sha256(old)}.json").exists()
    assert (server.data_dir / "keys" / f"{sha256(new)}.json").exists()

    newer_id, newer = parse_id_key(server.cli("keys", "regenerate", key_id))
    made.append(newer)
    assert newer_id == key_id and newer not in (old, new)
    assert_401(get(server, new, "kept.txt"))
    assert_401(get(server, old, "kept.txt"))
    assert get(server, newer, "kept.txt").content == b"kept across rotation"
    put(server, newer, "after.txt", b"written with the third key")
    assert list_rows(server)[1][key_id][3:] == ["2", str(len(b"kept across rotation") + 26)]

    assert server.proc.poll() is None and server.proc.pid == pid, "the server was restarted"


# --- keys revoke ---------------------------------------------------------------


def test_revoke_refuses_the_key_at_once_and_keeps_the_files(server: RunningServer, made: list[str]) -> None:
    key_id, key = create(server, made, "--label", "revoke-test")
    put(server, key, "doc.txt", b"still here")
    done = run_cli(server, "keys", "revoke", key_id)
    assert done.returncode == 0, done.stderr
    assert key_id in done.stdout and not ANY_KEY.search(done.stdout)
    for method in ("GET", "PROPFIND", "PUT", "DELETE"):
        assert_401(requests.request(method, f"{server.url}/doc.txt", headers=as_key(key), timeout=30))
    assert key_id not in list_rows(server)[1]
    assert (collection_dir(server, key_id) / "doc.txt").read_bytes() == b"still here"
    again = run_cli(server, "keys", "revoke", key_id)
    assert again.returncode != 0 and key_id in again.stderr


def test_revoke_purge_deletes_the_collection(server: RunningServer, made: list[str]) -> None:
    key_id, key = create(server, made, "--label", "purge-test")
    put(server, key, "doomed.txt", b"going away")
    assert collection_dir(server, key_id).is_dir()
    done = run_cli(server, "keys", "revoke", "--purge", key_id)
    assert done.returncode == 0, done.stderr
    assert_401(get(server, key, "doomed.txt"))
    assert not collection_dir(server, key_id).exists()
    assert not (server.data_dir / "meta" / key_id).exists()
    assert key_id not in list_rows(server)[1]


def test_purge_after_rotation_deletes_the_shared_collection(server: RunningServer, made: list[str]) -> None:
    key_id, key = create(server, made)
    put(server, key, "x.txt", b"x")
    _id, new = parse_id_key(server.cli("keys", "rotate", key_id))
    made.append(new)
    assert run_cli(server, "keys", "revoke", "--purge", key_id).returncode == 0
    assert_401(get(server, new, "x.txt"))
    assert not collection_dir(server, key_id).exists()


@pytest.mark.parametrize("command", [["rotate"], ["regenerate"], ["revoke"], ["revoke", "--purge"]])
def test_unknown_id_is_an_error_with_a_message(server: RunningServer, command: list[str]) -> None:
    before = sorted(p.name for p in (server.data_dir / "keys").iterdir())
    done = run_cli(server, "keys", *command, "no-such-id")
    assert done.returncode != 0
    assert "no-such-id" in done.stderr, done.stderr
    assert not ANY_KEY.search(done.stdout + done.stderr)
    assert sorted(p.name for p in (server.data_dir / "keys").iterdir()) == before


# --- authentication ------------------------------------------------------------


BAD_HEADERS = {
    "no credentials": None,
    "wrong bearer": "Bearer uss_" + "A" * 43,
    "wrong basic password": basic("anyone", "uss_" + "B" * 43),
    "basic !!!": "Basic !!!",
    "basic without colon": "Basic " + base64.b64encode(b"nocolon").decode(),
    "basic empty": "Basic ",
    "basic only colon": "Basic " + base64.b64encode(b":").decode(),
    "basic not utf-8": "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(),
    "bearer empty": "Bearer ",
    "unknown scheme": "Digest username=\"x\", realm=\"uss_dav\"",
    "scheme only": "Basic",
    "huge bearer": "Bearer " + "A" * 30_000,
    "huge basic": basic("u", "x" * 30_000),
    "huge garbage basic": "Basic " + "!" * 40_000,
}


@pytest.mark.parametrize("name", list(BAD_HEADERS))
def test_bad_credentials_get_a_basic_challenge(server: RunningServer, key: str, name: str) -> None:
    header = BAD_HEADERS[name]
    headers = {"Authorization": header} if header is not None else {}
    for method, extra in (("GET", {}), ("PROPFIND", {"Depth": "1"}), ("PUT", {}), ("MKCOL", {}), ("DELETE", {})):
        r = requests.request(method, f"{server.url}/probe", headers={**headers, **extra},
                             data=b"body" if method == "PUT" else None, timeout=30)
        assert_401(r)
        assert len(r.content) < 1000, r.text[:300]  # the presented value is not echoed
        value = (header or "").partition(" ")[2]
        if len(value) >= 8:
            assert value[:50] not in r.text
    # Nothing was written on anyone's behalf.
    assert get(server, key, "probe").status_code == 404


def test_headers_over_the_configured_limit_are_refused_before_auth(server: RunningServer, key: str) -> None:
    for header in ("Bearer " + "A" * 200_000, "Basic " + "!" * 1_000_000):
        r = requests.put(f"{server.url}/huge", data=b"x", headers={"Authorization": header}, timeout=30)
        assert r.status_code in (413, 431), r.status_code
    r = requests.put(f"{server.url}/huge", data=b"x", headers={**as_key(key), "X-Big": "y" * 200_000}, timeout=30)
    assert r.status_code in (413, 431), r.status_code
    assert get(server, key, "huge").status_code == 404


def test_a_wrong_key_that_is_a_valid_key_plus_a_character_is_refused(server: RunningServer, key: str) -> None:
    assert_401(get(server, key + "x", ""))
    assert_401(get(server, key[:-1], ""))
    assert_401(requests.get(server.url + "/", headers={"Authorization": "Bearer " + key.upper()}, timeout=30))


def test_every_accepted_form_of_the_key(server: RunningServer, key: str) -> None:
    forms = {
        "bearer": {"Authorization": f"Bearer {key}"},
        "bearer lower-case scheme": {"Authorization": f"bearer {key}"},
        "basic password, any user": {"Authorization": basic("whoever", key)},
        "basic user, empty password": {"Authorization": basic(key, "")},
    }
    for i, (name, headers) in enumerate(forms.items()):
        r = requests.put(f"{server.url}/form{i}.txt", data=name.encode(), headers=headers, timeout=30)
        assert r.status_code in (200, 201, 204), f"{name}: PUT {r.status_code} {r.text[:200]}"
        r = requests.get(f"{server.url}/form{i}.txt", headers=headers, timeout=30)
        assert r.status_code == 200 and r.content == name.encode(), f"{name}: GET {r.status_code}"
    with requests.Session() as s:  # what `curl -u KEY:` and requests' auth tuple send
        s.auth = (key, "")
        assert s.get(f"{server.url}/form0.txt", timeout=30).content == b"bearer"


def test_the_key_never_appears_in_the_server_log(server: RunningServer, made: list[str]) -> None:
    key_id, key = create(server, made, "--label", "log-test")
    # The key as a Basic user name with a wrong password: WsgiDAV's own authenticator logs that name.
    requests.get(server.url + "/", headers={"Authorization": basic(key, "wrong")}, timeout=30)
    put(server, key, "logged.txt", b"x")
    requests.get(server.url + "/missing", headers=as_key(key), timeout=30)
    requests.request("MOVE", server.url + "/logged.txt", headers={**as_key(key), "Destination": "/../x"}, timeout=30)
    _id, new = parse_id_key(server.cli("keys", "rotate", key_id))
    made.append(new)
    requests.get(server.url + "/", headers={"Authorization": f"Bearer {key}"}, timeout=30)  # the old key
    time.sleep(0.2)  # let the log catch up
    log = server.log()
    for k in [*SEEN_KEYS, *made]:
        assert k not in log
        assert base64.b64encode(f"{k}:".encode()).decode()[:40] not in log
        assert sha256(k) not in log


def test_the_key_is_not_logged_at_debug_level(make_server: ServerFactory) -> None:
    srv = make_server(extra_env={"USS_LOG_LEVEL": "debug"})
    _id, key = srv.create_key()
    h = as_key(key)
    requests.request("PROPFIND", srv.url + "/", headers={**h, "Depth": "1"}, timeout=30)
    requests.put(srv.url + "/a.txt", data=b"a", headers={"Authorization": f"Bearer {key}"}, timeout=30)
    requests.get(srv.url + "/nothing", headers=h, timeout=30)
    requests.get(srv.url + "/", headers={"Authorization": basic(key, "wrong")}, timeout=30)
    lock = requests.request(
        "LOCK", srv.url + "/a.txt", headers={**h, "Timeout": "Second-60"}, timeout=30,
        data=LOCK_BODY,
    )
    assert lock.status_code == 200, lock.text
    srv.stop()  # the whole log is written
    log = srv.log()
    assert "serving" in log  # the log is really there
    assert key not in log
    assert base64.b64encode(f"{key}:".encode()).decode()[:40] not in log


def test_common_options_work_after_the_command_too(tmp_path: Path) -> None:
    """`keys list --data-dir D` (the README's "every command takes --data-dir") as well as `--data-dir D keys list`."""
    def run(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "uss_dav", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    made = run("keys", "create", "--label", "after", "--data-dir", str(tmp_path / "data"))
    key_id = re.search(r"^id: (\S+)$", made, re.MULTILINE).group(1)
    assert key_id in run("keys", "list", "--data-dir", str(tmp_path / "data"))
    assert key_id in run("--data-dir", str(tmp_path / "data"), "keys", "list")

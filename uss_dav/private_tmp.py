"""The server's own temporary folder, which a kill -9 cannot leave behind for good.

A running server keeps files in the system's temporary folder: the counts
its serving processes write for /metrics (uss_dav.metrics.multiprocess_dir)
and multiprocessing's pymp-* folder, which each codec pool makes for its
fork server's socket. Each was removed at a clean stop; a server killed with
SIGKILL (by hand, by the OOM killer) left them, and nothing ever came back
for them.

So the server makes one folder, `uss_dav-tmp-*`, and points the temporary
folder of itself and of every process it starts there (TMPDIR, and
tempfile's default). For as long as it runs it holds an flock on a file in
that folder; forked serving processes share the lock, so it is free only
once the last of them has ended. A clean stop removes the folder. Each
start removes the folders of this user whose lock no one holds: those of
servers that were killed. An flock, not a pid in the name, says who still
runs: it holds across PID namespaces and never mistakes a reused pid.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

PREFIX = "uss_dav-tmp-"
#: The file whose flock says the folder's server still runs.
HELD = ".held"
#: A starting server makes its folder under this name, locks it, then gives it its name: a
#: sweep never sees a server's folder unlocked. A folder left under it is a start killed at
#: that moment once it is this many seconds old.
STARTING = "." + PREFIX
STARTING_SECONDS = 60.0
#: The longest AF_UNIX socket path (sun_path less its NUL). multiprocessing's fork server listens on
#: <temporary folder>/pymp-XXXXXXXX/listener-XXXXXXXX (Python 3.11 does not check the length).
SOCKET_PATH_MAX = 107
_UNDER_OURS = len(f"/{PREFIX}XXXXXXXX/pymp-XXXXXXXX/listener-XXXXXXXX")


@contextlib.contextmanager
def private_tmp() -> Iterator[Path]:
    """This server's temporary folder, set as the default of this process and the processes it starts.

    Folders of killed servers are removed first. The default is restored,
    and the folder removed, when the block ends.
    """
    parent = base_folder()
    if swept := sweep_abandoned(parent):
        log.info("removed %d temporary folder(s) of uss_dav servers that were killed", swept)
    starting = tempfile.mkdtemp(prefix=STARTING, dir=parent)
    fd = os.open(f"{starting}/{HELD}", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    made = f"{parent}/{os.path.basename(starting)[1:]}"
    os.rename(starting, made)
    before_env, before_default = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"] = tempfile.tempdir = made
    try:
        yield Path(made)
    finally:
        tempfile.tempdir = before_default
        if before_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = before_env
        shutil.rmtree(made, ignore_errors=True)
        os.close(fd)


def base_folder() -> str:
    """Where the server's folder goes: the system's temporary folder, unless its path is so long
    that the codec pool's fork server could not listen under it; then /tmp (as Python 3.12 does)."""
    parent = tempfile.gettempdir()
    if len(os.fsencode(parent)) + _UNDER_OURS > SOCKET_PATH_MAX:
        log.warning("the temporary folder %s is too long a path for a socket under it; using /tmp", parent)
        return "/tmp"
    return parent


def sweep_abandoned(parent: str) -> int:
    """Remove the `uss_dav-tmp-*` folders in `parent` that belong to this user and to no running server; how many."""
    removed = 0
    try:
        names = [n for n in os.listdir(parent) if n.startswith((PREFIX, STARTING))]
    except OSError:
        return 0
    for name in names:
        folder = f"{parent}/{name}"
        try:
            st = os.lstat(folder)
        except FileNotFoundError:
            continue
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
            continue  # a symlink, or another user's
        if name.startswith(STARTING) and time.time() - st.st_mtime < STARTING_SECONDS:
            continue  # a server may be locking it right now
        if _abandoned(folder):
            shutil.rmtree(folder, ignore_errors=True)
            if not os.path.lexists(folder):
                removed += 1
    return removed


def _abandoned(folder: str) -> bool:
    """Whether no process holds the folder's lock (a folder without one never had a server)."""
    try:
        fd = os.open(f"{folder}/{HELD}", os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # its server is gone, and no server takes over a folder it did not make
    return True

"""Processes that end with the process they serve, even when it is killed with SIGKILL.

A serving process forked by the Supervisor asks the kernel for SIGKILL when
its parent dies (PR_SET_PDEATHSIG). Without that, a `kill -9` of the parent
left its serving processes listening: a process manager watching one pid
then started a second generation beside the first, on the same port.

The codec processes of the image hook are forked by multiprocessing's
forkserver, not by the serving process, so a death signal there would
follow the forkserver (which itself lives as long as any codec process).
They watch the serving process instead, through a pidfd the forkserver opens
when it starts (see uss_dav.codec_watch).
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import select
import signal
import threading

#: What the forkserver of a serving process imports when it starts: the entry
#: script (multiprocessing's default) and the codec processes' watch.
FORKSERVER_PRELOAD = ["__main__", "uss_dav.codec_watch"]
#: Environment variable a serving process names itself in, for the forkserver it starts.
SERVING_PID_ENV = "USS_SERVING_PID"

#: prctl(2) option: the signal this process gets when its parent (thread) ends.
PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """In a child just forked from `parent_pid`: be killed when that parent ends.

    The parent may have died between fork and prctl, in which case the child
    was already handed to another parent and no signal will come: it ends now.
    The death signal follows the parent *thread* that forked, so call this
    only in children forked from a thread that lives as long as the parent
    (the Supervisor forks from its main thread).
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(PR_SET_PDEATHSIG): {os.strerror(errno)}")
    if os.getppid() != parent_pid:
        os._exit(1)


def watch(pidfd: int) -> None:
    """End this process as soon as the process behind `pidfd` has ended (a daemon thread waits for it)."""

    def wait_then_die() -> None:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        while not poller.poll():
            pass
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=wait_then_die, name="lifeline", daemon=True).start()


def open_serving_pidfd() -> int | None:
    """In a forkserver being started: a pidfd of the serving process that started it.

    The serving process names itself in SERVING_PID_ENV. If it is no longer
    this process's parent, it died while the forkserver was starting (its
    preload takes a moment): the forkserver has no one to serve and ends at
    once, rather than watch whatever process inherited it (pid 1, which
    never ends, so its codec processes would have lived for good).
    Returns None where pidfds are missing (no watch).
    """
    parent = os.getppid()
    expected = os.environ.get(SERVING_PID_ENV)
    if expected is not None and int(expected) != parent:
        os._exit(0)
    try:
        fd = os.pidfd_open(parent)
    except (AttributeError, OSError):  # Python < 3.9 or Linux < 5.3: no watch
        return None
    if os.getppid() != parent:  # gone between the two looks: the pidfd may name a reused pid
        os._exit(0)
    return fd


def codec_processes_watch_me() -> None:
    """In a serving process, before its codec pool starts: codec processes end when this process ends."""
    os.environ[SERVING_PID_ENV] = str(os.getpid())  # inherited by the forkserver it starts
    if "forkserver" in multiprocessing.get_all_start_methods():
        multiprocessing.get_context("forkserver").set_forkserver_preload(FORKSERVER_PRELOAD)

"""Imported by the codec pool's forkserver only (multiprocessing preload): its codec processes watch the serving process.

Importing this module has an effect, on purpose: the forkserver imports the
modules it is told to preload once, when the serving process starts it, and
this is the only code uss_dav runs there. It opens a pidfd of its parent
(the serving process; a forkserver whose serving process died while it
started ends instead) and has every process it forks from then on (each
codec process) watch that pidfd and end with the serving process. Without
it, a serving process killed with SIGKILL left its codec processes (and with
them the forkserver, which waits for them) running for good.
"""

from __future__ import annotations

import functools
import os

from uss_dav.lifeline import open_serving_pidfd, watch

_serving = open_serving_pidfd()
if _serving is not None:
    os.register_at_fork(after_in_child=functools.partial(watch, _serving))

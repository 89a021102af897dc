"""The one-host CephFS of bench/harness/cephfs.py, as the tests need it: skipped where it cannot run
(with the reason), a failure under CI (which installs it)."""

from __future__ import annotations

from bench.harness.cephfs import CephFS, missing
from tests.client import unavailable

__all__ = ["CephFS", "require_cephfs"]


def require_cephfs() -> None:
    """Skip the calling test with the reason when no cluster can run here; under CI, fail instead."""
    reason = missing()
    if reason is not None:
        unavailable(f"CephFS tests cannot run: {reason}")

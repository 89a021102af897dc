"""The litmus WebDAV compliance suite: run it against a URL and judge its output (shared by the tests that run it)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

SUITES = ("basic", "copymove", "props", "locks", "http")
SUMMARY = re.compile(r"<- summary for `(\w+)': of (\d+) tests run: (\d+) passed, (\d+) failed")


def run_litmus(url: str, key: str, cwd: str) -> str:
    if shutil.which("litmus") is None:
        if os.environ.get("CI"):
            pytest.fail("litmus is not installed (CI must install the Debian package)")
        pytest.skip("litmus is not installed (apt-get install litmus)")
    done = subprocess.run(
        ["litmus", "-k", url, key, ""], capture_output=True, text=True, timeout=600, cwd=cwd,
        env={**os.environ, "TESTS": " ".join(SUITES)},
    )
    return done.stdout + done.stderr


def assert_litmus_clean(output: str) -> None:
    results = {m.group(1): m.groups()[1:] for m in SUMMARY.finditer(output)}
    assert set(results) == set(SUITES), f"suites missing from litmus output:\n{output[-3000:]}"
    failed = {suite: r for suite, r in results.items() if r[2] != "0" or r[0] != r[1]}
    assert not failed, f"litmus failures {failed}:\n{output[-5000:]}"
    warnings = [line for line in output.splitlines() if "WARNING" in line]
    assert not warnings, "litmus warnings:\n" + "\n".join(warnings)

"""The plain-text refusal every layer outside WsgiDAV's own answers with: a status and one line."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any


def text_response(
    start_response: Callable[..., Any], status: str, reason: str, headers: Iterable[tuple[str, str]] = ()
) -> list[bytes]:
    """The status with a one-line text/plain reason."""
    body = f"{reason}\n".encode()
    start_response(
        status,
        [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))), *headers],
    )
    return [body]

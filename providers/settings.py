"""The one typed settings object WsgiDAV carries to uss_dav's provider and middlewares.

WsgiDAV builds its middlewares from a config dict with a fixed constructor
signature, so uss_dav's objects have to ride in that dict. They ride as one
typed DavSettings under one key, read back through `dav_settings`, never
as loose callables looked up by string.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from uss_dav.services import Services

#: The key of WsgiDAV's config dict that holds the DavSettings.
CONFIG_KEY = "uss_dav"


@dataclass(frozen=True)
class DavSettings:
    """What the WebDAV face needs beyond WsgiDAV's own options: the services (and through them the Config)."""

    services: Services


def dav_settings(config: dict[str, Any]) -> DavSettings:
    """The DavSettings in a WsgiDAV config dict; a TypeError if the assembly forgot them."""
    settings = config.get(CONFIG_KEY)
    if not isinstance(settings, DavSettings):
        raise TypeError(f"WsgiDAV config has no DavSettings under {CONFIG_KEY!r}")
    return settings

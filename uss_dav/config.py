"""The one typed configuration object, built once at start from config.yaml.

Precedence: command line > environment (USS_*) > file > defaults. Every other
module receives the values it needs as arguments; nothing reads the file again.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

COMPRESSION_MODES = ("lossless", "exact", "off", "lossy")

#: Environment variables that override the file, and the field each sets.
ENV_VARS = {
    "USS_HOST": "host",
    "USS_PORT": "port",
    "USS_DATA_DIR": "data_dir",
    "USS_LOG_LEVEL": "log_level",
    "USS_ADMIN_TOKEN": "admin_token",
    "USS_WORKERS": "workers",
}


class ConfigError(ValueError):
    """A configuration value is missing, of the wrong type or out of range."""


@dataclass(frozen=True)
class CompressionConfig:
    """How the write hook treats images (see hooks/)."""

    #: The mode new keys are made with (each key records it); see README "Compression".
    mode: str = "exact"
    lossy_quality: int = 85
    max_pixels: int = 40_000_000
    timeout: float = 30.0
    workers: int = 2
    png_level: int = 2


@dataclass(frozen=True)
class TlsConfig:
    """HTTPS (Python's ssl module, in the engine's request threads); both empty: plain HTTP."""

    cert: str = ""
    key: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.cert)


@dataclass(frozen=True)
class Config:
    """Everything the server and the CLI need, validated."""

    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path("data")
    realm: str = "uss_dav"
    #: Bytes per read/write when streaming bodies to and from disk.
    block_size: int = 1 << 20
    #: Seconds a connection may stay silent (10 would cut slow uploads).
    socket_timeout: float = 60.0
    threads: int = 16
    #: Largest request line plus headers, in bytes (414 for a longer request line, 431 past it).
    max_header_bytes: int = 65536
    images_only: bool = False
    log_level: str = "info"
    #: Bearer token for the key-management REST endpoints; empty: loopback clients only.
    admin_token: str = ""
    #: Origins allowed to call the server from a browser (CORS); empty: CORS off.
    cors_origins: tuple[str, ...] = ()
    #: macOS AppleDouble (._*) and .DS_Store files: "store" them as they come, or "discard" them.
    apple_files: str = "store"
    #: Refuse a new name that differs from an existing one only by case (Windows cannot hold both).
    refuse_case_collisions: bool = False
    #: Largest upload in bytes (413); 0: no limit.
    max_upload_bytes: int = 10 * 1024**3
    #: Largest XML request body (PROPFIND, PROPPATCH, LOCK) in bytes (413).
    max_xml_bytes: int = 1024**2
    #: Deepest XML nesting accepted in a request body (400).
    max_xml_depth: int = 64
    #: Answer PROPFIND with Depth: infinity (walks a whole collection); off: 403.
    allow_propfind_infinity: bool = False
    #: Quota of a key whose record sets none: bytes and files; 0: unlimited.
    quota_bytes: int = 0
    quota_files: int = 0
    #: Serving processes sharing the port; 0: one per CPU core this process may use.
    workers: int = 0
    #: Seconds between sweeps of staging/ by each serving process, besides the one at start
    #: (a dead node's locks on a shared file system are released late).
    staging_sweep_interval: float = 300.0
    #: Failed authentications per address within the window before answering 429; 0: off.
    auth_failure_limit: int = 20
    auth_failure_window: float = 60.0
    compression: CompressionConfig = field(default_factory=CompressionConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)

    @property
    def processes(self) -> int:
        """How many serving processes `workers` asks for on this machine."""
        return self.workers or len(os.sched_getaffinity(0))

    def validate(self) -> Config:
        """Return self, or raise ConfigError naming the first bad value."""
        checks = [
            (0 < self.port < 65536, f"port must be 1-65535, not {self.port}"),
            (self.block_size >= 4096, "block_size must be at least 4096"),
            (self.socket_timeout > 0, "socket_timeout must be positive"),
            (self.threads >= 1, "threads must be at least 1"),
            (self.max_header_bytes >= 4096, "max_header_bytes must be at least 4096"),
            (self.log_level in ("debug", "info", "warning", "error"),
             f"log_level must be debug, info, warning or error, not {self.log_level!r}"),
            (self.apple_files in ("store", "discard"), "apple_files must be store or discard"),
            (self.max_upload_bytes >= 0, "max_upload_bytes must be 0 (no limit) or positive"),
            (self.max_xml_bytes >= 1024, "max_xml_bytes must be at least 1024"),
            (8 <= self.max_xml_depth <= 500, "max_xml_depth must be 8-500"),
            (self.quota_bytes >= 0 and self.quota_files >= 0, "quotas must be 0 (unlimited) or positive"),
            (self.auth_failure_limit >= 0, "auth_failure_limit must be 0 (off) or positive"),
            (0 <= self.workers <= 64, "workers must be 0 (one per core) to 64"),
            (self.staging_sweep_interval > 0, "staging_sweep_interval must be positive"),
            (self.auth_failure_window > 0, "auth_failure_window must be positive"),
            (bool(self.tls.cert) == bool(self.tls.key), "tls needs both cert and key"),
            (not self.tls.cert or os.path.isfile(self.tls.cert), f"tls.cert {self.tls.cert!r} is not a file"),
            (not self.tls.key or os.path.isfile(self.tls.key), f"tls.key {self.tls.key!r} is not a file"),
            (self.compression.mode in COMPRESSION_MODES,
             f"compression.mode must be one of {', '.join(COMPRESSION_MODES)}"),
            (1 <= self.compression.lossy_quality <= 100, "compression.lossy_quality must be 1-100"),
            (self.compression.max_pixels > 0, "compression.max_pixels must be positive"),
            (self.compression.timeout > 0, "compression.timeout must be positive"),
            (self.compression.workers >= 1, "compression.workers must be at least 1"),
            (0 <= self.compression.png_level <= 6, "compression.png_level must be 0-6"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"invalid config: {message}")
        return self


def _coerce(cls: type, values: Mapping[str, Any], where: str) -> Any:
    """Build dataclass `cls` from a mapping, converting scalars to the declared types."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        if name not in known:
            raise ConfigError(f"invalid config: unknown key {where}{name!r}")
        default = known[name].default
        if default is dataclasses.MISSING:
            default = known[name].default_factory()  # type: ignore[misc]
        try:
            if dataclasses.is_dataclass(default):
                if not isinstance(value, Mapping):
                    raise ConfigError(f"invalid config: {where}{name} must be a mapping")
                kwargs[name] = _coerce(type(default), value, f"{where}{name}.")
            elif isinstance(default, tuple):
                if isinstance(value, str):
                    value = [v for v in value.replace(",", " ").split() if v]
                kwargs[name] = tuple(str(v) for v in value)
            elif isinstance(default, bool):
                if not isinstance(value, bool):
                    value = str(value).lower() in ("1", "true", "yes", "on")
                kwargs[name] = value
            else:
                kwargs[name] = type(default)(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"invalid config: {where}{name}: {exc}") from None
    return cls(**kwargs)


def load_config(
    path: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Read `path` (YAML), apply the environment, then `overrides`, and validate.

    A relative data_dir in the file is taken from the file's directory, so the
    server finds the same data whatever directory it was started from.
    """
    values: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, encoding="utf-8") as fh:
                loaded = yaml.safe_load(fh) or {}
        except OSError as exc:
            raise ConfigError(f"invalid config: cannot read {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"invalid config: {path} is not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"invalid config: {path} must hold a mapping")
        values.update(loaded)
        here = Path(path).resolve().parent
        if "data_dir" in values:
            values["data_dir"] = here / str(values["data_dir"])
        tls = values.get("tls")
        if isinstance(tls, dict):
            values["tls"] = {k: str(here / v) if k in ("cert", "key") and v else v for k, v in tls.items()}
    env = os.environ if environ is None else environ
    for var, name in ENV_VARS.items():
        if env.get(var):
            values[name] = env[var]
    for name, value in (overrides or {}).items():
        if value is not None:
            values[name] = value
    config = _coerce(Config, values, "")
    return dataclasses.replace(config, data_dir=Path(config.data_dir).resolve()).validate()

"""The management CLI: keys create / rotate / revoke / list, import of a seed store, recompress.

`generate` and `regenerate`, the seed application's management commands,
are kept as aliases of `create` and `rotate`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from uss_dav.config import COMPRESSION_MODES, ConfigError, load_config
from uss_dav.keys import SCOPES, UnknownKey, parse_expiry
from uss_dav.services import open_services


def expiry(text: str) -> str:
    try:
        return parse_expiry(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


DEFAULT_CONFIG = str(Path(__file__).resolve().parent.parent / "config.yaml")


def add_common_options(parser: argparse.ArgumentParser, default: object = None) -> None:
    """--config and --data-dir: before the command, or (default=SUPPRESS) after it."""
    parser.add_argument("--config", default=DEFAULT_CONFIG if default is None else default, help="YAML configuration file")
    parser.add_argument("--data-dir", default=default, help="data directory (overrides the file and USS_DATA_DIR)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m uss_dav", description=__doc__)
    add_common_options(parser)
    groups = parser.add_subparsers(dest="group", required=True)
    keys = groups.add_parser("keys", help="manage API keys").add_subparsers(dest="command", required=True)
    for name in ("create", "generate"):
        create = keys.add_parser(name, help="create a key and its collection; prints the key once")
        create.add_argument("--label", default="")
        create.add_argument("--compression", choices=COMPRESSION_MODES, help="override the configured mode")
        create.add_argument("--scope", choices=SCOPES, default="rw", help="rw (default), ro, or upload (new files only)")
        create.add_argument("--expires", type=expiry, help="lifetime such as 30d, 12h, 90m, or a UTC time 2027-01-31T00:00:00Z")
    for name in ("rotate", "regenerate"):
        keys.add_parser(name, help="new key for the same collection; the old key stops working").add_argument("id")
    revoke = keys.add_parser("revoke", help="refuse a key from now on")
    revoke.add_argument("id")
    revoke.add_argument("--purge", action="store_true", help="also delete the collection")
    keys.add_parser("list", help="id, label, created, files and bytes of every key")
    serve = groups.add_parser("serve", help="serve WebDAV, REST and the gallery (what run_server.py does)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int, help="serving processes sharing the port (0: one per CPU core)")
    imp = groups.add_parser("import", help="import a store in the seed application's layout (PATH/files/<key>/...)")
    imp.add_argument("path", type=Path, help="folder holding files/key_list.txt")
    imp.add_argument("--as-is", action="store_true", help="store files as they are (compression off)")
    rec = groups.add_parser("recompress", help="re-encode stored files as their key's mode (or --mode) stores them now")
    rec.add_argument("--key", help="only this key's collection (its id)")
    rec.add_argument("--mode", choices=COMPRESSION_MODES, help="this mode instead of each key's own")
    rec.add_argument("--dry-run", action="store_true", help="say what would change and the bytes it would save; change nothing")
    # --config and --data-dir also after the command (`keys list --data-dir D`, and run_server.py's order).
    for command in (*keys.choices.values(), serve, imp, rec):
        add_common_options(command, default=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    overrides = {"data_dir": args.data_dir}
    if args.group == "serve":
        overrides |= {"host": args.host, "port": args.port, "workers": args.workers}
    try:
        config = load_config(args.config, overrides)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.group == "serve":
        from uss_dav.server import serve

        serve(config)
        return 0
    if args.group == "import":
        from uss_dav.importer import run

        return run(config, args.path, as_is=args.as_is)
    if args.group == "recompress":
        from uss_dav import recompress

        return recompress.run(config, args.key, args.mode, dry_run=args.dry_run)
    services = open_services(config, with_hook=False)
    keys, store = services.keys, services.store
    try:
        if args.command in ("create", "generate"):
            record, key = services.create_key(args.label, args.compression, scope=args.scope, expires=args.expires)
            print(f"id: {record.id}\nkey: {key}")
        elif args.command in ("rotate", "regenerate"):
            record, key = keys.rotate(args.id)
            print(f"id: {record.id}\nkey: {key}")
        elif args.command == "revoke":
            record = services.revoke_key(args.id, purge=args.purge)
            print(f"revoked {record.id}" + (" and deleted its collection" if args.purge else ""))
        else:
            print(f"{'id':<12}  {'label':<20}  {'created':<20}  {'scope':<6}  {'expires':<20}  {'files':>7}  {'bytes':>12}")
            for record in keys.list():
                files, size = store.usage(record.collection)
                label = record.label[:20].replace("\n", " ")
                expires = record.expires or "-"
                print(
                    f"{record.id:<12}  {label:<20}  {record.created:<20}  {record.scope:<6}  "
                    f"{expires:<20}  {files:>7}  {size:>12}"
                )
    except UnknownKey as exc:
        print(f"no key with id {exc}", file=sys.stderr)
        return 1
    return 0

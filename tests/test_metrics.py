"""Operations: /metrics (Prometheus text, summed over serving processes), its access rule, request ids."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from werkzeug.test import Client

from tests.server import RunningServer, write_config
from uss_dav.app import build_app
from uss_dav.config import load_config
from uss_dav.metrics import Metrics
from uss_dav.services import open_services
from uss_dav.tally import FLUSH_INTERVAL, Tally

CORPUS = Path(__file__).resolve().parent / "data" / "corpus"
PNG = (CORPUS / "rgba.png").read_bytes()


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory):
    """Two serving processes; the server itself sets up the multi-process metrics directory."""
    root = tmp_path_factory.mktemp("uss-metrics")
    config = write_config(root / "config.yaml", workers=2, auth_failure_limit=3, auth_failure_window=60)
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    srv = RunningServer(root / "data", config=config)
    srv.env = {**env, "PYTHONUNBUFFERED": "1"}
    srv.start()
    yield srv
    srv.stop()



def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus text exposition (0 if absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.fullmatch(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)", line)
        if m and m.group(1) == name and ",".join(sorted((m.group(2) or "").split(","))) == want:
            return float(m.group(3))
    return 0.0


def scrape_once_counted(url: str, before: str, expected: list[tuple[str, str, int]]) -> str:
    """/metrics once it shows at least `expected` (method, status, count) requests more than `before`.

    A request is counted once its response is closed, just after the client
    has it, and another serving process's counts reach a scrape within
    FLUSH_INTERVAL (uss_dav.tally): the wait is bounded by a few of those.
    """
    deadline = time.monotonic() + 10 * FLUSH_INTERVAL
    while True:
        text = requests.get(url + "/metrics").text
        counted = [
            sample(text, "uss_requests_total", method=m, status=s) - sample(before, "uss_requests_total", method=m, status=s) >= n
            for m, s, n in expected
        ]
        if all(counted) or time.monotonic() > deadline:
            return text
        time.sleep(0.1)


def test_metrics_are_scraped_and_move_with_requests(two_workers: RunningServer) -> None:
    srv = two_workers
    _, key = srv.create_key()  # lossless: the PNG is recompressed
    time.sleep(2 * FLUSH_INTERVAL)  # the key's creation counted everywhere before the first scrape
    with requests.Session() as plain:
        before = plain.get(srv.url + "/metrics")
        assert before.status_code == 200
        assert before.headers["Content-Type"].startswith("text/plain; version=")
        assert "# TYPE uss_requests_total counter" in before.text
        with requests.Session() as dav:
            dav.auth = (key, "")
            assert dav.put(srv.url + "/a.png", data=PNG).status_code == 201
            assert dav.put(srv.url + "/b.bin", data=b"x" * 1000).status_code == 201
            for _ in range(4):  # several connections: both workers answer some
                assert requests.get(srv.url + "/b.bin", auth=(key, "")).content == b"x" * 1000
            stored = dav.get(srv.url + "/a.png").content
        assert requests.get(srv.url + "/b.bin", auth=("wrong", "")).status_code == 401
    after = scrape_once_counted(srv.url, before.text, [("PUT", "201", 2), ("GET", "200", 6), ("GET", "401", 1)])

    def moved(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before.text, name, **labels)

    assert moved("uss_requests_total", method="PUT", status="201") == 2
    assert moved("uss_requests_total", method="GET", status="200") >= 6  # 4 + 1 + the first scrape
    assert moved("uss_requests_total", method="GET", status="401") == 1
    assert moved("uss_request_duration_seconds_count", method="PUT") == 2
    assert moved("uss_request_duration_seconds_bucket", method="PUT", le="+Inf") == 2
    assert moved("uss_request_body_bytes_total") >= len(PNG) + 1000
    assert moved("uss_response_body_bytes_total") >= 4000 + len(stored)
    # Saved is what the disk holds less than the upload (exact mode returns the upload itself).
    (on_disk,) = srv.data_dir.glob("collections/*/a.png")
    assert stored == PNG
    assert moved("uss_compression_saved_bytes_total") == len(PNG) - on_disk.stat().st_size > 0
    assert moved("uss_auth_failures_total") == 1
    assert "uss_codec_fallbacks_total" in after


def test_rate_limited_clients_are_counted(two_workers: RunningServer) -> None:
    srv = two_workers
    for _ in range(5):
        requests.get(srv.url + "/", auth=("wrong-again", ""))
    text = requests.get(srv.url + "/metrics").text
    assert sample(text, "uss_rate_limited_clients") == 1


def test_every_response_carries_a_request_id_shown_in_the_log(two_workers: RunningServer) -> None:
    srv = two_workers
    _, key = srv.create_key()
    first = requests.request("PROPFIND", srv.url + "/", auth=(key, ""), headers={"Depth": "0"})
    second = requests.request("PROPFIND", srv.url + "/", auth=(key, ""), headers={"Depth": "0"})
    ids = {first.headers["X-Request-Id"], second.headers["X-Request-Id"]}
    assert len(ids) == 2 and all(re.fullmatch(r"[0-9a-f]{16}", i) for i in ids)
    theirs = requests.get(srv.url + "/api/v1/usage", auth=(key, ""), headers={"X-Request-Id": "trace-42.abc"})
    assert theirs.status_code == 200 and theirs.headers["X-Request-Id"] == "trace-42.abc"
    hostile = requests.get(srv.url + "/api/v1/usage", auth=(key, ""), headers={"X-Request-Id": "x" * 300})
    assert hostile.headers["X-Request-Id"] != "x" * 300
    log = srv.log()
    for rid in [*ids, "trace-42.abc"]:
        assert re.search(rf'"(PROPFIND|GET) /[^"]*".* id={re.escape(rid)}$', log, re.MULTILINE), rid


def _local(tmp_path: Path, **config: Any) -> Client:
    services = open_services(load_config(None, {"data_dir": tmp_path / "data", **config}, environ={}), with_hook=False)
    return Client(build_app(services))


@pytest.mark.parametrize("address", ["203.0.113.5", "10.0.0.1", "::ffff:192.0.2.1", ""])
def test_metrics_refuse_other_addresses_without_a_token(tmp_path: Path, address: str) -> None:
    client = _local(tmp_path)
    refused = client.get("/metrics", environ_base={"REMOTE_ADDR": address})
    assert refused.status_code == 403
    assert b"uss_requests" not in refused.data
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "127.0.0.1"}).status_code == 200
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "::1"}).status_code == 200


def test_metrics_with_an_admin_token_from_anywhere(tmp_path: Path) -> None:
    client = _local(tmp_path, admin_token="s3cret-admin-token-for-tests")
    remote = {"REMOTE_ADDR": "203.0.113.5"}
    assert client.get("/metrics", environ_base=remote).status_code == 401
    ok = client.get("/metrics", environ_base=remote, headers={"Authorization": "Bearer s3cret-admin-token-for-tests"})
    assert ok.status_code == 200 and b"uss_requests_total" in ok.data
    # Any other credentials make it a WebDAV request for a file named "metrics": refused, no figures.
    wrong = client.get("/metrics", environ_base=remote, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and b"uss_requests" not in wrong.data


def test_one_process_scrape_shows_its_own_requests_at_once(tmp_path: Path) -> None:
    client = _local(tmp_path)
    local = {"REMOTE_ADDR": "127.0.0.1"}
    refused = client.get("/nothing-here", environ_base=local, headers={"Authorization": "Basic d3Jvbmc6"})
    assert refused.status_code == 401
    refused.close()  # counted when the server closes the response, as the engine does once it is sent
    text = client.get("/metrics", environ_base=local).text
    assert sample(text, "uss_requests_total", method="GET", status="401") == 1
    assert sample(text, "uss_auth_failures_total") == 1  # the failure counter told the tally


def test_a_latency_on_a_bucket_bound_is_counted_in_that_bucket(tmp_path: Path) -> None:
    services = open_services(load_config(None, {"data_dir": tmp_path / "data"}, environ={}), with_hook=False)
    services.tally.request("PUT", "201", 0.005, 10, 0)
    services.tally.request("PUT", "201", 0.0051, 10, 0)
    text = Metrics(services).exposition()[0].decode()
    assert sample(text, "uss_request_duration_seconds_bucket", method="PUT", le="0.0025") == 0
    assert sample(text, "uss_request_duration_seconds_bucket", method="PUT", le="0.005") == 1
    assert sample(text, "uss_request_duration_seconds_bucket", method="PUT", le="0.01") == 2
    assert sample(text, "uss_request_duration_seconds_bucket", method="PUT", le="+Inf") == 2
    assert sample(text, "uss_request_duration_seconds_sum", method="PUT") == pytest.approx(0.0101)
    assert sample(text, "uss_request_body_bytes_total") == 20


def test_counts_of_every_process_are_summed_and_a_clean_stop_loses_none(tmp_path: Path) -> None:
    stopping, scraped = Tally(interval=3600), Tally(interval=3600)  # no timed write during the test
    stopping.start(tmp_path)
    scraped.start(tmp_path)
    for _ in range(3):
        stopping.request("GET", "200", 0.01, 0, 100)
    scraped.request("GET", "200", 0.01, 0, 5)
    assert scraped.all_processes().requests == {("GET", "200"): 1}  # its own at once; the other's not written yet
    stopping.close()
    summed = scraped.all_processes()
    assert summed.requests == {("GET", "200"): 4}
    assert summed.plain["bytes_out"] == 305
    scraped.close()


def test_another_process_counts_reach_a_scrape_within_the_interval(tmp_path: Path) -> None:
    serving, scraped = Tally(interval=0.05), Tally(interval=3600)
    serving.start(tmp_path)
    scraped.start(tmp_path)
    serving.add("fallbacks", 2)
    deadline = time.monotonic() + 1.0
    while scraped.all_processes().plain["fallbacks"] < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert scraped.all_processes().plain["fallbacks"] == 2
    serving.close()
    scraped.close()

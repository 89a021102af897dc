"""HTTPS through the engine (Python's ssl module), with a certificate the test makes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import requests
import trustme

from tests.server import ServerFactory


def test_tls_serves_webdav_and_refuses_plain_http(tmp_path: Path, make_server: ServerFactory) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    ca_file = str(tmp_path / "ca.pem")  # per request: a CA bundle in the environment would beat Session.verify
    pem = str(tmp_path / "server.pem")
    srv = make_server(tls={"cert": pem, "key": pem}, verify=ca_file)
    key = srv.create_key()[1]
    with requests.Session() as s:
        s.auth = (key, "")
        assert s.put(f"{srv.url}/secret.txt", data=b"over tls", verify=ca_file).status_code == 201
        assert s.get(f"{srv.url}/secret.txt", verify=ca_file).content == b"over tls"
        # Larger than the piece sent with the headers: on TLS the rest is read, not sendfile'd.
        big = os.urandom(300_000)
        assert s.put(f"{srv.url}/big.bin", data=big, verify=ca_file).status_code == 201
        assert s.get(f"{srv.url}/big.bin", verify=ca_file).content == big
        r = s.request("PROPFIND", f"{srv.url}/", headers={"Depth": "1"}, verify=ca_file)
        assert r.status_code == 207
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{srv.url}/secret.txt", auth=(key, ""))  # not signed by a CA we trust
    plain = srv.url.replace("https://", "http://")
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"{plain}/secret.txt", auth=(key, ""), timeout=5)


def test_tls_with_only_a_cert_is_refused_at_start(tmp_path: Path, make_server: ServerFactory) -> None:
    (tmp_path / "c.pem").write_text("x")
    with pytest.raises(RuntimeError, match="invalid config: tls needs both cert and key"):
        make_server(tls={"cert": str(tmp_path / "c.pem"), "key": ""})

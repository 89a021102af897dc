"""uss_dav.engine's request head and body readers, on bytes: what each refuses, and where each stops.

The end-to-end framing and hostile-input tests send these over sockets to
run_server.py; here the edges are pinned one by one, fast.
"""

from __future__ import annotations

import io

import pytest

from uss_dav.engine.body import ChunkedBody, IncompleteBody, LengthBody
from uss_dav.engine.connection import header_key, path_info
from uss_dav.engine.head import HttpError, read_head

LIMIT = 1024


def head_of(data: bytes, limit: int = LIMIT):  # noqa: ANN201
    return read_head(io.BufferedReader(io.BytesIO(data)), limit)


def test_a_request_head_and_what_follows_it() -> None:
    rfile = io.BufferedReader(io.BytesIO(b"\r\nPUT /a%20b?x=1 HTTP/1.1\r\nHost: h\r\nx-one: 1\r\nX-ONE: 2\r\n\r\nBODY"))
    head = read_head(rfile, LIMIT)
    assert head is not None
    assert (head.method, head.target, head.version) == ("PUT", "/a%20b?x=1", "HTTP/1.1")
    assert head.fields == {b"Host": b"h", b"X-One": b"2"}  # a repeat of a non-list field keeps the last
    assert rfile.read() == b"BODY"


def test_list_fields_are_joined_and_a_closed_connection_is_no_request() -> None:
    head = head_of(b"GET / HTTP/1.1\r\nHost: h\r\nIf-Match: \"a\"\r\nIf-Match: \"b\"\r\n\r\n")
    assert head is not None and head.fields[b"If-Match"] == b'"a", "b"'
    assert head_of(b"") is None


@pytest.mark.parametrize(("data", "status"), [
    (b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505),
    (b"GET / HTTP/1.1\nHost: h\r\n\r\n", 400),  # bare LF
    (b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400),  # two spaces
    (b"GET /a#frag HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    (b"GET a HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    (b"GET * HTTP/1.1\r\nHost: h\r\n\r\n", 400),  # '*' is OPTIONS' only
    (b"G(T / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n\r\n", 400),  # HTTP/1.1 without Host
    (b"GET / HTTP/1.1\r\nHost: h\r\nX-A: 1", 400),  # the head breaks off
    (b"GET /" + b"a" * LIMIT + b" HTTP/1.1\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"a" * LIMIT + b"\r\n\r\n", 431),
    (b"PUT / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
    (b"PUT / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
])
def test_refused_heads(data: bytes, status: int) -> None:
    with pytest.raises(HttpError) as caught:
        head_of(data)
    assert caught.value.status == status


def test_absolute_form_and_options_star_are_requests() -> None:
    assert head_of(b"GET http://h/x HTTP/1.1\r\nHost: h\r\n\r\n").target == "http://h/x"  # type: ignore[union-attr]
    assert head_of(b"OPTIONS * HTTP/1.0\r\n\r\n").target == "*"  # type: ignore[union-attr]


def test_path_info_decodes_all_but_an_encoded_slash() -> None:
    assert path_info("/a%20b/%C3%BC") == "/a b/\u00c3\u00bc"  # UTF-8 bytes as latin-1, as WSGI wants them
    assert path_info("/a%2Fb%2fc") == "/a%2Fb%2Fc"


def test_header_names_with_underscores_are_dropped() -> None:
    assert header_key(b"X-Oc-Mtime") == "HTTP_X_OC_MTIME"
    assert header_key(b"Content-Length") == "CONTENT_LENGTH"
    assert header_key(b"X_Oc_Mtime") is None


def test_a_length_body_stops_at_its_end_and_refuses_a_short_one() -> None:
    rfile = io.BufferedReader(io.BytesIO(b"helloNEXT"))
    body = LengthBody(rfile, 5)
    assert body.read(3) + body.read() == b"hello" and body.finished
    assert body.read() == b"" and rfile.read() == b"NEXT"
    with pytest.raises(IncompleteBody):
        LengthBody(io.BufferedReader(io.BytesIO(b"abc")), 5).read()


def test_a_chunked_body_is_decoded_up_to_its_trailers_and_no_further() -> None:
    data = b"5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nTrailer: x\r\n\r\nNEXT"
    rfile = io.BufferedReader(io.BytesIO(data))
    body = ChunkedBody(rfile)
    assert body.read(4) == b"hell"
    assert body.read() == b"o world"
    assert body.finished and rfile.read() == b"NEXT"


@pytest.mark.parametrize("data", [
    b"zz\r\nhello\r\n0\r\n\r\n",  # not hex
    b"5\r\nhelloXX0\r\n\r\n",  # no CRLF after the data
    b"5\r\nhel",  # broken off
    b"fffffffffffffffff\r\n",  # absurd size
    b"5\r\nhello\r\n0\r\n",  # no end of trailers
])
def test_malformed_chunked_bodies_are_refused(data: bytes) -> None:
    with pytest.raises(IncompleteBody):
        ChunkedBody(io.BufferedReader(io.BytesIO(data))).read()


def test_100_continue_is_promised_on_the_first_read_only() -> None:
    sent: list[str] = []
    body = LengthBody(io.BufferedReader(io.BytesIO(b"abc")), 3, lambda: sent.append("100"))
    assert not body.drain(1 << 20)  # never read: the client was not told to send, so the body is not ours to wait for
    assert sent == []
    assert body.read(1) == b"a" and body.read() == b"bc"
    assert sent == ["100"]

"""agent.api.httpserver: routes, limits, timeouts against slow clients, keep-alive, bad requests,
TLS, and a property test that random bytes never crash the server or hold a connection open."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from webclient import parse, raw_exchange, read_answer, request

from agent.api.httpserver import HTTPError, HTTPServer, Limits, Request, Response

FAST = Limits(
    max_request_line_bytes=256,
    max_header_bytes=1024,
    max_headers=8,
    max_body_bytes=1000,
    request_timeout_s=0.4,
    keepalive_idle_s=0.4,
    keepalive_max_requests=3,
    max_connections=4,
    handler_timeout_s=0.3,
    write_timeout_s=1.0,
)
SECRET = "hunter2-very-secret"


async def echo(req: Request) -> Response:
    return Response.json(
        {
            "method": req.method,
            "path": req.path,
            "query": req.query,
            "ua": req.headers.get("USER-AGENT"),
            "body": req.body.decode("latin-1"),
            "peer": req.peer,
        }
    )


async def boom(req: Request) -> Response:
    raise RuntimeError(f"internal detail {SECRET}")


async def slow(req: Request) -> Response:
    await asyncio.sleep(10)
    return Response.text("late")


async def teapot(req: Request) -> Response:
    raise HTTPError(400, "index must be an integer")


def make_server(**kw) -> HTTPServer:
    s = HTTPServer("127.0.0.1", 0, limits=kw.pop("limits", FAST), **kw)
    s.route(("GET", "POST"), "/echo", echo)
    s.route("GET", "/boom", boom)
    s.route("GET", "/slow", slow)
    s.route("POST", "/bad", teapot)
    s.route("GET", "/static/", echo, prefix=True)
    s.route("GET", "/static/special/", boom, prefix=True)
    return s


def run(body: Callable[[HTTPServer], Awaitable[None]], **kw) -> HTTPServer:
    async def main() -> HTTPServer:
        server = make_server(**kw)
        await server.start()
        try:
            async with asyncio.timeout(20):
                await body(server)
        finally:
            await server.stop()
        return server

    return asyncio.run(main())


def test_routes_query_headers_body_and_methods() -> None:
    async def body(s: HTTPServer) -> None:
        a = await request(s.port, "GET", "/echo?x=1&y=%20two&x=3", headers={"User-Agent": "t"})
        assert a.status == 200
        assert a.json() == {"method": "GET", "path": "/echo", "query": {"x": "3", "y": " two"},
                            "ua": "t", "body": "", "peer": "127.0.0.1"}  # fmt: skip
        a = await request(s.port, "POST", "/echo", body=b"hello")
        assert a.json()["body"] == "hello"
        a = await request(s.port, "HEAD", "/echo")
        assert a.status == 200 and a.body == b"" and int(a.headers["content-length"]) > 0
        a = await request(s.port, "GET", "/nowhere")
        assert a.status == 404
        a = await request(s.port, "DELETE", "/echo")
        assert a.status == 405 and a.headers["allow"] == "GET, HEAD, POST"
        a = await request(s.port, "GET", "/static/a/b.css")
        assert a.status == 200 and a.json()["path"] == "/static/a/b.css"
        a = await request(s.port, "GET", "/static/special/x")  # longest prefix wins
        assert a.status == 500
        a = await request(s.port, "GET", "/static/../etc/passwd")
        assert a.status == 400
        a = await request(s.port, "GET", "/static/%2e%2e/etc/passwd")
        assert a.status == 400
        a = await request(s.port, "POST", "/bad")
        assert a.status == 400 and a.body == b"index must be an integer\n"
        a = await request(s.port, "GET", "http://127.0.0.1/echo?q=1")  # absolute-form
        assert a.status == 200 and a.json()["query"] == {"q": "1"}

    s = run(body)
    assert s.errors_by_status[404] == 1 and s.errors_by_status[405] == 1
    assert s.stats["bad_requests"] >= 5


def test_handler_failures_are_500_and_503_without_details(caplog) -> None:
    async def body(s: HTTPServer) -> None:
        a = await request(s.port, "GET", "/boom")
        assert a.status == 500 and SECRET.encode() not in a.raw
        t0 = time.monotonic()
        a = await request(s.port, "GET", "/slow")
        assert a.status == 503 and time.monotonic() - t0 < 2

    s = run(body)
    assert s.stats["handler_errors"] == 2
    assert SECRET not in caplog.text


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET /" + b"a" * 400 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 2000 + b"\r\n\r\n", 431),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\n"
            + b"".join(b"X-%d: 1\r\n" % i for i in range(9))
            + b"\r\n",
            431,
        ),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n", 413),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
        (
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            400,
        ),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501),
        (b"GET /echo HTTP/1.1\r\n\r\n", 400),  # no Host
        (b"GET /echo HTTP/2.0\r\nHost: x\r\n\r\n", 505),
        (b"GET /echo\r\n\r\n", 400),
        (b"G\xffT /echo HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"BREW /echo HTTP/1.1\r\nHost: x\r\n\r\n", 501),
        (b"GET /echo HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 400),
        (b"GET /echo HTTP/1.1\r\nHost: x\r\nBad Name: 1\r\n\r\n", 400),
        (b"GET /echo HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n", 400),
        (b"GET /e%ffcho HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET echo HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ],
)
def test_bad_requests_get_clear_4xx_and_close(raw: bytes, status: int) -> None:
    async def body(s: HTTPServer) -> None:
        got = await raw_exchange(s.port, raw, timeout=3)
        a = parse(got)
        assert a.status == status
        assert a.headers["connection"] == "close"
        assert len(a.body) < 100  # a short fixed text, not an echo

    run(body)


def test_errors_never_echo_what_the_client_sent() -> None:
    async def body(s: HTTPServer) -> None:
        probes = [
            f"GET /nowhere?token={SECRET} HTTP/1.1\r\nHost: x\r\n\r\n",
            f"GET /echo HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {SECRET}\r\n"
            f"Bad Name: {SECRET}\r\n\r\n",
            f"GET /{SECRET}" + "a" * 300 + " HTTP/1.1\r\nHost: x\r\n\r\n",
            f"DELETE /echo?{SECRET} HTTP/1.1\r\nHost: x\r\n\r\n",
        ]
        for p in probes:
            got = await raw_exchange(s.port, p.encode(), timeout=3)
            assert got.startswith(b"HTTP/1.1 4")
            assert SECRET.encode() not in got

    run(body)


def test_keepalive_serves_several_requests_then_closes_at_the_cap() -> None:
    async def body(s: HTTPServer) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
        try:
            for i in range(3):
                writer.write(b"GET /echo?i=%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
                a = await read_answer(reader)
                assert a.status == 200 and a.json()["query"] == {"i": str(i)}
                assert a.headers["connection"] == ("close" if i == 2 else "keep-alive")
            async with asyncio.timeout(2):
                assert await reader.read() == b""  # closed after the cap
            # pipelined requests are answered in order
        finally:
            writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
        try:
            writer.write(
                b"GET /echo?i=a HTTP/1.1\r\nHost: x\r\n\r\n"
                b"GET /echo?i=b HTTP/1.1\r\nHost: x\r\n\r\n"
            )
            assert (await read_answer(reader)).json()["query"] == {"i": "a"}
            assert (await read_answer(reader)).json()["query"] == {"i": "b"}
            # then an idle keep-alive connection is closed after keepalive_idle_s
            t0 = time.monotonic()
            async with asyncio.timeout(3):
                assert await reader.read() == b""
            assert time.monotonic() - t0 < FAST.keepalive_idle_s + 1
        finally:
            writer.close()

    run(body)


def test_http10_closes_unless_keepalive_asked() -> None:
    async def body(s: HTTPServer) -> None:
        got = await raw_exchange(s.port, b"GET /echo HTTP/1.0\r\n\r\n")
        assert parse(got).status == 200 and parse(got).headers["connection"] == "close"

    run(body)


def test_slowloris_is_cut_off_at_the_request_deadline() -> None:
    """Bytes trickling in (each well within any per-read timeout) still hit the whole-request
    deadline: 408 and the connection closed, close to request_timeout_s."""

    async def body(s: HTTPServer) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
        t0 = time.monotonic()

        async def trickle() -> None:  # the attack's pace: one header byte every 50 ms
            with contextlib.suppress(ConnectionError):
                writer.write(b"GET /echo HTTP/1.1\r\nHost: x\r\n")
                for _ in range(200):
                    await asyncio.sleep(0.05)
                    writer.write(b"X")
                    await writer.drain()

        attacker = asyncio.create_task(trickle())
        try:
            async with asyncio.timeout(3):
                got = await reader.read(-1)
        finally:
            attacker.cancel()
            writer.close()
        elapsed = time.monotonic() - t0
        assert parse(got).status == 408
        assert FAST.request_timeout_s - 0.05 <= elapsed < FAST.request_timeout_s + 1.0

    s = run(body)
    assert s.stats["timeouts"] == 1


def test_silent_client_and_slow_body_get_408() -> None:
    async def body(s: HTTPServer) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
        try:
            async with asyncio.timeout(3):
                got = await reader.read(-1)  # we send nothing at all
        finally:
            writer.close()
        assert parse(got).status == 408
        reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
        try:
            writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly-part")
            async with asyncio.timeout(3):
                got = await reader.read(-1)
        finally:
            writer.close()
        assert parse(got).status == 408

    run(body)


def test_rate_limit_hook_answers_429() -> None:
    allowed = {"n": 2}

    def hook(ip: str) -> bool:
        assert ip == "127.0.0.1"
        allowed["n"] -= 1
        return allowed["n"] >= 0

    async def body(s: HTTPServer) -> None:
        assert (await request(s.port, "GET", "/echo")).status == 200
        assert (await request(s.port, "GET", "/echo")).status == 200
        a = await request(s.port, "GET", "/echo")
        assert a.status == 429 and a.headers["retry-after"] == "1"

    s = run(body, rate_limit=hook)
    assert s.stats["rate_limited"] == 1


def test_connection_cap_answers_503() -> None:
    async def body(s: HTTPServer) -> None:
        held = [
            await asyncio.open_connection("127.0.0.1", s.port) for _ in range(FAST.max_connections)
        ]
        # every held connection is in the server before the next one arrives
        for r, w in held:
            w.write(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await read_answer(r)).status == 200
        got = await raw_exchange(s.port, b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n", timeout=3)
        assert parse(got).status == 503
        for _, w in held:
            w.close()

    s = run(body)
    assert s.stats["refused_connections"] == 1


def test_connections_per_address_are_capped() -> None:
    limits = Limits(**{**FAST.__dict__, "max_connections": 10, "max_connections_per_ip": 2})

    async def body(s: HTTPServer) -> None:
        held = [await asyncio.open_connection("127.0.0.1", s.port) for _ in range(2)]
        for r, w in held:
            w.write(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await read_answer(r)).status == 200
        got = await raw_exchange(s.port, b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n", timeout=3)
        assert parse(got).status == 503
        for _, w in held:
            w.close()

    run(body, limits=limits)


def test_expect_100_continue() -> None:
    async def body(s: HTTPServer) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
        try:
            writer.write(
                b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                b"Expect: 100-continue\r\n\r\n"
            )
            async with asyncio.timeout(3):
                assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
            writer.write(b"abc")
            assert (await read_answer(reader)).json()["body"] == "abc"
        finally:
            writer.close()

    run(body)


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .sign(key, hashes.SHA256())
    )
    c, k = tmp / "cert.pem", tmp / "key.pem"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return c, k


def test_tls(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))

    async def body(s: HTTPServer) -> None:
        a = await request(s.port, "GET", "/echo?tls=1", tls=client_ctx)
        assert a.status == 200 and a.json()["query"] == {"tls": "1"}
        # plain HTTP to the TLS port gets nowhere and is closed, not held
        got = await raw_exchange(s.port, b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n", timeout=3)
        assert not got.startswith(b"HTTP/1.1 200")

    run(body, ssl=server_ctx)


# ---------------------------------------------------------------------------- property test

_VALID = b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n"
_PIECES = [b"GET ", b"POST ", b"/echo", b"?a=b", b" HTTP/1.1", b" HTTP/1.0", b"\r\n", b"\n",
           b"Host: x", b"Content-Length: ", b"3", b"99999999999", b": ", b"\x00", b"\xff",
           b"%", b"%zz", b"Transfer-Encoding: chunked", b"Connection: keep-alive",
           b" ", b"\t"]  # fmt: skip

requests_bytes = st.one_of(
    st.binary(max_size=600),
    st.lists(st.sampled_from(_PIECES), max_size=30).map(b"".join),
    st.tuples(st.integers(0, len(_VALID)), st.binary(max_size=40)).map(
        lambda t: _VALID[: t[0]] + t[1] + _VALID[t[0] :]
    ),
)


@given(requests_bytes)
def test_random_bytes_never_crash_nor_hang(data: bytes) -> None:
    """Whatever arrives, the server answers with a known status or closes, within the request
    timeout, and still serves a good request afterwards."""

    async def body(s: HTTPServer) -> None:
        t0 = time.monotonic()
        got = await raw_exchange(s.port, data, timeout=FAST.request_timeout_s + 2)
        assert time.monotonic() - t0 < FAST.request_timeout_s + 1.5
        # every answer in the stream is well-formed and none is a server error
        rest = got
        while rest:
            assert rest.startswith(b"HTTP/1.1 ")
            a = parse(rest)
            assert a.status in (200, 400, 404, 405, 408, 411, 413, 414, 431, 501, 505), a.status
            head_len = rest.index(b"\r\n\r\n") + 4
            rest = rest[head_len + int(a.headers["content-length"]) :]
        a = await request(s.port, "GET", "/echo")
        assert a.status == 200

    s = run(body)
    assert s.stats["handler_errors"] == 0

"""A small HTTP/1.1 server on the agent's one asyncio loop, strict about what it accepts.

Every surface that speaks HTTP (status page, JSON, /metrics, the stock Antminer CGI) mounts its
routes on one HTTPServer. Nothing a client sends is trusted: the request line, the headers and the
body have size limits, the whole request must arrive within a deadline (a slowloris is cut off
with 408), keep-alive connections are capped in idle time and in requests, the number of open
connections is capped, and an optional per-client hook rate-limits requests (429). Error answers
are short fixed texts: they never echo what the client sent, so a credential in a request can not
come back out in an error page or a log line. Bad requests are counted in `server.stats`.

Adding routes (exact paths, or prefixes for static-like trees)::

    from agent.api.httpserver import HTTPServer, Request, Response

    server = HTTPServer("127.0.0.1", 8080)            # port 0: any free port, see server.port

    async def hello(req: Request) -> Response:
        name = req.query.get("name", "world")           # query: dict[str, str], last value wins
        return Response.json({"hello": name})

    server.route("GET", "/hello", hello)                # GET routes answer HEAD too
    server.route(("GET", "POST"), "/cgi-bin/", cgi, prefix=True)   # any path under /cgi-bin/
    await server.start()
    ...
    await server.stop()

A handler gets a Request (method, path, query, headers with case-insensitive keys, body bytes,
peer ip, raw target) and returns a Response (status, headers, body) built directly or through
Response.json / .html / .text / .error. Exact routes win over prefixes; the longest prefix wins.
A path with routes but not for this method gets 405 with Allow. A handler that raises gets a
500 (logged with the exception type, never the request); one that outlives the handler timeout
gets 503. Request paths are percent-decoded before matching; `..` segments are refused with 400.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import ssl as ssl_mod
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from agent import defaults as D

log = logging.getLogger("agent.api.http")

REASONS = {
    100: "Continue",
    200: "OK",
    201: "Created",
    204: "No Content",
    301: "Moved Permanently",
    302: "Found",
    304: "Not Modified",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    411: "Length Required",
    413: "Content Too Large",
    414: "URI Too Long",
    415: "Unsupported Media Type",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})
_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_VERSION = re.compile(rb"^HTTP/1\.[01]$")


@dataclass(frozen=True)
class Limits:
    """What one client may send; the defaults come from agent/defaults.py."""

    max_request_line_bytes: int = D.HTTP_MAX_REQUEST_LINE_BYTES
    max_header_bytes: int = D.HTTP_MAX_HEADER_BYTES
    max_headers: int = D.HTTP_MAX_HEADERS
    max_body_bytes: int = D.HTTP_MAX_BODY_BYTES
    request_timeout_s: float = D.HTTP_REQUEST_TIMEOUT_S
    keepalive_idle_s: float = D.HTTP_KEEPALIVE_IDLE_S
    keepalive_max_requests: int = D.HTTP_KEEPALIVE_MAX_REQUESTS
    max_connections: int = D.HTTP_MAX_CONNECTIONS
    max_connections_per_ip: int = D.HTTP_MAX_CONNECTIONS_PER_IP
    handler_timeout_s: float = D.HTTP_HANDLER_TIMEOUT_S
    write_timeout_s: float = D.HTTP_WRITE_TIMEOUT_S


class Headers(Mapping[str, str]):
    """Request headers, looked up case-insensitively. A repeated header keeps every value
    (get_all); the mapping view joins them with ", " as RFC 9110 allows."""

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = list(items)
        self._map: dict[str, list[str]] = {}
        for k, v in self._items:
            self._map.setdefault(k.lower(), []).append(v)

    def __getitem__(self, key: str) -> str:
        return ", ".join(self._map[key.lower()])

    def __iter__(self) -> Iterator[str]:
        return iter(self._map)

    def __len__(self) -> int:
        return len(self._map)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._map

    def get_all(self, key: str) -> list[str]:
        return list(self._map.get(key.lower(), []))

    def items_raw(self) -> list[tuple[str, str]]:
        return list(self._items)


@dataclass
class Request:
    method: str
    path: str  # percent-decoded, without the query
    query: dict[str, str]
    headers: Headers
    body: bytes
    peer: str  # client ip address
    target: str = ""  # the raw request target, as sent (do not log: it may hold a token)
    version: str = "HTTP/1.1"

    def json(self) -> Any:
        """The body as JSON; raises HTTPError(400/415) when it is not."""
        ctype = self.headers.get("content-type", "application/json").split(";")[0].strip()
        if ctype.lower() not in ("application/json", ""):
            raise HTTPError(415, "expected a JSON body")
        try:
            return json.loads(self.body.decode("utf-8")) if self.body else None
        except (UnicodeDecodeError, ValueError):
            raise HTTPError(400, "body is not valid JSON") from None
        except RecursionError:  # [[[[... within the body limit: a 400, not a handler crash
            raise HTTPError(400, "body is JSON nested too deeply") from None

    def form(self) -> dict[str, str]:
        """An application/x-www-form-urlencoded body (or none) as a dict; last value wins."""
        try:
            text = self.body.decode("ascii")
            return dict(parse_qsl(text, keep_blank_values=True, max_num_fields=100))
        except (UnicodeDecodeError, ValueError):
            raise HTTPError(400, "body is not a valid form") from None


@dataclass
class Response:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @classmethod
    def json(
        cls, data: Any, status: int = 200, headers: Mapping[str, str] | None = None
    ) -> Response:
        body = json.dumps(data, separators=(",", ":"), allow_nan=False, default=str).encode()
        h = {"Content-Type": "application/json", "Cache-Control": "no-store"}
        h.update(headers or {})
        return cls(status, h, body)

    @classmethod
    def html(
        cls, text: str, status: int = 200, headers: Mapping[str, str] | None = None
    ) -> Response:
        h = {"Content-Type": "text/html; charset=utf-8"}
        h.update(headers or {})
        return cls(status, h, text.encode("utf-8"))

    @classmethod
    def text(
        cls, text: str, status: int = 200, headers: Mapping[str, str] | None = None
    ) -> Response:
        h = {"Content-Type": "text/plain; charset=utf-8"}
        h.update(headers or {})
        return cls(status, h, text.encode("utf-8"))

    @classmethod
    def error(cls, status: int, message: str | None = None, **headers: str) -> Response:
        """A short plain-text error; `message` must be our own words, never client input."""
        text = message or REASONS.get(status, "Error")
        return cls.text(text + "\n", status, {k.replace("_", "-"): v for k, v in headers.items()})


class HTTPError(Exception):
    """Raise from a handler (or a helper) to answer with a clean error response."""

    def __init__(
        self, status: int, message: str | None = None, headers: Mapping[str, str] | None = None
    ):
        super().__init__(message or REASONS.get(status, "Error"))
        self.status = status
        self.message = message
        self.headers = dict(headers or {})

    def response(self) -> Response:
        r = Response.error(self.status, self.message)
        r.headers.update(self.headers)
        return r


Handler = Callable[[Request], Awaitable[Response]]
RateHook = Callable[[str], bool]  # peer ip -> may this request go on?


class _Reject(Exception):
    """Internal: answer with this status and close the connection."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def close_listener(
    server: asyncio.Server | None, conns: set[asyncio.Task[None]], wait_s: float = 5.0
) -> None:
    """Stop accepting, cancel every connection task, then wait (bounded) for the socket to close.
    Shared by the HTTP server and the cgminer API."""
    if server is not None:
        server.close()
    for task in list(conns):
        task.cancel()
    if conns:
        await asyncio.gather(*conns, return_exceptions=True)
    if server is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), wait_s)


class HTTPServer:
    """Routes + limits + one asyncio server. See the module docstring for how to add routes."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        limits: Limits | None = None,
        ssl: ssl_mod.SSLContext | None = None,
        rate_limit: RateHook | None = None,
        name: str = "http",
    ) -> None:
        self.host = host
        self._port = port
        self.limits = limits or Limits()
        self.ssl = ssl
        self.rate_limit = rate_limit
        self.name = name
        self._exact: dict[str, dict[str, Handler]] = {}
        self._prefix: list[tuple[str, dict[str, Handler]]] = []
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()
        self._per_ip: dict[str, int] = {}
        self.stats: dict[str, int] = {
            "connections": 0,
            "requests": 0,
            "bad_requests": 0,  # every 4xx the server itself answered (limits, syntax, routes)
            "timeouts": 0,
            "rate_limited": 0,
            "refused_connections": 0,
            "handler_errors": 0,
        }
        self.errors_by_status: dict[int, int] = {}

    # ------------------------------------------------------------------ routes

    def route(
        self, methods: str | Iterable[str], path: str, handler: Handler, *, prefix: bool = False
    ) -> None:
        """Mount `handler` for `methods` ("GET" or ("GET", "POST")) on `path` (or under it)."""
        if not path.startswith("/"):
            raise ValueError(f"route path must start with '/', got {path!r}")
        ms = [methods] if isinstance(methods, str) else list(methods)
        for m in ms:
            if m.upper() not in METHODS:
                raise ValueError(f"unknown method {m!r}")
        if prefix:
            table = next((t for p, t in self._prefix if p == path), None)
            if table is None:
                table = {}
                self._prefix.append((path, table))
                self._prefix.sort(key=lambda pt: len(pt[0]), reverse=True)
        else:
            table = self._exact.setdefault(path, {})
        for m in ms:
            table[m.upper()] = handler

    def _find(self, method: str, path: str) -> tuple[Handler | None, list[str]]:
        table = self._exact.get(path)
        if table is None:
            table = next((t for p, t in self._prefix if path.startswith(p)), None)
        if table is None:
            return None, []
        handler = table.get(method) or (table.get("GET") if method == "HEAD" else None)
        allowed = sorted(set(table) | ({"HEAD"} if "GET" in table else set()))
        return handler, allowed

    # ------------------------------------------------------------------ lifecycle

    @property
    def port(self) -> int:
        if self._server is not None and self._server.sockets:
            return int(self._server.sockets[0].getsockname()[1])
        return self._port

    async def start(self) -> None:
        limit = max(self.limits.max_request_line_bytes, self.limits.max_header_bytes) + 2
        self._server = await asyncio.start_server(
            self._on_connect,
            self.host,
            self._port,
            ssl=self.ssl,
            limit=limit,
            ssl_handshake_timeout=self.limits.request_timeout_s if self.ssl else None,
            reuse_address=True,
        )
        log.info(
            "%s listening on %s:%d%s", self.name, self.host, self.port, " (TLS)" if self.ssl else ""
        )

    async def stop(self) -> None:
        await close_listener(self._server, self._conns)
        self._server = None

    async def __aenter__(self) -> HTTPServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ connections

    def _count_error(self, status: int) -> None:
        self.errors_by_status[status] = self.errors_by_status.get(status, 0) + 1
        if 400 <= status < 500:
            self.stats["bad_requests"] += 1

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        peername = writer.get_extra_info("peername")
        peer = str(peername[0]) if isinstance(peername, tuple) and peername else "unknown"
        self.stats["connections"] += 1
        if (
            len(self._conns) >= self.limits.max_connections
            or self._per_ip.get(peer, 0) >= self.limits.max_connections_per_ip
        ):
            self.stats["refused_connections"] += 1
            self._count_error(503)
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await self._send(
                    writer, Response.error(503, "too many connections"), close=True, head=False
                )
            await self._close(writer)
            return
        self._conns.add(task)
        self._per_ip[peer] = self._per_ip.get(peer, 0) + 1
        try:
            await self._serve(reader, writer, peer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl_mod.SSLError, TimeoutError):
            pass
        except asyncio.CancelledError:
            pass
        except Exception:  # never let one client kill the server
            log.exception("%s: connection from %s failed", self.name, peer)
        finally:
            self._conns.discard(task)
            left = self._per_ip.get(peer, 1) - 1
            if left > 0:
                self._per_ip[peer] = left
            else:
                self._per_ip.pop(peer, None)
            await self._close(writer)

    async def _close(self, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            writer.close()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str
    ) -> None:
        lim = self.limits
        served = 0
        while True:
            # Idle wait for the first byte of the next request (keep-alive, or a fresh connection).
            idle = lim.request_timeout_s if served == 0 else lim.keepalive_idle_s
            try:
                first = await asyncio.wait_for(reader.read(1), idle)
            except TimeoutError:
                if served == 0:  # connected and sent nothing: a slow client, say so
                    self.stats["timeouts"] += 1
                    self._count_error(408)
                    await self._send(writer, Response.error(408), close=True, head=False)
                return
            if not first:
                return
            try:
                async with asyncio.timeout(lim.request_timeout_s):
                    req = await self._read_request(first, reader, writer, peer)
            except TimeoutError:
                self.stats["timeouts"] += 1
                self._count_error(408)
                await self._send(writer, Response.error(408), close=True, head=False)
                return
            except _Reject as r:
                # A bad request spends a token like a good one; past its limit a client's bad
                # requests are only counted, so a flood can not flood the log too.
                within = self.rate_limit(peer) if self.rate_limit is not None else True
                self._count_error(r.status)
                if within:
                    log.info("%s: %s from %s: %s", self.name, r.status, peer, r.message)
                await self._send(
                    writer, Response.error(r.status, r.message), close=True, head=False
                )
                return
            served += 1
            self.stats["requests"] += 1
            close = self._wants_close(req) or served >= lim.keepalive_max_requests
            resp = await self._dispatch(req)
            await self._send(writer, resp, close=close, head=req.method == "HEAD")
            if close:
                return

    @staticmethod
    def _wants_close(req: Request) -> bool:
        conn = {t.strip().lower() for t in req.headers.get("connection", "").split(",")}
        if req.version == "HTTP/1.0":
            return "keep-alive" not in conn
        return "close" in conn

    async def _readline(
        self, reader: asyncio.StreamReader, budget: int, status: int, what: str
    ) -> bytes:
        try:
            line = await reader.readuntil(b"\n")
        except asyncio.LimitOverrunError:
            raise _Reject(status, f"{what} too long") from None
        except asyncio.IncompleteReadError as e:
            if e.partial and len(e.partial) > budget:
                raise _Reject(status, f"{what} too long") from None
            raise
        if len(line) > budget:
            raise _Reject(status, f"{what} too long")
        return line

    async def _read_request(
        self, first: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str
    ) -> Request:
        lim = self.limits
        if first == b"\n" or first == b"\r":  # tolerate one stray CRLF between requests (RFC 9112)
            first = b""
        rest = await self._readline(reader, lim.max_request_line_bytes + 2, 414, "request line")
        line = (first + rest).rstrip(b"\r\n")
        if not line:
            line = (
                await self._readline(reader, lim.max_request_line_bytes + 2, 414, "request line")
            ).rstrip(b"\r\n")
        if len(line) > lim.max_request_line_bytes:
            raise _Reject(414, "request line too long")
        parts = line.split(b" ")
        if len(parts) != 3:
            raise _Reject(400, "malformed request line")
        raw_method, raw_target, raw_version = parts
        if not _VERSION.match(raw_version):
            if re.match(rb"^HTTP/[0-9]\.[0-9]$", raw_version):
                raise _Reject(505, "only HTTP/1.0 and HTTP/1.1 are served")
            raise _Reject(400, "malformed request line")
        if not _TOKEN.match(raw_method):
            raise _Reject(400, "malformed method")
        method = raw_method.decode("ascii")
        if method not in METHODS:
            raise _Reject(501, "method not implemented")
        try:
            target = raw_target.decode("ascii")
        except UnicodeDecodeError:
            raise _Reject(400, "request target is not ASCII") from None
        if not target or any(c <= " " or c == "\x7f" for c in target):
            raise _Reject(400, "malformed request target")
        path, query = self._parse_target(target)

        headers: list[tuple[str, str]] = []
        total = 0
        while True:
            raw = await self._readline(reader, lim.max_header_bytes + 2, 431, "header section")
            total += len(raw)
            if total > lim.max_header_bytes:
                raise _Reject(431, "header section too large")
            h = raw.rstrip(b"\r\n")
            if not h:
                break
            if len(headers) >= lim.max_headers:
                raise _Reject(431, "too many header fields")
            if h[:1] in (b" ", b"\t"):
                raise _Reject(400, "obsolete header line folding")
            name, sep, value = h.partition(b":")
            if not sep or not _TOKEN.match(name):
                raise _Reject(400, "malformed header field")
            try:
                sval = value.strip(b" \t").decode("latin-1")
            except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes everything
                raise _Reject(400, "malformed header field") from None
            if _BAD_VALUE.search(sval):
                raise _Reject(400, "control character in header field")
            headers.append((name.decode("ascii"), sval))
        hdrs = Headers(headers)
        version = raw_version.decode("ascii")
        if version == "HTTP/1.1" and "host" not in hdrs:
            raise _Reject(400, "missing Host header")
        if len(hdrs.get_all("host")) > 1:
            raise _Reject(400, "more than one Host header")

        body = b""
        if "transfer-encoding" in hdrs:
            raise _Reject(501, "Transfer-Encoding is not supported; send Content-Length")
        lengths = {
            v.strip() for v in ",".join(hdrs.get_all("content-length")).split(",") if v.strip()
        }
        if "content-length" in hdrs:
            if (
                len(lengths) != 1
                or not next(iter(lengths)).isdigit()
                or not next(iter(lengths)).isascii()
            ):
                raise _Reject(400, "invalid Content-Length")
            size = int(next(iter(lengths)))
            if size > lim.max_body_bytes:
                raise _Reject(413, "request body too large")
            if size:
                if hdrs.get("expect", "").lower() == "100-continue":
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                    await writer.drain()
                body = await reader.readexactly(size)
        elif (
            method in ("POST", "PUT", "PATCH") and hdrs.get("expect", "").lower() == "100-continue"
        ):
            raise _Reject(411, "Content-Length required")
        return Request(method, path, query, hdrs, body, peer, target, version)

    @staticmethod
    def _parse_target(target: str) -> tuple[str, dict[str, str]]:
        if target.startswith("/"):
            raw_path, _, raw_query = target.partition("?")
        elif target.startswith(("http://", "https://")):  # absolute-form
            try:
                parts = urlsplit(target)
            except ValueError:
                raise _Reject(400, "malformed request target") from None
            raw_path, raw_query = parts.path or "/", parts.query
        else:
            raise _Reject(400, "malformed request target")
        raw_path = raw_path.partition("#")[0]
        try:
            path = unquote(raw_path, errors="strict")
            query = dict(
                parse_qsl(raw_query, keep_blank_values=True, max_num_fields=64, errors="strict")
            )
        except (UnicodeDecodeError, ValueError):
            raise _Reject(400, "malformed request target") from None
        if "\x00" in path or any(seg == ".." for seg in path.split("/")):
            raise _Reject(400, "malformed request path")
        return path, query

    async def _dispatch(self, req: Request) -> Response:
        if self.rate_limit is not None and not self.rate_limit(req.peer):
            self.stats["rate_limited"] += 1
            self._count_error(429)
            return Response.error(429, "too many requests", Retry_After="1")
        handler, allowed = self._find(req.method, req.path)
        if handler is None:
            status = 405 if allowed else 404
            self._count_error(status)
            extra = {"Allow": ", ".join(allowed)} if allowed else {}
            return Response.error(status, None, **extra)
        try:
            async with asyncio.timeout(self.limits.handler_timeout_s):
                resp = await handler(req)
        except HTTPError as e:
            self._count_error(e.status)
            return e.response()
        except TimeoutError:
            self.stats["handler_errors"] += 1
            self._count_error(503)
            log.warning("%s: handler for %s %s timed out", self.name, req.method, req.path)
            return Response.error(503, "the request took too long")
        except Exception as e:
            self.stats["handler_errors"] += 1
            self._count_error(500)
            log.error(
                "%s: handler for %s %s failed: %s",
                self.name,
                req.method,
                req.path,
                type(e).__name__,
            )
            return Response.error(500)
        if not isinstance(resp, Response):
            self.stats["handler_errors"] += 1
            self._count_error(500)
            return Response.error(500)
        return resp

    async def _send(
        self, writer: asyncio.StreamWriter, resp: Response, *, close: bool, head: bool
    ) -> None:
        reason = REASONS.get(resp.status, "Status")
        lines = [f"HTTP/1.1 {resp.status} {reason}"]
        headers = {
            "Date": formatdate(usegmt=True),
            "Server": "doge-agent",
            "X-Content-Type-Options": "nosniff",
        }
        headers.update(resp.headers)
        headers["Content-Length"] = str(len(resp.body))
        headers["Connection"] = "close" if close else "keep-alive"
        for k, v in headers.items():
            if not _TOKEN.match(k.encode("latin-1", "replace")) or _BAD_VALUE.search(v):
                raise ValueError(f"bad response header {k!r}")
            lines.append(f"{k}: {v}")
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if not head:
            data += resp.body
        try:
            writer.write(data)
            await asyncio.wait_for(writer.drain(), self.limits.write_timeout_s)
        except (ConnectionError, TimeoutError, ssl_mod.SSLError):  # a vanished client
            raise ConnectionResetError("client went away") from None

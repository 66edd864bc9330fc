"""A tiny raw HTTP client for the web tests: exact bytes out, the answer parsed, bounded in time."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
from dataclasses import dataclass
from typing import Any


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes
    raw: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def parse(raw: bytes) -> Answer:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    n = int(headers.get("content-length", len(body)))
    return Answer(status, headers, body[:n], raw)


async def read_answer(reader: asyncio.StreamReader, timeout: float = 5.0) -> Answer:
    """One response off a kept-alive connection (Content-Length framed)."""
    async with asyncio.timeout(timeout):
        head = await reader.readuntil(b"\r\n\r\n")
        a = parse(head)
        n = int(a.headers.get("content-length", "0"))
        body = await reader.readexactly(n) if n else b""
    return Answer(a.status, a.headers, body, head + body)


async def raw_exchange(
    port: int, data: bytes, *, timeout: float = 5.0, tls: ssl.SSLContext | None = None
) -> bytes:
    """Send `data`, half-close when plain TCP, and read until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls)
    try:
        writer.write(data)
        await writer.drain()
        if tls is None and writer.can_write_eof():
            writer.write_eof()
        async with asyncio.timeout(timeout):
            return await reader.read(-1)
    finally:
        writer.close()


async def request(
    port: int,
    method: str = "GET",
    path: str = "/",
    *,
    body: bytes | dict | None = None,
    headers: dict[str, str] | None = None,
    user: str | None = None,
    password: str | None = None,
    token: str | None = None,
    tls: ssl.SSLContext | None = None,
    timeout: float = 5.0,
) -> Answer:
    h = {"Host": "127.0.0.1", "Connection": "close"}
    if isinstance(body, dict):
        body = json.dumps(body).encode()
        h["Content-Type"] = "application/json"
    if user is not None:
        cred = base64.b64encode(f"{user}:{password}".encode()).decode()
        h["Authorization"] = f"Basic {cred}"
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    h.update(headers or {})
    if body is not None:
        h["Content-Length"] = str(len(body))
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items())
    data = head.encode("latin-1") + b"\r\n" + (body or b"")
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(timeout):
            raw = await reader.read(-1)
    finally:
        writer.close()
    return parse(raw)

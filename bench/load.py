"""Load generators for the surfaces bench: they run in a separate (spawned) process, so their CPU
and their event loop are not the agent's. Loopback only.

* `hammer`: good requests (GET /api/status, or cgminer `summary` on 4028) from many concurrent
  connections, each from its own 127.x.y.z source address (every loopback address reaches the
  agent; distinct addresses are distinct clients for its per-client rate limiter, as a fleet of
  dashboards would be). Counts answers by status.
* `flood`: bad requests at both ports: garbage bytes, slowloris (a header byte a second), oversize
  headers and bodies, invalid cgminer JSON, and connections opened and dropped at once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import time
from collections import Counter
from typing import Any

HOST = "127.0.0.1"
CONNECT_TIMEOUT_S = 5.0


def _source(n: int) -> tuple[str, int]:
    """A loopback source address per client number: 127.1.0.1, 127.1.0.2, ... 127.1.255.254."""
    n %= 65_000
    return (f"127.1.{n // 254}.{n % 254 + 1}", 0)


async def _open(port: int, client: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(
        asyncio.open_connection(HOST, port, local_addr=_source(client)), CONNECT_TIMEOUT_S
    )


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()


# ------------------------------------------------------------------------------ good requests


async def _one_http(port: int, client: int) -> str:
    reader, writer = await _open(port, client)
    try:
        writer.write(b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        await _close(writer)
    line = data.split(b"\r\n", 1)[0].split()
    return line[1].decode() if len(line) > 1 else "no-status"


async def _one_cgminer(port: int, client: int) -> str:
    reader, writer = await _open(port, client)
    try:
        writer.write(json.dumps({"command": "summary"}).encode())
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        await _close(writer)
    try:
        reply = json.loads(data.rstrip(b"\0"))
        return str(reply["STATUS"][0]["STATUS"])  # S = success
    except (ValueError, KeyError, IndexError, TypeError):
        return "bad-reply"


async def _hammer(port: int, kind: str, seconds: float, concurrency: int) -> dict[str, Any]:
    one = _one_http if kind == "http" else _one_cgminer
    counts: Counter[str] = Counter()
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    next_client = [0]

    async def worker() -> None:
        while time.perf_counter() < deadline:
            next_client[0] += 1
            t0 = time.perf_counter()
            try:
                status = await one(port, next_client[0])
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
                status = type(exc).__name__
            counts[status] += 1
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    ok = counts["200"] if kind == "http" else counts["S"]
    latencies.sort()
    return {
        "kind": kind, "seconds": round(wall, 3), "concurrency": concurrency,
        "requests": sum(counts.values()), "ok": ok, "ok_per_s": round(ok / wall, 1),
        "answers": dict(counts),
        "latency_ms_p50": round(1e3 * latencies[len(latencies) // 2], 2) if latencies else None,
        "latency_ms_p99": round(1e3 * latencies[int(len(latencies) * 0.99)], 2)
        if latencies else None,
    }  # fmt: skip


def hammer(port: int, kind: str, seconds: float, concurrency: int = 16) -> dict[str, Any]:
    """Good requests for `seconds`; kind is "http" (GET /api/status) or "cgminer" (summary)."""
    return asyncio.run(_hammer(port, kind, seconds, concurrency))


# ------------------------------------------------------------------------------ bad requests


async def _garbage(port: int, client: int, rng: random.Random) -> None:
    _, writer = await _open(port, client)
    try:
        writer.write(rng.randbytes(rng.randint(1, 4096)))
        await writer.drain()
        await asyncio.sleep(0.05)
    finally:
        await _close(writer)


async def _oversize(port: int, client: int, rng: random.Random, http: bool) -> None:
    reader, writer = await _open(port, client)
    try:
        if http:
            if rng.random() < 0.5:  # a header line far past any limit
                writer.write(b"GET /api/status HTTP/1.1\r\nX-Pad: " + b"A" * 200_000 + b"\r\n\r\n")
            else:  # a body announced (and partly sent) far past any limit
                writer.write(b"POST /api/control HTTP/1.1\r\nContent-Length: 100000000\r\n\r\n"
                             + b"B" * 200_000)
        else:
            writer.write(b'{"command":"' + b"x" * 100_000 + b'"}')
        await asyncio.wait_for(writer.drain(), 5)
        await asyncio.wait_for(reader.read(65536), 5)
    finally:
        await _close(writer)


async def _bad_json(port: int, client: int, rng: random.Random) -> None:
    reader, writer = await _open(port, client)
    try:
        writer.write(rng.choice([b"{", b'{"command":', b'{"command":"summary+pools+x"}',
                                 b'{"command":"addpool","parameter":"' + b"," * 999 + b'"}',
                                 b"\0" * 64, b"[]"]))
        await writer.drain()
        await asyncio.wait_for(reader.read(65536), 5)
    finally:
        await _close(writer)


async def _slowloris(port: int, client: int, deadline: float) -> None:
    reader, writer = await _open(port, client)
    try:
        writer.write(b"GET /api/status HTTP/1.1\r\n")
        while time.perf_counter() < deadline and not reader.at_eof():
            writer.write(b"X")
            await writer.drain()
            await asyncio.sleep(1.0)
    finally:
        await _close(writer)


async def _flood(http_port: int, api_port: int, seconds: float, concurrency: int
                 ) -> dict[str, Any]:  # fmt: skip
    rng = random.Random(os.getpid())
    deadline = time.perf_counter() + seconds
    counts: Counter[str] = Counter()
    next_client = [0]

    async def worker(n: int) -> None:
        while time.perf_counter() < deadline:
            next_client[0] += 1
            client = next_client[0]
            port = http_port if (client + n) % 2 else api_port
            http = port == http_port
            what = rng.choice(["garbage", "oversize", "slowloris", "drop", "bad_json"])
            try:
                if what == "garbage":
                    await _garbage(port, client, rng)
                elif what == "oversize":
                    await _oversize(port, client, rng, http)
                elif what == "slowloris":
                    await _slowloris(port, client, min(deadline, time.perf_counter() + 10))
                elif what == "drop":
                    _, writer = await _open(port, client)
                    await _close(writer)
                else:
                    await _bad_json(port, client, rng)
                counts[what] += 1
            except (OSError, TimeoutError, asyncio.IncompleteReadError):
                counts[f"{what}_refused_or_dropped"] += 1

    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    return {"seconds": seconds, "concurrency": concurrency,
            "attempts": sum(counts.values()), "by_kind": dict(counts)}  # fmt: skip


def flood(http_port: int, api_port: int, seconds: float, concurrency: int = 48) -> dict[str, Any]:
    """Bad requests at both ports for `seconds` from `concurrency` concurrent connections."""
    return asyncio.run(_flood(http_port, api_port, seconds, concurrency))

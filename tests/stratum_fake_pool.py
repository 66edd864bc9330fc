"""A scripted Stratum V1 pool for the client, pools and TLS tests (loopback only).

Not the emulator's pool (agent/emulator/pool.py): this one does no hashing and lets a test
decide every byte, including hostile ones."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

PREVHASH = "89a651fbae28b80ea2eb9d20f164fa8adc33c6c4793470b60f5fcac00fd4ad71"


def notify(job_id: str, clean: bool = True, prevhash: str = PREVHASH) -> dict[str, Any]:
    return {
        "id": None,
        "method": "mining.notify",
        "params": [job_id, prevhash, "0100", "ff00", [], "20000000", "1e0ffff0", "52a4b2f4", clean],
    }


def set_difficulty(d: float) -> dict[str, Any]:
    return {"id": None, "method": "mining.set_difficulty", "params": [d]}


class Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.all: list[dict[str, Any]] = []

    def send(self, obj: dict[str, Any] | bytes) -> None:
        data = obj if isinstance(obj, bytes) else json.dumps(obj).encode() + b"\n"
        self.writer.write(data)

    async def expect(self, method: str, timeout: float = 5.0) -> dict[str, Any]:
        """The next request with this method (others before it are kept in .all)."""
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.received.get()
                if msg.get("method") == method:
                    return msg


Handler = Callable[[Conn], Awaitable[None]]


class FakePool:
    """Answers subscribe/authorize/submit; after authorize sends difficulty and a first job.

    Set .accept_shares False (or .reject_error) to reject, .authorize_ok False to refuse auth,
    or pass `script` to take over a connection completely."""

    def __init__(self, *, script: Handler | None = None, ssl_ctx: ssl.SSLContext | None = None):
        self.script = script
        self.ssl_ctx = ssl_ctx
        self.server: asyncio.Server | None = None
        self.port = 0
        self.conns: list[Conn] = []
        self.connected: asyncio.Queue[Conn] = asyncio.Queue()
        self.submits: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.authorize_ok = True
        self.accept_shares = True
        self.answer_shares = True  # False: a pool that swallows shares (dead or drowning)
        self.reject_error: list[Any] = [23, "Low difficulty share", None]
        self.difficulty = 2.0
        self.job_prefix = "j"
        self.extranonce1 = "f000000f"
        self.sessions: dict[str, str] = {}  # session id -> extranonce1
        self._count = 0
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        scheme = "stratum+ssl" if self.ssl_ctx else "stratum+tcp"
        return f"{scheme}://127.0.0.1:{self.port}"

    async def start(self, port: int = 0) -> FakePool:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", port, ssl=self.ssl_ctx)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def kill(self) -> None:
        """Die like a crashed pool: stop listening, drop every connection at once."""
        if self.server is not None:
            self.server.close()
        for c in self.conns:
            with contextlib.suppress(Exception):
                c.writer.transport.abort()
        for t in list(self._tasks):
            t.cancel()
        if self.server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)
        self.conns.clear()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Conn(reader, writer)
        self.conns.append(conn)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connected.put_nowait(conn)
        try:
            if self.script is not None:
                pump = asyncio.create_task(self._pump(conn))
                try:
                    await self.script(conn)
                    await pump
                finally:
                    pump.cancel()
            else:
                await self._serve(conn)
        except (asyncio.CancelledError, ConnectionError, OSError):
            pass
        finally:
            self._tasks.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    async def _pump(self, conn: Conn) -> None:
        while True:
            line = await conn.reader.readline()
            if not line:
                return
            with contextlib.suppress(ValueError):
                msg = json.loads(line)
                conn.all.append(msg)
                conn.received.put_nowait(msg)

    async def _serve(self, conn: Conn) -> None:
        while True:
            line = await conn.reader.readline()
            if not line:
                return
            msg = json.loads(line)
            conn.all.append(msg)
            conn.received.put_nowait(msg)
            method, mid, params = msg.get("method"), msg.get("id"), msg.get("params", [])
            if method == "mining.subscribe":
                en1 = self.sessions.get(params[1]) if len(params) > 1 else None
                if en1 is None:
                    self._count += 1
                    en1 = f"{self._count:08x}" if self.extranonce1 == "auto" else self.extranonce1
                sid = f"s{en1}"
                self.sessions[sid] = en1
                conn.send({"id": mid, "result": [[["mining.notify", sid]], en1, 4], "error": None})
            elif method == "mining.authorize":
                conn.send({"id": mid, "result": self.authorize_ok, "error": None})
                if self.authorize_ok:
                    conn.send(set_difficulty(self.difficulty))
                    conn.send(notify(f"{self.job_prefix}1"))
            elif method == "mining.submit":
                self.submits.put_nowait(msg)
                if not self.answer_shares:
                    pass
                elif self.accept_shares:
                    conn.send({"id": mid, "result": True, "error": None})
                else:
                    conn.send({"id": mid, "result": None, "error": self.reject_error})
            elif mid is not None:
                conn.send({"id": mid, "result": True, "error": None})
            await conn.writer.drain()


async def close_pools(*pools: FakePool) -> None:
    for p in pools:
        await p.kill()

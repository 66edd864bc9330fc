"""A tiny scripted Stratum V1 client for driving the emulated pool in tests (not the agent's)."""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

from agent import scrypt
from agent.mining.job import Job
from agent.stratum.protocol import Notify


def notify_from_params(p: list[Any]) -> Notify:
    return Notify(
        job_id=p[0],
        prevhash=bytes.fromhex(p[1]),
        coinb1=bytes.fromhex(p[2]),
        coinb2=bytes.fromhex(p[3]),
        merkle_branch=tuple(bytes.fromhex(b) for b in p[4]),
        version=int(p[5], 16),
        nbits=int(p[6], 16),
        ntime=int(p[7], 16),
        clean_jobs=bool(p[8]),
    )


class MiniClient:
    def __init__(self) -> None:
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self._ids = itertools.count(1)
        self._pending: dict[Any, asyncio.Future[dict[str, Any]]] = {}
        self.pushes: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.extranonce1 = b""
        self.extranonce2_size = 4
        self.difficulty = 1.0
        self.job: Job | None = None
        self.closed = asyncio.Event()

    async def connect(self, port: int) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", port)
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.reader is not None
        try:
            while line := await self.reader.readline():
                msg = json.loads(line)
                if msg.get("method"):  # dispatch by method first, then by id
                    await self.pushes.put(msg)
                elif isinstance(msg.get("id"), int) and msg["id"] in self._pending:
                    self._pending.pop(msg["id"]).set_result(msg)
        finally:
            self.closed.set()

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self._task is not None:
            self._task.cancel()

    async def raw(self, data: bytes) -> None:
        assert self.writer is not None
        self.writer.write(data)
        await self.writer.drain()

    async def call(self, method: str, params: list[Any], timeout: float = 10) -> dict[str, Any]:
        msg_id = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = fut
        line = json.dumps({"id": msg_id, "method": method, "params": params}) + "\n"
        await self.raw(line.encode())
        return await asyncio.wait_for(fut, timeout)

    async def subscribe(self, resume: str | None = None) -> dict[str, Any]:
        r = await self.call("mining.subscribe", ["mini/1"] + ([resume] if resume else []))
        if r["result"]:
            self.extranonce1 = bytes.fromhex(r["result"][1])
            self.extranonce2_size = r["result"][2]
        return r

    async def push(self, method: str, timeout: float = 10) -> dict[str, Any]:
        """The next server push of this method; applies set_difficulty/set_extranonce/notify."""
        while True:
            msg = await asyncio.wait_for(self.pushes.get(), timeout)
            self.apply(msg)
            if msg["method"] == method:
                return msg

    def apply(self, msg: dict[str, Any]) -> None:
        m, p = msg["method"], msg["params"]
        if m == "mining.set_difficulty":
            self.difficulty = p[0]  # latched at the next notify
        elif m == "mining.set_extranonce":
            self.extranonce1, self.extranonce2_size = bytes.fromhex(p[0]), p[1]
        elif m == "mining.notify":
            self.job = Job(
                "pool", notify_from_params(p), self.difficulty, self.extranonce1,
                self.extranonce2_size,
            )  # fmt: skip

    def find(
        self, en2: bytes, start: int = 0, want: bool = True, job: Job | None = None
    ) -> tuple[int, bytes]:
        """A nonce whose hash meets (want=True) or misses (False) the job's share target."""
        job = job or self.job
        assert job is not None
        header = job.header80(en2, 0)
        if want:
            for chunk in range(start, start + (1 << 16), 64):  # scan hashes its whole range
                found = scrypt.scan(header, chunk, 64, job.share_target)
                if found:
                    return found[0]
            raise AssertionError("no share in 65536 nonces")
        for nonce in range(start, start + 1000):
            h = scrypt.pow_hash(header[:76] + nonce.to_bytes(4, "little"))
            if int.from_bytes(h, "little") > job.share_target:
                return nonce, h
        raise AssertionError("every nonce met the target")

    def submit_params(self, worker: str, en2: bytes, nonce: int, job: Job | None = None) -> list:
        job = job or self.job
        assert job is not None
        return job.submit_params(worker, en2, job.notify.ntime, nonce)

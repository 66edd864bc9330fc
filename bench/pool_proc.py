"""The bench's local pools in a process of their own, driven over stdin/stdout.

A pool on a thread of the bench's process shares the GIL with the agent under test: the agent,
woken by the notify the pool just wrote, waits for the pool thread's next switch interval.
A real pool is another machine, so the latency bench runs its pools here.

Protocol, one JSON object per line. In: {"cmd": "new_block" | "publish" | "stop" | "restart" |
"stamps", "i": pool index, "id": request id, "ack": false to get no answer}. Out: {"ready":
[ports]} once, {"id": n, "ok": true} per request (unless "ack" is false), and for "stamps"
{"sent_all": [[port, job_id, t], ...]} before its answer: the time every mining.notify was
written since the last "stamps" (t: time.perf_counter, CLOCK_MONOTONIC on Linux, the same clock
in every process). The stamps are kept here until asked for, and notifies are driven without an
answer, because a line arriving in the bench's process as a notify reaches the agent wakes a
thread there that takes the GIL from the agent at that very moment."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.emulator import pool as pool_mod
from agent.emulator.pool import FixedDifficulty, StratumPool


def _out(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def main(count: int, difficulty: float) -> None:
    send = pool_mod.Session.send
    stamps: list[list[Any]] = []

    async def stamped(self: pool_mod.Session, obj: dict[str, Any]) -> None:
        if obj.get("method") == "mining.notify":
            stamps.append([self.pool.port, str(obj["params"][0]), time.perf_counter()])
        await send(self, obj)

    pool_mod.Session.send = stamped  # type: ignore[method-assign]
    pools: list[StratumPool] = []
    for _ in range(count):
        p = StratumPool(policy=FixedDifficulty(difficulty))
        await p.start()
        pools.append(p)
    ports = [p.port for p in pools]
    _out({"ready": ports})
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        req = json.loads(line)
        pool = pools[req["i"]]
        if req["cmd"] == "new_block":
            await pool.new_block()
        elif req["cmd"] == "publish":
            await pool.publish(pool.source.template(pool, False), clean=False)
        elif req["cmd"] == "stop":
            await pool.stop()
        elif req["cmd"] == "restart":
            pools[req["i"]] = StratumPool(port=ports[req["i"]], policy=FixedDifficulty(difficulty))
            await pools[req["i"]].start()
        elif req["cmd"] == "stamps":
            _out({"sent_all": stamps})
            stamps = []
        if req.get("ack", True):
            _out({"id": req["id"], "ok": True})
    for p in pools:
        await p.stop()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), float(sys.argv[2])))

"""`doge-agent demo`: the whole agent on the emulated L3+ (or the CPU board) mining against the
local Stratum pool, with its status page, JSON API and cgminer API on loopback.

Everything lives in a temporary state folder that is removed afterwards; nothing listens beyond
127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import socket
import tempfile
from typing import TextIO

from agent import defaults as D
from agent.config import loads
from agent.emulator.pool import FixedDifficulty, StratumPool
from agent.sdnotify import Notifier
from agent.service import MiningService

DEMO_PASSWORD = "demo"  # the owner password of the demo agent, shown to the user on purpose


def loopback_port(preferred: int) -> int:
    """`preferred` if nothing listens there on 127.0.0.1, else 0 (any free port)."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
        except OSError:
            return 0
    return preferred


def demo_config(state_dir: str, pool_port: int, board: str, threads: int) -> str:
    http = loopback_port(D.DEMO_HTTP_PORT)
    cgminer = loopback_port(D.DEMO_CGMINER_PORT)
    hashing = (
        f'kind = "cpu"\nthreads = {threads}\nticket_difficulty = {D.DEMO_CPU_TICKET_DIFFICULTY}\n'
        if board == "cpu"
        else 'kind = "emulated"\nchains = 4\nchips_per_chain = 72\n'
    )
    return (
        f'[agent]\nstate_dir = "{state_dir}"\nenvironment = "development"\n'
        f'[[pools]]\nurl = "stratum+tcp://127.0.0.1:{pool_port}"\nuser = "demo.rig1"\n'
        f"[board]\n{hashing}"
        f'[api]\nhttp_listen = "127.0.0.1:{http}"\ncgminer_listen = "127.0.0.1:{cgminer}"\n'
        f'password = "{DEMO_PASSWORD}"\n'
    )


def status_line(snap: dict) -> str:
    s = snap["shares"]
    temps = [c["temp_c"] for c in snap["chains"] if c.get("temp_c") is not None]
    hottest = f"{max(temps):.1f} °C" if temps else "n/a"
    chips = "/".join(str(c["chips"]) for c in snap["chains"]) or "-"
    return (
        f"  {snap['uptime_s']:6.0f} s  {snap['hashrate_hs']:>10,.0f} H/s  chips {chips}  "
        f"hottest {hottest}  nonces {snap['nonces']}: accepted {s['accepted']}, "
        f"below target {s['below_target']}, stale {s['stale']}, hw {s['hw_errors']}"
    )


async def run_demo(seconds: float, board: str, threads: int, out: TextIO) -> int:
    """Mines for `seconds` (0: until Ctrl-C); returns the exit code."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    state_dir = tempfile.mkdtemp(prefix="doge-agent-demo-")
    pool = StratumPool(policy=FixedDifficulty(D.DEMO_POOL_DIFFICULTY))
    await pool.start()
    conf = loads(demo_config(state_dir, pool.port, board, threads), env={})
    service = MiningService(conf, notifier=Notifier({}))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runner = asyncio.create_task(service.run(stop))
    try:
        ready = asyncio.create_task(service.ready.wait())
        await asyncio.wait({ready, runner}, return_when=asyncio.FIRST_COMPLETED)
        if not service.ready.is_set():
            print("demo: the agent did not start (see the log above)", file=out)
            return await runner or 1
        surfaces = service.surfaces
        assert surfaces is not None and surfaces.web is not None and surfaces.cgminer is not None
        what = "the CPU board" if board == "cpu" else "the emulated L3+ (4 chains x 72 BM1485)"
        print(f"\nmining on {what} against the local pool on 127.0.0.1:{pool.port}", file=out)
        print(f"  status page:  http://127.0.0.1:{surfaces.web.port}/", file=out)
        print(f"  JSON:         http://127.0.0.1:{surfaces.web.port}/api/status", file=out)
        print(f"  metrics:      http://127.0.0.1:{surfaces.web.port}/metrics", file=out)
        print(f"  cgminer API:  127.0.0.1:{surfaces.cgminer.port}", file=out)
        print(f"  controls:     POST /api/control/pause|resume|locate as root:{DEMO_PASSWORD}",
              file=out)  # fmt: skip
        until = "Ctrl-C" if not seconds else f"{seconds:g} s"
        print(f"running until {until}\n", file=out, flush=True)
        end = loop.time() + seconds if seconds else None
        while not stop.is_set() and (end is None or loop.time() < end):
            wait_s = D.DEMO_STATUS_S if end is None else min(D.DEMO_STATUS_S, end - loop.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, wait_s))
            print(status_line(service.state.snapshot()), file=out, flush=True)
        stop.set()
        code = await runner
        snap = service.state.snapshot()
        s = snap["shares"]
        print(
            f"\nstopped: {snap['nonces']} nonces, {s['accepted']} shares accepted by the pool "
            f"(pool counted {pool.stats.accepted}), {s['hw_errors']} HW errors",
            file=out,
        )
        if s["accepted"] == 0:
            print("warning: no share was accepted; run it longer", file=out)
            return 1
        return code
    finally:
        stop.set()
        if not runner.done():
            await runner
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await pool.stop()
        shutil.rmtree(state_dir, ignore_errors=True)

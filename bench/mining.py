"""`make bench`, mining section: the figures issues 4, 5, 6 and 9 ask of the mining path.

Everything runs on loopback against the local Stratum pool (agent.emulator.pool, in a process or
on a thread of the bench) and the emulated L3+ (4 chains x 72 BM1485 on pseudo-terminals) in a
process of its own (`doge-agent emulate --root DIR`), as the hash boards are outside the agent on
a real miner.
Nothing in the agent is changed: the time stamps come from wrappers the bench installs around
existing methods, in this process only.

* `ingest()`: BM1485 frames decoded per second and nonces ingested per second by the chain driver
  (decode, checks, scrypt verification, hand-off), on one core (the thread pinned to one CPU).
* `in_process()`: the agent (MiningService, attached to the emulator) on this process's loop, the
  pools in a process of their own (bench/pool_proc.py), load generators in spawned processes
  (bench/load.py); with 2+ CPUs the emulator, pools and load get one CPU, the agent the rest:
  notify -> work ready / written to all 4 chains, nonce -> submit; the same under good-request
  load (requests per second of /api/status and 4028) and under a flood of bad requests; failover
  from a killed primary pool to the backup.
* `agent_process()`: `doge-agent run -c FILE` in a subprocess: start-up to first share, RSS and CPU
  while mining, at the real nonce rate and 100x; the emulator's process measured beside it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import itertools
import json
import logging
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil

from agent import defaults as D
from agent.config import loads
from agent.emulator.pool import FixedDifficulty, StratumPool
from agent.emulator.server import EmulatorProcess
from agent.hardware import bm1485 as bm
from agent.hardware.chain import Chain, ChipStats
from agent.hardware.cpu import Nonce, Work
from agent.hardware.verifier import NonceVerifier
from agent.mining.shares import SharePath
from agent.mining.work import WorkSource
from agent.sdnotify import Notifier
from agent.service import MiningService
from agent.stratum.client import StratumClient
from agent.stratum.pools import PoolManager, PoolOptions
from bench import load

ROOT = Path(__file__).resolve().parent.parent
WAIT_S = 60.0
CLEAN_EVERY = 10  # of the bench's notifies, one in this many is a new block (clean job)

# targets from the issues
TARGET_WORK_P99_MS = 2.0  # issue 6: notify -> work written to all 4 chains, agent overhead
TARGET_FAILOVER_S = 1.0  # issue 4: shares flow to the backup
TARGET_RSS_MB = 40.0  # issue 6
TARGET_CPU_PCT = 3.0  # issue 6: of one core, at the real nonce rate
TARGET_FLOOD_RATIO = 2.0  # issue 9: notify -> work under a flood within 2x of idle
REAL_NONCES_PER_S = 30.0  # issue 5: an L3+ at the ticket the emulator models
EASIEST_TICKET_X = 32  # the 1/1024 ticket (1 nonce in 64 hashes) made at most this much easier


def pct(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of values, None if empty."""
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * len(s) + 0.5) - 1))]


def _ms(values: list[float]) -> dict[str, Any]:
    """p50 / p99 / max in milliseconds of values in seconds."""
    out: dict[str, Any] = {"n": len(values)}
    for name, q in (("p50_ms", 50.0), ("p99_ms", 99.0), ("max_ms", 100.0)):
        v = pct(values, q)
        out[name] = None if v is None else round(v * 1e3, 3)
    return out


def _status(ok: bool) -> str:
    return "PASS" if ok else "BELOW"


@contextlib.contextmanager
def _patched(owner: Any, name: str, make: Callable[[Any], Any]) -> Iterator[None]:
    """owner.name = make(original) for the duration; always put back."""
    original = getattr(owner, name)
    setattr(owner, name, make(original))
    try:
        yield
    finally:
        setattr(owner, name, original)


# ------------------------------------------------------------------------------ ingest


def stolen(cpus: set[int] | None = None) -> tuple[int, int]:
    """(steal, all) jiffies so far of these CPUs (all of them: None) from /proc/stat: time the
    hypervisor ran something else while this VM wanted the CPU. (0, 0) where there is none."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return 0, 0
    steal = total = 0
    for line in lines:
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu" or len(fields) < 8:
            continue
        if cpus is not None and int(name[3:]) not in cpus:
            continue
        values = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
        steal += values[7]
        total += sum(values)
    return steal, total


def steal_pct(before: tuple[int, int], after: tuple[int, int]) -> float | None:
    """Share of the CPUs' time stolen between two stolen() readings, in %."""
    d_total = after[1] - before[1]
    return round(100 * (after[0] - before[0]) / d_total, 2) if d_total > 0 else None


def _pin_one_cpu() -> tuple[set[int] | None, int | None]:
    """Pin the calling thread (and the threads it starts) to one CPU; returns what to restore."""
    try:
        before = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        return None, None
    cpu = max(before)
    os.sched_setaffinity(0, {cpu})
    return before, cpu


def split_cpus() -> tuple[set[int], set[int]] | None:
    """(the agent's CPUs, the hardware's CPU) on a machine with two or more: the emulated chips,
    the pools and the load generators stand for hardware and other machines, so they get a CPU
    of their own: they neither take the agent's nor preempt it when its writes wake them (a
    board's UARTs wake no process). None on one CPU: everything shares it."""
    try:
        cpus = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        return None
    if len(cpus) < 2:
        return None
    hw = max(cpus)
    return cpus - {hw}, {hw}


def _frames(n: int, chips: int, interval: int) -> tuple[bytes, int]:
    """n distinct nonce frames over `chips` chips, 4 work slots; returns (stream, frame count)."""
    out = bytearray()
    for i in range(n):
        chip = i % chips
        core = bm_cores[(i // chips) % len(bm_cores)]
        counter = i // (chips * len(bm_cores))
        nonce = core << 28 | (chip * interval) << 20 | counter
        out += bm.nonce_response(nonce, i & 3)
    return bytes(out), n


bm_cores = (0, 1, 2, 3, 4, 5, 8, 9, 10, 11, 12, 13)


def ingest(seconds: float = 3.0, nonces: int = 20_000) -> dict[str, Any]:
    """Frames decoded per second (StreamDecoder alone) and nonces ingested per second (the chain
    driver: decode, chip / work / duplicate checks, scrypt verification of every nonce, on_nonce),
    on one core."""
    before, cpu = _pin_one_cpu()
    try:
        chips, interval = D.CHIPS_PER_CHAIN, 256 // D.CHIPS_PER_CHAIN
        stream, n_frames = _frames(nonces, chips, interval)
        # decoder alone, reads of 4096 bytes as the driver does
        chunks = [stream[i:i + 4096] for i in range(0, len(stream), 4096)]
        decoded, t0 = 0, time.perf_counter()
        while True:
            dec = bm.StreamDecoder()
            for c in chunks:
                decoded += len(dec.feed(c))
            if time.perf_counter() - t0 >= seconds:
                break
        frames_per_s = decoded / (time.perf_counter() - t0)
        ingest_per_s, delivered = asyncio.run(_chain_ingest(chunks, n_frames, chips, interval))
    finally:
        if before is not None:
            os.sched_setaffinity(0, before)
    line_frames = D.BM1485_BAUD / 10 / 7  # 8N1 UART, 7-byte nonce frames
    return {
        "pinned_cpu": cpu,
        "frames_decoded_per_s": round(frames_per_s),
        "nonces_ingested_per_s": round(ingest_per_s),
        "nonces_delivered": delivered,
        "uart_line_rate_4_chains_frames_per_s": round(4 * line_frames),
        "decode_x_line_rate": round(frames_per_s / (4 * line_frames), 1),
        "ingest_x_real_rate": round(ingest_per_s / REAL_NONCES_PER_S, 1),
        "ingest_x_100x_rate": round(ingest_per_s / (100 * REAL_NONCES_PER_S), 2),
        "note": "decode: StreamDecoder.feed in 4096-byte reads; ingest: Chain._after_decode + "
                "its NonceVerifier (pow_hash of every nonce on one C thread) to on_nonce",
    }  # fmt: skip


async def _chain_ingest(chunks: list[bytes], n: int, chips: int, interval: int
                        ) -> tuple[float, int]:  # fmt: skip
    loop = asyncio.get_running_loop()
    got = [0]
    done = asyncio.Event()

    def on_nonce(_n: Nonce) -> None:
        got[0] += 1
        if got[0] >= n:
            done.set()

    chain = Chain("/dev/null", 0, expected_chips=chips, addr_interval=interval, on_nonce=on_nonce)
    chain.ticket_target = (1 << 256) - 1  # every frame's nonce passes: each is still hashed
    chain._loop = loop
    chain.chips = {i: ChipStats(i, i * interval) for i in range(chips)}
    header = bytes(76)
    for slot in range(4):
        chain._slots[slot] = Work(slot, header[:75] + bytes([slot]), (1 << 256) - 1)
        chain._live.append(slot)
    # its hashing thread is created here, pinned: the same single CPU
    chain._verifier = NonceVerifier(loop, chain._verified)
    t0 = time.perf_counter()
    for c in chunks:
        before = chain.decoder.crc_errors
        chain._after_decode(before, chain.decoder.feed(c))
        await asyncio.sleep(0)
    await asyncio.wait_for(done.wait(), WAIT_S)
    wall = time.perf_counter() - t0
    chain._verifier.close()
    return got[0] / wall, got[0]


# ------------------------------------------------------------------------------ in process


class PoolThread:
    """Two local pools (primary, backup) on their own event loop in a thread."""

    def __init__(self, difficulty: float) -> None:
        self.difficulty = difficulty
        self.loop = asyncio.new_event_loop()
        self.pools: list[StratumPool] = []
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def call(self, coro: Any, timeout: float = WAIT_S) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def acall(self, coro: Any) -> Any:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def start(self, count: int = 1) -> None:
        self.thread.start()
        for _ in range(count):
            self.pools.append(self.call(self._new(0)))

    async def _new(self, port: int) -> StratumPool:
        p = StratumPool(port=port, policy=FixedDifficulty(self.difficulty))
        await p.start()
        return p

    async def restart(self, i: int, port: int) -> None:
        self.pools[i] = await self.acall(self._new(port))

    def stop(self) -> None:
        for p in self.pools:
            with contextlib.suppress(Exception):
                self.call(p.stop(), 10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class PoolProcess:
    """The two local pools in bench/pool_proc.py, a process of their own: a pool on a thread of
    this process would share the GIL with the agent under test (a real pool is another machine).
    Each notify's send time comes back on the child's stdout when asked for ("stamps", after
    the runs), not as it is sent (perf_counter is CLOCK_MONOTONIC, one clock for every
    process)."""

    def __init__(self, difficulty: float) -> None:
        self.difficulty = difficulty
        self.ports: list[int] = []
        self.sent: dict[tuple[int, str], float] = {}  # (port, job id) -> t
        self.proc: subprocess.Popen[str] | None = None
        self._ids = itertools.count(1)
        self._done: dict[int, threading.Event] = {}
        self._lock = threading.Lock()
        self._reader: threading.Thread | None = None

    def start(self, count: int, cpus: set[int] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "pool_proc.py"), str(count),
             repr(self.difficulty)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
        )  # fmt: skip
        if cpus is not None:
            os.sched_setaffinity(self.proc.pid, cpus)
        assert self.proc.stdout is not None
        first = json.loads(self.proc.stdout.readline())
        self.ports = first["ready"]
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            msg = json.loads(line)
            if "sent_all" in msg:
                for port, job_id, t in msg["sent_all"]:
                    self.sent[(port, job_id)] = t
            elif "id" in msg:
                with self._lock:
                    done = self._done.pop(msg["id"], None)
                if done is not None:
                    done.set()

    async def command(self, cmd: str, i: int = 0, ack: bool = True) -> None:
        """Run `cmd` in the pool process; with ack=False, only send it (a notify: nothing in
        this process may wake as it reaches the agent)."""
        assert self.proc is not None and self.proc.stdin is not None
        n = next(self._ids)
        if not ack:
            self.proc.stdin.write(json.dumps({"cmd": cmd, "i": i, "id": n, "ack": False}) + "\n")
            self.proc.stdin.flush()
            return
        done = threading.Event()
        with self._lock:
            self._done[n] = done
        self.proc.stdin.write(json.dumps({"cmd": cmd, "i": i, "id": n}) + "\n")
        self.proc.stdin.flush()
        if not await asyncio.to_thread(done.wait, WAIT_S):
            raise RuntimeError(f"the pool process did not answer {cmd}")

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


class Probe:
    """Time stamps from wrapped methods. perf_counter is one monotonic clock for all threads."""

    def __init__(self) -> None:
        self.phase = "warmup"
        self.notify_sent: dict[tuple[int, str], float] = {}  # (pool port, job id) -> t sent
        self.ready_t = 0.0
        self.jobs: list[dict[str, Any]] = []  # one per job the agent dispatched
        self.decoded: dict[int, float] = {}  # nonce -> frame decoded (Chain._nonce)
        self.on_nonce: dict[int, float] = {}  # nonce -> SharePath.on_nonce
        self.handed: dict[int, float] = {}  # nonce -> PoolManager.submit
        self.submits: list[dict[str, Any]] = []
        self.pool_submits: list[tuple[str, float]] = []  # (pool label, t) PoolManager.submit
        self.verified_log: list[float] = []  # SharePath.on_nonce times (live work only)

    @contextlib.contextmanager
    def install(self, service: MiningService) -> Iterator[None]:
        probe = self

        def on_job_ws(orig: Any) -> Any:
            def wrapped(ws: WorkSource, *a: Any, **k: Any) -> Any:
                out = orig(ws, *a, **k)
                probe.ready_t = time.perf_counter()
                return out
            return wrapped

        def chain_nonce(orig: Any) -> Any:
            def wrapped(chain: Chain, r: bm.NonceResponse) -> None:
                probe.decoded[r.nonce] = time.perf_counter()
                orig(chain, r)
            return wrapped

        def share_nonce(orig: Any) -> Any:
            def wrapped(sp: SharePath, found: Nonce) -> None:
                probe.on_nonce[found.nonce] = t = time.perf_counter()
                probe.verified_log.append(t)
                del probe.verified_log[:-10_000]
                orig(sp, found)
            return wrapped

        def pm_submit(orig: Any) -> Any:
            def wrapped(pm: PoolManager, job: Any, e2: bytes, ntime: int, nonce: int) -> Any:
                t = time.perf_counter()
                probe.handed[nonce] = t
                probe.pool_submits.append((job.pool, t))
                return orig(pm, job, e2, ntime, nonce)
            return wrapped

        def client_submit(orig: Any) -> Any:
            async def wrapped(c: StratumClient, job: Any, e2: bytes, ntime: int, nonce: int
                              ) -> Any:  # fmt: skip
                t = time.perf_counter()
                d, o, h = (probe.decoded.pop(nonce, None), probe.on_nonce.pop(nonce, None),
                           probe.handed.pop(nonce, None))  # fmt: skip
                if d is not None and o is not None and h is not None:
                    probe.submits.append({"phase": probe.phase, "decoded_to_sent": t - d,
                                          "on_nonce_to_sent": t - o, "decoded_to_handed": h - d})
                return await orig(c, job, e2, ntime, nonce)
            return wrapped

        orig_on_job = service._on_job

        def on_job(job: Any) -> None:
            t_in = time.perf_counter()
            orig_on_job(job)
            t_out = time.perf_counter()
            # the send time is looked up later: from the pool process it may land after this
            key = (int(job.pool.rsplit(":", 1)[1]), job.notify.job_id)
            probe.jobs.append({"phase": probe.phase, "pool": job.pool, "t_in": t_in,
                               "t_out": t_out, "ready": probe.ready_t, "key": key})
            if len(probe.decoded) > 50_000:  # nonces never submitted (below target, stale)
                probe.decoded.clear()
                probe.on_nonce.clear()
                probe.handed.clear()

        service._on_job = on_job  # type: ignore[method-assign]
        with contextlib.ExitStack() as stack:
            stack.enter_context(_patched(WorkSource, "on_job", on_job_ws))
            stack.enter_context(_patched(Chain, "_nonce", chain_nonce))
            stack.enter_context(_patched(SharePath, "on_nonce", share_nonce))
            stack.enter_context(_patched(PoolManager, "submit", pm_submit))
            stack.enter_context(_patched(StratumClient, "submit", client_submit))
            yield

    def latency(self, phase: str) -> dict[str, Any]:
        for j in self.jobs:
            j.setdefault("sent", self.notify_sent.get(j["key"]))
        jobs = [j for j in self.jobs if j["phase"] == phase and j["sent"] is not None]
        subs = [s for s in self.submits if s["phase"] == phase]
        return {
            "notify_to_work_ready": _ms([j["ready"] - j["sent"] for j in jobs]),
            "notify_to_work_written_4_chains": _ms([j["t_out"] - j["sent"] for j in jobs]),
            "agent_on_job_to_written": _ms([j["t_out"] - j["t_in"] for j in jobs]),
            "nonce_to_submit_sent": _ms([s["decoded_to_sent"] for s in subs]),
            "nonce_verified_to_submit_sent": _ms([s["on_nonce_to_sent"] for s in subs]),
        }


async def _notifies(pools: PoolProcess, seconds: float, interval_s: float) -> int:
    """A notify every ~interval_s from the primary pool for `seconds`: a new block (clean job)
    every CLEAN_EVERY-th, updated jobs in between (as a pool sends between blocks; a clean job
    every interval would make every share in flight stale)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    n = 0
    while loop.time() < end:
        await pools.command("new_block" if n % CLEAN_EVERY == 0 else "publish", 0, ack=False)
        n += 1
        await asyncio.sleep(interval_s * (0.8 + 0.4 * (n * 0.618 % 1)))  # no aliasing with ticks
    return n


def _agent_conf(tmp: Path, urls: list[str], emulator_dir: Path, extra_board: str = "") -> str:
    pools = "".join(f'[[pools]]\nurl = "{u}"\nuser = "w.{i}"\n' for i, u in enumerate(urls))
    return (
        '[api]\nhttp_listen = "127.0.0.1:0"\ncgminer_listen = "127.0.0.1:0"\n'
        f'[agent]\nstate_dir = "{tmp}"\n' + pools
        + f'[board]\nkind = "emulated"\nemulator_dir = "{emulator_dir}"\n' + extra_board
    )


async def _wait_for(cond: Callable[[], bool], timeout: float) -> bool:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            return False
        await asyncio.sleep(0.02)  # polling a condition against a deadline
    return True


async def _in_process(quick: bool) -> dict[str, Any]:
    phase_s = 2.0 if quick else 15.0
    # idle and flood (compared with it): ~240 notifies each; a p99 of 60 is just the worst one
    idle_s = 2.0 if quick else 60.0
    rps_s = 1.0 if quick else 5.0
    failovers = 1 if quick else 3
    interval = 0.25  # a clean job every 0.25 s: still far more often than a real pool
    ctx = multiprocessing.get_context("spawn")
    split = split_cpus()
    pin: dict[str, Any] = {} if split is None else {
        "initializer": os.sched_setaffinity, "initargs": (0, split[1])}  # fmt: skip
    loadgen = concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx, **pin)
    pools = PoolProcess(1 / 256)
    pools.start(2, None if split is None else split[1])
    loop = asyncio.get_running_loop()
    out: dict[str, Any] = {}
    before = os.sched_getaffinity(0)
    with tempfile.TemporaryDirectory(prefix="doge-bench-") as tmp, \
            EmulatorProcess(Path(tmp) / "board") as emu:
        if split is not None:
            emu.pin(split[1])
            os.sched_setaffinity(0, split[0])  # this thread runs the agent
        out["cpus"] = None if split is None else {"agent": sorted(split[0]),
                                                  "hardware_pools_load": sorted(split[1])}
        urls = [f"stratum+tcp://127.0.0.1:{port}" for port in pools.ports]
        conf = loads(_agent_conf(Path(tmp), urls, emu.root))
        service = MiningService(conf, notifier=Notifier({}),
                                pool_options=PoolOptions(stability_s=0.5))  # fmt: skip
        probe = Probe()
        probe.notify_sent = pools.sent  # filled when the stamps are asked for, at the end
        stop = asyncio.Event()
        try:
            with probe.install(service):
                runner = asyncio.create_task(service.run(stop))
                warm = [loop.run_in_executor(loadgen, time.sleep, 0) for _ in range(2)]
                await asyncio.wait_for(service.ready.wait(), WAIT_S)
                await asyncio.gather(*warm)
                assert service.shares is not None and service.surfaces is not None
                web = service.surfaces.web.port  # type: ignore[union-attr]
                api = service.surfaces.cgminer.port  # type: ignore[union-attr]
                shares = service.shares
                await _wait_for(lambda: shares.counts["accepted"] >= 3, WAIT_S)

                async def phase(name: str, *load_calls: Callable[[], Any]) -> list[Any]:
                    probe.phase = name
                    acc = shares.counts["accepted"]
                    st0 = stolen(None if split is None else split[0])
                    futs = [loop.run_in_executor(loadgen, c) for c in load_calls]
                    seconds = (idle_s if name == "idle" else phase_s) if not load_calls else 0.2
                    await _notifies(pools, seconds, interval)
                    while not all(f.done() for f in futs):
                        await _notifies(pools, interval * 4, interval)
                    results = [await f for f in futs]
                    out.setdefault("shares_accepted", {})[name] = shares.counts["accepted"] - acc
                    out.setdefault("steal_pct_agent_cpu", {})[name] = steal_pct(
                        st0, stolen(None if split is None else split[0]))
                    return results

                await phase("idle")
                http_rps = await phase("http_load", functools.partial(
                    load.hammer, web, "http", rps_s))
                api_rps = await phase("cgminer_load", functools.partial(
                    load.hammer, api, "cgminer", rps_s))
                flood = await phase("flood", functools.partial(
                    load.flood, web, api, idle_s, 64), functools.partial(
                    load.flood, web, api, idle_s, 64))
                probe.phase = "after"
                out["failover"] = await _failover(service, pools, probe, failovers)
                await pools.command("stamps")  # every notify's send time, now
                out["latency"] = {p: probe.latency(p)
                                  for p in ("idle", "http_load", "cgminer_load", "flood")}
                out["surfaces"] = {"status_api": http_rps[0], "cgminer_4028": api_rps[0],
                                   "flood": flood}  # fmt: skip
                out["counts"] = dict(service.shares.counts)
                out["nonces"] = service.state.snapshot()["nonces"]
        finally:
            stop.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(runner, WAIT_S)
            pools.stop()
            loadgen.shutdown(cancel_futures=True)
            os.sched_setaffinity(0, before)
    return out


async def _failover(service: MiningService, pools: PoolProcess, probe: Probe, reps: int
                    ) -> dict[str, Any]:  # fmt: skip
    """Kill the primary: time to the backup's work on the chains, and to the first share
    submitted to the backup; then the primary comes back and the agent fails back."""
    work_s: list[float] = []
    share_s: list[float] = []
    nonce_s: list[float] = []
    failback_ok = 0
    for _ in range(reps):
        pm = service.pools
        assert pm is not None
        primary = pm.active or ""
        if f":{pools.ports[0]}" not in primary:
            await _wait_for(lambda: f":{pools.ports[0]}" in (service.pools.active or ""),
                            30)  # type: ignore[union-attr]
            primary = service.pools.active or ""  # type: ignore[union-attr]
        n_jobs, n_subs = len(probe.jobs), len(probe.pool_submits)
        t_kill = time.perf_counter()
        await pools.command("stop", 0)

        def switched(primary: str = primary, n_jobs: int = n_jobs) -> bool:
            return any(j["pool"] != primary for j in probe.jobs[n_jobs:])

        def shared(primary: str = primary, n_subs: int = n_subs) -> bool:
            return any(p != primary for p, _ in probe.pool_submits[n_subs:])

        def back(primary: str = primary) -> bool:
            return (service.pools.active or "") == primary  # type: ignore[union-attr]

        if await _wait_for(switched, 10):
            work_s.append(next(j["t_out"] for j in probe.jobs[n_jobs:]
                               if j["pool"] != primary) - t_kill)  # fmt: skip
        if work_s:  # the first nonce of live (the backup's) work through the chain driver
            switch_t = t_kill + work_s[-1]

            def first_nonce(t: float = switch_t) -> float | None:
                return next((x for x in probe.verified_log if x > t), None)

            if await _wait_for(lambda: first_nonce() is not None, 10):
                nonce_s.append((first_nonce() or t_kill) - t_kill)
        if await _wait_for(shared, 10):
            share_s.append(next(t for p, t in probe.pool_submits[n_subs:]
                                if p != primary) - t_kill)  # fmt: skip
        await pools.command("restart", 0)
        if await _wait_for(back, 30):
            failback_ok += 1
    worst = max(share_s) if share_s else None
    return {
        "repetitions": reps,
        "kill_to_backup_work_written_s": [round(x, 4) for x in work_s],
        "kill_to_first_nonce_of_backup_work_s": [round(x, 4) for x in nonce_s],
        "kill_to_first_share_sent_to_backup_s": [round(x, 4) for x in share_s],
        "failed_back_to_primary": failback_ok,
        "worst_s": None if worst is None else round(worst, 4),
        "target_s": TARGET_FAILOVER_S,
        "status": _status(worst is not None and len(share_s) == reps
                          and worst < TARGET_FAILOVER_S),
    }  # fmt: skip


def in_process(quick: bool = False) -> dict[str, Any]:
    agent_log = logging.getLogger("agent")
    level = agent_log.level
    agent_log.setLevel(logging.WARNING)  # the agent's info lines would drown the bench's output
    try:
        return asyncio.run(_in_process(quick))
    finally:
        agent_log.setLevel(level)


# ------------------------------------------------------------------------------ subprocess


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def agent_env() -> dict[str, str]:
    """This environment for a `doge-agent run` child: no DOGE_AGENT overrides, no systemd
    notify/watchdog variables of ours, this checkout importable."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DOGE_AGENT", "NOTIFY_", "WATCHDOG_"))}  # fmt: skip
    env["PYTHONPATH"] = str(ROOT)
    return env


def status_snapshot(port: int) -> dict[str, Any]:
    """GET /api/status of an agent on 127.0.0.1:port."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/api/status")
        return json.loads(conn.getresponse().read())  # type: ignore[no-any-return]
    finally:
        conn.close()


def agent_process(rate_scale: float = 1.0, settle_s: float = 5.0, seconds: float = 20.0
                  ) -> dict[str, Any]:  # fmt: skip
    """`doge-agent run -c FILE` in a subprocess mining the emulated L3+, which runs in a process
    of its own (`doge-agent emulate --root`, hardware on a real board): start-up to first share,
    then the agent's RSS and CPU over `seconds`, the emulator's beside them. At rate_scale k the
    emulated chips report k x the nonces; their ticket is up to 32 x easier (1 nonce in 2 hashes:
    easier would make every hash a nonce and cap the rate), so that the emulator hashes only
    k / 32 x more than at 1x while the agent verifies k x the nonces."""
    pools = PoolThread(1 / 64)
    pools.start(1)
    web, api = free_port(), free_port()
    td = D.EMULATED_TICKET_DIFFICULTY / min(rate_scale, EASIEST_TICKET_X)
    try:
        with tempfile.TemporaryDirectory(prefix="doge-bench-") as tmp, EmulatorProcess(
            Path(tmp) / "board", "--rate-scale", repr(rate_scale), "--difficulty", repr(td)
        ) as emu:
            text = _agent_conf(Path(tmp), [f"stratum+tcp://127.0.0.1:{pools.pools[0].port}"],
                               emu.root, f"ticket_difficulty = {td!r}\n")
            text = text.replace('"127.0.0.1:0"\ncgminer', f'"127.0.0.1:{web}"\ncgminer', 1)
            text = text.replace('cgminer_listen = "127.0.0.1:0"',
                                f'cgminer_listen = "127.0.0.1:{api}"')
            conf = Path(tmp) / "agent.toml"
            conf.write_text(text)
            split = split_cpus()
            if split is not None:
                emu.pin(split[1])
            return _measure_process(conf, agent_env(), emu, web, settle_s, seconds, rate_scale,
                                    split)  # fmt: skip
    finally:
        pools.stop()


def _measure_process(conf: Path, env: dict[str, str], emu: EmulatorProcess, web: int,
                     settle_s: float, seconds: float, rate_scale: float,
                     split: tuple[set[int], set[int]] | None) -> dict[str, Any]:  # fmt: skip
    marks: dict[str, float] = {}
    log_tail: list[str] = []
    t_start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "-c", str(conf)],
                            stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    if split is not None:  # before it starts threads: they inherit it
        os.sched_setaffinity(proc.pid, split[0])

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            t = time.perf_counter()
            log_tail.append(line)
            del log_tail[:-50]
            if "mining on" in line:
                marks.setdefault("ready", t)
            if "first share accepted" in line:
                marks.setdefault("first_share", t)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        end = time.perf_counter() + WAIT_S
        while "first_share" not in marks and time.perf_counter() < end and proc.poll() is None:
            time.sleep(0.01)
        if "first_share" not in marks:
            raise RuntimeError("the agent found no share:\n" + "".join(log_tail))
        time.sleep(settle_s)
        agent, emulator = psutil.Process(proc.pid), psutil.Process(emu.pid)

        def cpu(p: psutil.Process) -> float:
            t = p.cpu_times()
            return float(t.user + t.system)

        snap0 = status_snapshot(web)
        st0 = stolen(None if split is None else split[0])
        c0, e0, w0 = cpu(agent), cpu(emulator), time.perf_counter()
        rss: list[int] = []
        emu_rss: list[int] = []
        while time.perf_counter() - w0 < seconds:
            rss.append(agent.memory_info().rss)
            emu_rss.append(emulator.memory_info().rss)
            time.sleep(0.25)
        c1, e1, w1 = cpu(agent), cpu(emulator), time.perf_counter()
        steal = steal_pct(st0, stolen(None if split is None else split[0]))
        snap1 = status_snapshot(web)
        uss = agent.memory_full_info().uss
        threads = agent.num_threads()
        wall = w1 - w0
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(WAIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        reader.join(5)
    nonces = snap1["nonces"] - snap0["nonces"]
    return {
        "rate_scale": rate_scale,
        "command": "doge-agent run -c FILE; the board: doge-agent emulate --root DIR",
        "startup_to_ready_s": round(marks["ready"] - t_start, 3) if "ready" in marks else None,
        "startup_to_first_share_s": round(marks["first_share"] - t_start, 3),
        "window_s": round(wall, 2),
        "nonces_per_s": round(nonces / wall, 1),
        "shares_accepted_in_window": snap1["shares"]["accepted"] - snap0["shares"]["accepted"],
        "rss_mb_max": round(max(rss) / 2**20, 1),
        "rss_mb_mean": round(sum(rss) / len(rss) / 2**20, 1),
        "uss_mb": round(uss / 2**20, 1),
        "threads": threads,
        "cpu_pct_agent": round(100 * (c1 - c0) / wall, 2),
        "steal_pct_agent_cpu": steal,
        "emulator_process": {"cpu_pct": round(100 * (e1 - e0) / wall, 2),
                             "rss_mb_max": round(max(emu_rss) / 2**20, 1)},
        "exit_code": code,
        "cpus": None if split is None else {"agent": sorted(split[0]),
                                            "emulator": sorted(split[1])},
    }


# ------------------------------------------------------------------------------ all


def run(quick: bool = False, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Every mining figure, with the targets of issues 4, 5, 6 and 9."""
    started = time.perf_counter()
    log("mining: ingest (one core)")
    ing = ingest(0.5 if quick else 3.0, 2_000 if quick else 20_000)
    log("mining: in-process latency, surfaces, flood, failover")
    inp = in_process(quick)
    log("mining: agent subprocess at the real nonce rate")
    real = agent_process(1.0, 1.0 if quick else 5.0, 3.0 if quick else 60.0)
    log("mining: agent subprocess at 100x the nonce rate")
    fast = agent_process(100.0, 1.0 if quick else 5.0, 3.0 if quick else 20.0)

    lat = inp["latency"]
    idle_w = lat["idle"]["notify_to_work_written_4_chains"]
    flood_w = lat["flood"]["notify_to_work_written_4_chains"]

    def ratio(a: float | None, b: float | None) -> float | None:
        return None if a is None or not b else round(a / b, 2)

    flood_ratio_p50 = ratio(flood_w["p50_ms"], idle_w["p50_ms"])
    flood_ratio_p99 = ratio(flood_w["p99_ms"], idle_w["p99_ms"])
    targets = [
        {"name": "notify -> work written to all 4 chains, p99 (idle)", "value": idle_w["p99_ms"],
         "unit": "ms", "target": f"< {TARGET_WORK_P99_MS:g}",
         "status": _status(idle_w["p99_ms"] is not None
                           and idle_w["p99_ms"] < TARGET_WORK_P99_MS)},
        {"name": "failover: kill primary -> first share sent to the backup (worst)",
         "value": inp["failover"]["worst_s"], "unit": "s", "target": f"< {TARGET_FAILOVER_S:g}",
         "status": inp["failover"]["status"]},
        {"name": "agent RSS mining the emulated L3+ (max)", "value": real["rss_mb_max"],
         "unit": "MB", "target": f"< {TARGET_RSS_MB:g}",
         "status": _status(real["rss_mb_max"] < TARGET_RSS_MB)},
        {"name": "agent CPU at the real nonce rate (the emulator in its own process)",
         "value": real["cpu_pct_agent"], "unit": "% of one core",
         "target": f"< {TARGET_CPU_PCT:g}",
         "status": _status(real["cpu_pct_agent"] < TARGET_CPU_PCT)},
        {"name": "notify -> work under a flood / idle, p50", "value": flood_ratio_p50, "unit": "x",
         "target": f"<= {TARGET_FLOOD_RATIO:g}",
         "status": _status(flood_ratio_p50 is not None and flood_ratio_p50 <= TARGET_FLOOD_RATIO)},
        {"name": "notify -> work under a flood / idle, p99", "value": flood_ratio_p99, "unit": "x",
         "target": f"<= {TARGET_FLOOD_RATIO:g}",
         "status": _status(flood_ratio_p99 is not None and flood_ratio_p99 <= TARGET_FLOOD_RATIO)},
        {"name": "shares accepted during the flood", "value": inp["shares_accepted"]["flood"],
         "unit": "shares", "target": "> 0", "status": _status(inp["shares_accepted"]["flood"] > 0)},
    ]  # fmt: skip
    return {
        "schema": 1,
        "quick": quick,
        "seconds_total": round(time.perf_counter() - started, 1),
        "setup": "loopback; emulated L3+ (4 x 72 BM1485 on ptys, ticket 1/1024 = ~30 nonces/s) "
                 "in its own process (doge-agent emulate --root); latency run: the agent on this "
                 "process's loop, pools in bench/pool_proc.py (difficulty 1/256); RSS/CPU runs: "
                 "doge-agent run in a subprocess, pool on a thread here (1/64); with 2+ CPUs the "
                 "emulator, pools and load generators get one CPU and the agent the others",
        "ingest": ing,
        "latency": lat,
        "surfaces": inp["surfaces"],
        "shares_accepted_by_phase": inp["shares_accepted"],
        "steal_pct_agent_cpu_by_phase": inp["steal_pct_agent_cpu"],
        "failover": inp["failover"],
        "process_real_rate": real,
        "process_100x_rate": fast,
        "flood_vs_idle": {"p50_ratio": flood_ratio_p50, "p99_ratio": flood_ratio_p99},
        "targets": targets,
    }  # fmt: skip


def render(m: dict[str, Any]) -> str:
    lines = [f"mining bench ({m['seconds_total']} s{', quick' if m['quick'] else ''})"]
    i = m["ingest"]
    lines.append(f"ingest on one core: {i['frames_decoded_per_s']} frames/s decoded "
                 f"({i['decode_x_line_rate']}x 4 UARTs), {i['nonces_ingested_per_s']} nonces/s")
    for phase, lat in m["latency"].items():
        w, r, s = (lat["notify_to_work_written_4_chains"], lat["notify_to_work_ready"],
                   lat["nonce_to_submit_sent"])
        a = lat["agent_on_job_to_written"]
        lines.append(f"{phase:13s} notify->ready p50 {r['p50_ms']} p99 {r['p99_ms']} ms; "
                     f"->written p50 {w['p50_ms']} p99 {w['p99_ms']} ms (n={w['n']}; in the "
                     f"agent p99 {a['p99_ms']} ms); nonce->submit p50 {s['p50_ms']} p99 "
                     f"{s['p99_ms']} ms (n={s['n']}); steal "
                     f"{m['steal_pct_agent_cpu_by_phase'].get(phase)} %")
    s = m["surfaces"]
    lines.append(f"status API {s['status_api']['ok_per_s']} req/s, 4028 "
                 f"{s['cgminer_4028']['ok_per_s']} req/s")
    for key in ("process_real_rate", "process_100x_rate"):
        p = m[key]
        e = p["emulator_process"]
        lines.append(f"{key}: {p['nonces_per_s']} nonces/s; agent RSS {p['rss_mb_max']} MB, CPU "
                     f"{p['cpu_pct_agent']} % (steal {p['steal_pct_agent_cpu']} %); emulator "
                     f"process CPU {e['cpu_pct']} %, RSS "
                     f"{e['rss_mb_max']} MB; first share {p['startup_to_first_share_s']} s")
    for t in m["targets"]:
        lines.append(f"  {t['name']}: {t['value']} {t['unit']} (target {t['target']}) "
                     f"{t['status']}")
    return "\n".join(lines)

"""`make soak`: the emulated L3+ mining against the local pool for minutes (or hours), with pool
restarts and random chip faults, sampled every few seconds; a table and bench/soak.json.

Usage: .venv/bin/python bench/soak.py [--minutes N] [--hours H] [--sample-s S]
       [--pool-restart-s S] [--pool-down-s S] [--fault-s S] [--seed N] [--json PATH]

The agent runs as `doge-agent run` in its own process and the emulated L3+ as `doge-agent emulate
--root` in another, so the figures are the agent's alone (the emulator's RSS and CPU are sampled
beside them). Faults reach the emulator over its link socket.

Figures (a benchmark reports, it does not pass or fail): RSS and its growth (least-squares slope
over the samples after the warm-up, MB/hour), CPU % of one core, task restarts (the service's
task-death counter), nonces the emulated chips emitted versus nonces the agent accounted for
(nonces == accepted + rejected + stale + below_target + hw_errors + pending, checked at every
sample), and the stale-share rate."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import logging
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: make the in-place built `agent` importable

from agent.emulator.pool import FixedDifficulty, StratumPool  # noqa: E402
from agent.emulator.server import EmulatorControl, EmulatorProcess  # noqa: E402
from bench.mining import agent_env, free_port, status_snapshot  # noqa: E402

POOL_DIFFICULTY = 1 / 256
WARMUP_FRACTION = 0.2  # RSS growth is fitted after this share of the run (imports, caches)
SETTLE_S = 90.0  # at the end: for the agent to reconnect (its backoff) and pending shares to drain


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/soak.py", description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--hours", type=float, default=None, help="overrides --minutes")
    p.add_argument("--sample-s", type=float, default=5.0)
    p.add_argument("--pool-restart-s", type=float, default=120.0, help="pool killed this often")
    p.add_argument("--pool-down-s", type=float, default=5.0, help="and down this long")
    p.add_argument("--fault-s", type=float, default=15.0, help="a random chip fault this often")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", metavar="PATH", default=str(ROOT / "bench" / "soak.json"))
    return p.parse_args(argv)


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, per hour."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return 0.0
    sxy = sum((x - mx) * (y - my) for x, y in points)
    return sxy / sxx * 3600.0


class Soak:
    """Three processes, as on a real site: `doge-agent run` (measured), the emulated L3+
    (`doge-agent emulate --root`, hardware on a real miner) and the local pool (here, in the
    soak's own loop: it stands for a pool on the internet)."""

    def __init__(self, args: argparse.Namespace, state_dir: Path) -> None:
        self.args = args
        self.duration_s = (args.hours * 3600.0) if args.hours else args.minutes * 60.0
        self.rng = random.Random(args.seed)
        self.state_dir = state_dir
        self.pool = StratumPool(policy=FixedDifficulty(POOL_DIFFICULTY))
        self.samples: list[dict[str, Any]] = []
        self.faults: dict[str, int] = {}
        self.pool_restarts = 0
        self.pool_down = False  # the soak ended while the pool was killed: bring it back
        self.pool_port = 0
        self.invariant_breaks = 0
        self.agent: psutil.Process | None = None
        self.emulator: psutil.Process | None = None
        self.web_port = 0
        self.log_tail: list[str] = []

    def _fault(self, kind: str) -> None:
        self.faults[kind] = self.faults.get(kind, 0) + 1

    async def _pool_restarts(self) -> None:
        while True:
            await asyncio.sleep(self.args.pool_restart_s)
            self.pool_port = self.pool.port
            self.pool_down = True
            await self.pool.stop()
            await asyncio.sleep(self.args.pool_down_s)
            await self._pool_back()
            self.pool_restarts += 1

    async def _pool_back(self) -> None:
        self.pool = StratumPool(port=self.pool_port, policy=FixedDifficulty(POOL_DIFFICULTY))
        await self.pool.start()
        self.pool_down = False

    async def _chip_faults(self, control: EmulatorControl, chains: int, chips: int) -> None:
        while True:
            await asyncio.sleep(self.args.fault_s)
            chain = self.rng.randrange(chains)
            kind = self.rng.choice(("vanish", "noise", "bad_nonces"))
            self._fault(kind)
            if kind == "vanish":
                gone = self.rng.sample(range(chips), self.rng.randint(1, 8))
                for p in gone:
                    control.chain(chain, "vanish", p)
                await asyncio.sleep(min(10.0, self.args.fault_s / 2))
                for p in gone:
                    control.chain(chain, "restore", p)
            elif kind == "noise":
                control.chain(chain, "noise", self.rng.randint(16, 256))
            else:
                control.chain(chain, "bad_nonces", self.rng.randint(1, 5))

    def _status(self) -> dict[str, Any]:
        return status_snapshot(self.web_port)

    def _sample(self, control: EmulatorControl, t0: float, keep: bool = True) -> dict[str, Any]:
        assert self.agent is not None and self.emulator is not None
        emitted = sum(c["nonces_out"] for c in control.stats()["chains"])
        snap = self._status()
        s = snap["shares"]
        if snap["nonces"] != sum(s.values()):
            self.invariant_breaks += 1
        row = {
            "t_s": round(time.monotonic() - t0, 1),
            "rss_mb": round(self.agent.memory_info().rss / 1e6, 2),
            "cpu_pct": round(self.agent.cpu_percent(None), 1),
            "emulator_rss_mb": round(self.emulator.memory_info().rss / 1e6, 2),
            "emulator_cpu_pct": round(self.emulator.cpu_percent(None), 1),
            "task_restarts": int(snap.get("task_restarts", 0)),
            "emitted": emitted,
            "nonces": snap["nonces"],
            "hashrate_hs": round(snap["hashrate_hs"], 1),
            **s,
        }
        if keep:
            self.samples.append(row)
        return row

    def _config(self, root: Path) -> Path:
        self.web_port = free_port()
        conf = self.state_dir / "agent.toml"
        conf.write_text(
            f'[api]\nhttp_listen = "127.0.0.1:{self.web_port}"\ncgminer_listen = "127.0.0.1:0"\n'
            f'[agent]\nstate_dir = "{self.state_dir}"\n'
            f'[[pools]]\nurl = "stratum+tcp://127.0.0.1:{self.pool.port}"\nuser = "soak.1"\n'
            f'[board]\nkind = "emulated"\nemulator_dir = "{root}"\n'
        )
        return conf

    async def _until_mining(self, proc: subprocess.Popen[str]) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(OSError):
                if self._status()["shares"]["accepted"] > 0:
                    return
            await asyncio.sleep(0.5)  # polling a child's status page against a deadline
        raise RuntimeError("the agent did not start mining:\n" + "".join(self.log_tail))

    async def run(self) -> dict[str, Any]:
        await self.pool.start()
        root = self.state_dir / "board"
        with EmulatorProcess(root, "--seed", str(self.args.seed)) as emu:
            control = emu.control()
            self.emulator = psutil.Process(emu.pid)
            proc = subprocess.Popen(
                [sys.executable, "-m", "agent", "run", "-c", str(self._config(root))],
                stderr=subprocess.PIPE, text=True, env=agent_env(),
            )  # fmt: skip
            reader = threading.Thread(target=self._read_log, args=(proc,), daemon=True)
            reader.start()
            try:
                return await self._soak(proc, control, emu)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(10)
                control.close()
                await self.pool.stop()

    def _read_log(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:  # kept for a failure report; the agent logs at info
            self.log_tail.append(line)
            del self.log_tail[:-100]

    async def _soak(self, proc: subprocess.Popen[str], control: EmulatorControl,
                    emu: EmulatorProcess) -> dict[str, Any]:  # fmt: skip
        await self._until_mining(proc)
        self.agent = psutil.Process(proc.pid)
        chains, chips = emu.description["chains"], emu.description["chips_per_chain"]
        t0 = time.monotonic()
        self.agent.cpu_percent(None)
        self.emulator.cpu_percent(None)  # type: ignore[union-attr]
        helpers = [
            asyncio.create_task(self._pool_restarts()),
            asyncio.create_task(self._chip_faults(control, chains, chips)),
        ]
        print(f"{'t_s':>7} {'rss_mb':>7} {'cpu%':>6} {'H/s':>7} {'emitted':>8} {'nonces':>8} "
              f"{'accepted':>8} {'stale':>6} {'hw':>5} {'pending':>7} {'restarts':>8}")  # fmt: skip
        try:
            while time.monotonic() - t0 < self.duration_s and proc.poll() is None:
                await asyncio.sleep(self.args.sample_s)
                r = await asyncio.to_thread(self._sample, control, t0)
                print(f"{r['t_s']:>7} {r['rss_mb']:>7} {r['cpu_pct']:>6} {r['hashrate_hs']:>7} "
                      f"{r['emitted']:>8} {r['nonces']:>8} {r['accepted']:>8} {r['stale']:>6} "
                      f"{r['hw_errors']:>5} {r['pending']:>7} {r['task_restarts']:>8}",
                      flush=True)  # fmt: skip
        finally:
            for h in helpers:
                h.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
        if proc.poll() is not None:
            raise RuntimeError("the agent exited during the soak:\n" + "".join(self.log_tail))
        if self.pool_down:  # stopped in its down time: the final count needs the pool's answers
            await self._pool_back()
        for chain in range(chains):  # every chip back before the final count
            for p in range(chips):
                control.chain(chain, "restore", p)
        # the final count: the lines and the pool settle (pending answered, every nonce the chips
        # emitted before the status was read is counted). The chips keep mining, so the final
        # sample is the one that was seen settled, not a later read with a new share in flight.
        deadline = time.monotonic() + SETTLE_S
        while True:
            final = await asyncio.to_thread(self._sample, control, t0, False)
            if final["pending"] == 0 and final["nonces"] >= final["emitted"]:
                break
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.2)
        self.samples.append(final)
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 120)
        return self._report(final, True, code)

    def _report(self, final: dict[str, Any], alive: bool, code: int) -> dict[str, Any]:
        t_end = final["t_s"]
        fit = [(r["t_s"], r["rss_mb"]) for r in self.samples if r["t_s"] >= WARMUP_FRACTION * t_end]
        rss = [r["rss_mb"] for r in self.samples]
        cpu = [r["cpu_pct"] for r in self.samples[:-1]] or [0.0]
        shares = final["accepted"] + final["rejected"] + final["stale"]
        return {
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "duration_s": t_end,
            "board": "emulated L3+ (4 x 72 BM1485) in its own process, ticket 1/1024; local pool, "
                     "difficulty 1/256; figures of the agent's process",
            "emulator_rss_mb": {"start": self.samples[0]["emulator_rss_mb"],
                                "end": self.samples[-1]["emulator_rss_mb"]},
            "load_avg_at_end": [round(x, 2) for x in psutil.getloadavg()],
            "rss_mb": {"start": rss[0], "end": rss[-1], "max": max(rss)},
            "rss_growth_mb_per_hour": round(slope_per_hour(fit), 2),
            "rss_growth_mb_over_run": round(rss[-1] - rss[0], 2),
            "cpu_pct": {"mean": round(sum(cpu) / len(cpu), 1), "max": max(cpu)},
            "task_restarts": final["task_restarts"],
            "run_task_alive_at_end": alive,
            "exit_code": code,
            "pool_restarts": self.pool_restarts,
            "chip_faults": self.faults,
            "nonces_emitted_by_chips": final["emitted"],
            "nonces_accounted": final["nonces"],
            # chip nonces the agent never counted (a negative figure: line noise decoded as
            # nonces, each one counted as a HW error)
            "nonces_unaccounted": final["emitted"] - final["nonces"],
            "buckets": {k: final[k] for k in
                        ("accepted", "rejected", "stale", "below_target", "hw_errors", "pending")},
            "invariant_breaks": self.invariant_breaks,
            "stale_share_rate": round(final["stale"] / shares, 4) if shares else 0.0,
            "samples": self.samples,
        }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory(prefix="doge-soak-") as tmp:
        report = asyncio.run(Soak(args, Path(tmp)).run())
    summary = {k: v for k, v in report.items() if k != "samples"}
    print(json.dumps(summary, indent=1))
    Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    print(f"written {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

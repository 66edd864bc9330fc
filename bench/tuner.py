"""The tuner's closed loop on the emulated L3+ whose chips differ in their stable clock.

The real chain driver and board driver (PIC voltage, thermal model power) run against the emulated
board in accelerated time (the emulator's rate_scale). Rates are judged on the emulator's chip clock
(model_time_s: wall time x rate_scale, less any work a starved emulator could not do), so a busy
machine slows the test down instead of making chips look slow. Three phases on one board:

  default: every chip at the stock 384 MHz and 10 V, measured over a window;
  tuning:  TunerLoop (agent.control.tuner, default options) until every chip and the voltage are
           settled; at the time limit the search stops where it is (no more steps up, the voltage
           kept) and runs until every chip has been verified at its clock;
  tuned:   the tuner stopped, the same window measured again.

Figures: good hashrate (each good nonce stands for 256 difficulty-1 shares of the modelled chip)
per watt of chain power (the thermal model's per-chip frequency x voltage^2 model), the worst
chip's HW-error share in each window, the HW-error budget, the tuned clocks and voltage.

Called by the bench as `run_tuner(quick: bool) -> dict` (the `tuner` section of
bench/results.json); `python bench/tuner.py [--quick] [--json bench/results.json]` prints the same
dict as JSON and with --json merges it into that file as its "tuner" section."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script: make the in-place built `agent` importable

from agent import defaults as D  # noqa: E402
from agent.control.tuner import (  # noqa: E402
    TunerDecision,
    TunerLoop,
    TunerMemory,
    TunerOptions,
    apply_to,
)
from agent.emulator.board import EmulatedL3Plus  # noqa: E402
from agent.emulator.hashboard import StabilityModel  # noqa: E402
from agent.hardware import bm1485 as bm  # noqa: E402
from agent.hardware.board import Board  # noqa: E402
from agent.hardware.chain import Chain, ChainTiming, ChainTuning  # noqa: E402
from agent.hardware.cpu import Work  # noqa: E402
from agent.hardware.pic import code_from_voltage, voltage_from_code  # noqa: E402
from agent.mining.targets import HASHES_PER_DIFF1, difficulty_to_target  # noqa: E402

log = logging.getLogger("bench.tuner")

EASY = 2**-14  # the emulator's ticket: 4 scrypt hashes per nonce, so many nonces for little CPU
NONCE_DIFFICULTY = float(bm.ticket_mask_difficulty(D.BM1485_TICKET_MASK))  # what a nonce stands for
TIMING = ChainTiming(
    command_gap_s=0.001, count_window_s=0.5, count_retries=1, reply_timeout_s=0.3,
    hashrate_poll_s=0.5, temp_poll_s=1.0, work_timeout_s=3600.0,
)  # fmt: skip


@dataclass(frozen=True)
class LoopSettings:
    chains: int = 1
    chips: int = 8
    rate_scale: float = 2000.0  # ~200 nonces/s per chip at 384 MHz
    seed: int = 6
    stability: StabilityModel = field(default_factory=StabilityModel)
    window_s: float = 8.0  # each measurement window (wall)
    tune_limit_s: float = 45.0  # the search stops here even if not settled (wall)
    finish_limit_s: float = 15.0  # then every chip is verified where it stands, this long at most
    interval_s: float = 0.5  # tuner tick (wall)
    options: TunerOptions | None = None  # None: the defaults, ticket as the chips' mask


def _window(chains: list[Chain], board: EmulatedL3Plus, t0: float, t1: float,
            before: dict[tuple[int, int], tuple[int, int]], s: LoopSettings,
            watts: float) -> dict[str, Any]:  # fmt: skip
    good = hw = 0
    worst: tuple[float, int, int, int, int] = (0.0, -1, -1, 0, 0)
    for ch in chains:
        for c in ch.chips.values():
            if c.disabled:
                continue
            g0, h0 = before.get((ch.chain, c.index), (0, 0))
            g, h = c.nonces - g0, c.hw_errors - h0
            good += g
            hw += h
            share = h / (g + h) if g + h else 0.0
            worst = max(worst, (share, ch.chain, c.index, h, g + h))
    seconds = t1 - t0  # chip seconds
    hashrate = good * NONCE_DIFFICULTY * HASHES_PER_DIFF1 / seconds if seconds > 0 else 0.0
    clocks = [c.frequency_mhz for ch in chains for c in ch.chips.values() if not c.disabled]
    return {
        "good_nonces": good,
        "hw_errors": hw,
        "hashrate_mhs": round(hashrate / 1e6, 3),
        "model_hashrate_mhs": round(sum(ch.expected_hashrate_hs for ch in chains) / 1e6, 3),
        "chain_w": round(watts, 2),
        "wall_w": round(board.wall_w, 2),
        "mhs_per_w": round(hashrate / 1e6 / watts, 5) if watts > 0 else 0.0,
        "worst_chip_hw": dict(
            zip(("share", "chain", "chip", "hw_errors", "nonces"), worst, strict=True)
        ),
        "mean_mhz": round(sum(clocks) / len(clocks), 2) if clocks else 0.0,
        "disabled_chips": sum(c.disabled for ch in chains for c in ch.chips.values()),
    }


async def closed_loop(settings: LoopSettings | None = None) -> dict[str, Any]:
    s = settings or LoopSettings()
    # every HW error is a log line: far past their stable clock chips send thousands a second
    chain_log = logging.getLogger("agent.hardware.chain")
    level = chain_log.level
    chain_log.setLevel(logging.ERROR)
    opts = s.options or TunerOptions()
    opts = replace(opts, ticket_difficulty=NONCE_DIFFICULTY, interval_s=s.interval_s)
    tmp = tempfile.TemporaryDirectory(prefix="tuner-bench-")
    emu = EmulatedL3Plus(
        tmp.name, chains=s.chains, chips=s.chips, ticket_difficulty=EASY,
        rate_scale=s.rate_scale, stability=s.stability, seed=s.seed, max_hash_rate_hs=1e6,
    )  # fmt: skip
    emu.peripherals.advance(900.0)  # settle the thermal model (no re-tune from warming up)
    await emu.start()
    board = Board.open(emu.profile, emulator=emu.peripherals)
    board.start()
    chains: list[Chain] = []
    try:
        for i in range(s.chains):
            await board.power_on(i)
        emu.sync()
        emu.peripherals.advance(900.0)
        for i, path in enumerate(emu.paths):
            chain = Chain(
                path, i, ticket_difficulty=EASY, expected_chips=s.chips,
                reset=lambda i=i: board.reset_chain(i), timing=TIMING,
            )  # fmt: skip
            await chain.start()
            chain.set_work(Work(1, bytes(range(76)), difficulty_to_target(1), clean=True))
            chains.append(chain)
        stable = {
            f"{i}.{p}": round(emu.chips.chains[i].stable_mhz(p), 1)
            for i in range(s.chains)
            for p in range(s.chips)
        }

        def power(i: int) -> float:
            return emu.chain_power_w(i)

        def model_time() -> float:
            return min(c.model_time_s for c in emu.chips.chains)

        async def measure() -> dict[str, Any]:
            await asyncio.sleep(1.0)  # nonces of the last change are through
            before = {(ch.chain, c.index): (c.nonces, c.hw_errors) for ch in chains
                      for c in ch.chips.values()}  # fmt: skip
            t0 = model_time()
            await asyncio.sleep(s.window_s)
            t1 = model_time()
            watts = sum(power(ch.chain) for ch in chains)
            return _window(chains, emu, t0, t1, before, s, watts)

        default = await measure()

        lo_v, hi_v = voltage_from_code(D.PIC_VOLTAGE_CODE_MAX), voltage_from_code(0)

        def pic_setter(i: int) -> Any:
            async def set_v(volts: float) -> None:
                await board.pics[i].set_voltage_code(code_from_voltage(min(hi_v, max(lo_v, volts))))
                emu.sync()  # the chips see the new voltage now, not at the next board tick

            return set_v

        targets = {ch.chain: ChainTuning(ch, pic_setter(ch.chain)) for ch in chains}

        def clock() -> float:  # chip time (accelerated; a starved emulator's lost work is out)
            return model_time()

        loop = TunerLoop(
            read=lambda: [
                t.sample(temp_c=t.chain.temp_c, power_w=power(n)) for n, t in targets.items()
            ],
            apply=lambda a: apply_to(targets, a),
            options=opts,
            clock=clock,
        )
        t_start = time.monotonic()
        ticks = 0
        settled = False
        last: TunerDecision | None = None
        while time.monotonic() - t_start < s.tune_limit_s:
            last = await loop.tick()
            ticks += 1
            if last is not None and _settled(last):
                settled = True
                break
            await asyncio.sleep(s.interval_s)
        tune_s = time.monotonic() - t_start
        finish_s = 0.0
        if not settled:  # out of time: no more climbing, every chip verified where it stands
            settled, finish_s = await _finish(loop, s)
        tuned = await measure()
        result = {
            "chains": s.chains,
            "chips": s.chips,
            "rate_scale": s.rate_scale,
            "seed": s.seed,
            "hw_budget": opts.hw_budget,
            "stable_mhz": stable,
            "default": default,
            "tuned": tuned,
            "gain": round(tuned["mhs_per_w"] / default["mhs_per_w"], 4)
            if default["mhs_per_w"]
            else None,
            "settled": settled,
            "tune_wall_s": round(tune_s, 1),
            "finish_wall_s": round(finish_s, 1),
            "tune_ticks": ticks,
            "actions": dict(loop.counts),
            "voltage_v": {n: t.voltage_v for n, t in targets.items()},
            "clocks_mhz": {
                f"{ch.chain}.{c.index}": round(c.frequency_mhz, 2)
                for ch in chains
                for c in sorted(ch.chips.values(), key=lambda c: c.index)
            },
        }
        return result
    finally:
        for ch in chains:
            await ch.stop()
        await board.close()
        await emu.stop()
        tmp.cleanup()
        chain_log.setLevel(level)


async def _finish(loop: TunerLoop, s: LoopSettings) -> tuple[bool, float]:
    """Stop the search where it is: the voltage stays, no chip may step up (its ceiling is its
    clock), and the loop runs until every chip has a verdict at its clock (a chip that fails
    there still steps down). Returns (settled, wall seconds)."""
    m = loop.memory
    chips = {
        k: replace(c, ceiling_mhz=min(c.freq_mhz, c.ceiling_mhz or c.freq_mhz), settled=False)
        for k, c in m.chips.items()
    }
    chains = {k: replace(c, v_settled=True) for k, c in m.chains.items()}
    loop.memory = TunerMemory(chips, chains)
    loop.options = replace(loop.options, tune_voltage=False)
    t0 = time.monotonic()
    while time.monotonic() - t0 < s.finish_limit_s:
        await asyncio.sleep(s.interval_s)
        d = await loop.tick()
        if d is not None and _settled(d):
            return True, time.monotonic() - t0
    return False, time.monotonic() - t0


def _settled(d: TunerDecision) -> bool:
    chips = all(v.verdict in ("settled", "disabled") for v in d.verdicts)
    volts = all(m.v_settled for m in d.memory.chains.values()) and bool(d.memory.chains)
    return chips and volts and not d.actions


def run_tuner(quick: bool = False) -> dict[str, Any]:
    """The `tuner` section of bench/results.json (quick: one chain of 8 chips, shorter windows)."""
    if quick:
        settings = LoopSettings(chains=1, chips=8, window_s=6.0, tune_limit_s=45.0)
    else:
        settings = LoopSettings(chains=2, chips=8, window_s=10.0, tune_limit_s=90.0)
    return asyncio.run(closed_loop(settings))


def merge_into(path: Path, section: dict[str, Any]) -> None:
    """Put `section` under "tuner" in the bench's JSON file (other sections kept), atomically."""
    doc: dict[str, Any] = {}
    if path.exists():
        doc = json.loads(path.read_text())
    doc["tuner"] = section
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(path)


def main(argv: list[str]) -> int:
    """bench/tuner.py [--quick] [--json PATH]: print the figures; with --json also merge them
    into PATH as its "tuner" section (bench/results.json for `make bench`)."""
    logging.basicConfig(level=logging.WARNING)
    result = run_tuner("--quick" in argv)
    print(json.dumps(result, indent=1))
    if "--json" in argv:
        merge_into(Path(argv[argv.index("--json") + 1]), result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""`doge-agent bench` / `make bench`: hash rates of our scrypt core against the alternatives.

Every implementation is first checked against a known vector: the speed of a wrong answer is
meaningless, so a mismatch aborts the run (exit 1). Rounds are interleaved across
implementations so the machine's drift (±8% here) spreads over all of them, and each figure is
reported with its ratio to hashlib.scrypt measured in the same run. The clock is read around
batches (one scan call, or a few dozen single-hash calls), never per hash.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import importlib
import importlib.metadata
import json
import os
import platform
import ssl
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent import _scrypt
from agent import scrypt as core

# The Litecoin wiki "Scrypt" example header (reference/scrypt-performance.md §1.3); its raw
# hash is the display hash byte-reversed.
WIKI_HEADER = bytes.fromhex(
    "01000000f615f7ce3b4fc6b8f61e8f89aedb1d0852507650533a9e3b10b9bbcc30639f27"
    "9fcaa86746e1ef52d3edb3c4ad8259920d509bd073605c9bf1d59983752a6b06b817bb4e"
    "a78e011d012d59d4"
)
WIKI_HASH_RAW = bytes.fromhex("d9eb8663ffec241c2fb118adb7de97a82c803b6ff46d57667935c81001000000")
WIKI_NONCE = struct.unpack_from("<I", WIKI_HEADER, 76)[0]

SCAN_TARGET = (6.0, 10.0)  # single-core scan vs hashlib: required, reaching for
POW_TARGET = 1.4  # pow_hash (one header per call) vs hashlib
SCAN_CHUNK_PER_LANE = 64  # nonces per scan() call = 64 x lanes: ~40 ms, call cost is noise
SINGLE_BATCH = 32  # single-hash calls between two clock reads (~10 ms at hashlib speed)
N_HEADERS = 1024  # pre-built headers so the timed loop does no packing
CONTENDED = 0.9  # cpu/wall per thread below this: another process shared our core


class WrongHash(RuntimeError):
    """An implementation returned a wrong hash: its speed must not be reported."""


@dataclass
class Impl:
    """One row of the table: how to check it, and how to run one batch on thread `i`."""

    name: str
    kind: str  # scan | pow_hash | hashlib | py-scrypt
    check: Callable[[], None]
    batch_factory: Callable[[int], Callable[[], int]]  # thread index -> batch() -> hashes done
    threads: int = 1
    backend: str | None = None  # switched to before checking and timing
    info: dict[str, Any] = field(default_factory=dict)
    rates: list[float] = field(default_factory=list)
    cpu_per_wall: list[float] = field(default_factory=list)


# ---------------------------------------------------------------- hash functions


def _hashlib_pow(h: bytes) -> bytes:
    return hashlib.scrypt(h, salt=h, n=1024, r=1, p=1, dklen=32)


def _with_nonce(header: bytes, nonce: int) -> bytes:
    return header[:76] + struct.pack("<I", nonce & 0xFFFFFFFF)


def _headers(first_nonce: int) -> list[bytes]:
    return [_with_nonce(WIKI_HEADER, first_nonce + i) for i in range(N_HEADERS)]


def _expect(name: str, got: bytes, want: bytes, what: str) -> None:
    if got != want:
        raise WrongHash(f"{name}: wrong hash for {what}: got {got.hex()}, expected {want.hex()}")


def _check_single(name: str, fn: Callable[[bytes], bytes]) -> Callable[[], None]:
    def check() -> None:
        _expect(name, bytes(fn(WIKI_HEADER)), WIKI_HASH_RAW, "the wiki header")

    return check


def _check_scan(name: str, lanes: int) -> Callable[[], None]:
    """Two kernel calls' worth of nonces around the wiki nonce, every hash compared: the known
    vector sits in a middle lane, the others are checked against hashlib (itself checked)."""

    def check() -> None:
        count = 2 * lanes
        start = WIKI_NONCE - lanes - lanes // 2
        _expect("hashlib.scrypt", _hashlib_pow(WIKI_HEADER), WIKI_HASH_RAW, "the wiki header")
        found = core.scan(WIKI_HEADER, start, count, core.MAX_TARGET)
        nonces = [n for n, _ in found]
        want = [(start + i) & 0xFFFFFFFF for i in range(count)]
        if nonces != want:
            raise WrongHash(f"{name}: scan with the maximum target returned nonces {nonces}, "
                            f"expected {want}")
        for nonce, raw in found:
            ref = WIKI_HASH_RAW if nonce == WIKI_NONCE else _hashlib_pow(
                _with_nonce(WIKI_HEADER, nonce))
            _expect(name, bytes(raw), ref, f"nonce {nonce:#010x}")
        if core.scan(WIKI_HEADER, start, count, 0):
            raise WrongHash(f"{name}: scan with target 0 reported hits")

    return check


# ---------------------------------------------------------------- batches


def _single_batches(fn: Callable[[bytes], bytes]) -> Callable[[int], Callable[[], int]]:
    def factory(thread: int) -> Callable[[], int]:
        headers = _headers(thread << 24)
        pos = 0

        def batch() -> int:
            nonlocal pos
            for h in headers[pos:pos + SINGLE_BATCH]:
                fn(h)
            pos = (pos + SINGLE_BATCH) % N_HEADERS
            return SINGLE_BATCH

        return batch

    return factory


def _scan_batches(name: str, chunk: int) -> Callable[[int], Callable[[], int]]:
    def factory(thread: int) -> Callable[[], int]:
        nonce = thread << 31  # disjoint ranges per thread; scan wraps past 2**32 - 1
        scan = core.scan  # looked up once; a monkeypatched core.scan is still what runs

        def batch() -> int:
            nonlocal nonce
            if scan(WIKI_HEADER, nonce, chunk, 0):
                raise WrongHash(f"{name}: scan with target 0 reported hits")
            nonce = (nonce + chunk) & 0xFFFFFFFF
            return chunk

        return batch

    return factory


def _measure(impl: Impl, seconds: float) -> tuple[float, float]:
    """Run impl on impl.threads threads for ~seconds; return (hashes/s, cpu/wall)."""
    batches = [impl.batch_factory(i) for i in range(impl.threads)]
    counts = [0] * impl.threads
    ends = [0.0] * impl.threads
    errors: list[BaseException] = []
    start = [0.0]
    gate = threading.Barrier(impl.threads + 1)

    def worker(i: int) -> None:
        gate.wait()
        deadline = start[0] + seconds
        n, batch = 0, batches[i]
        try:
            while True:  # at least one batch, however short `seconds` is
                n += batch()
                t = time.perf_counter()
                if t >= deadline:
                    break
        except BaseException as exc:  # surfaced in the main thread
            errors.append(exc)
            t = time.perf_counter()
        counts[i], ends[i] = n, t

    workers = [threading.Thread(target=worker, args=(i,), daemon=True)
               for i in range(impl.threads)]
    for w in workers:
        w.start()
    cpu0 = time.process_time()
    start[0] = time.perf_counter()
    gate.wait()
    for w in workers:
        w.join()
    cpu = time.process_time() - cpu0
    if errors:
        raise errors[0]
    wall = max(ends) - start[0]  # the slowest thread bounds the window: no over-count
    return sum(counts) / wall, cpu / wall


# ---------------------------------------------------------------- the line-up


def _pyscrypt() -> tuple[Callable[[bytes], bytes] | None, str]:
    try:
        mod = importlib.import_module("scrypt")
        fn = mod.hash
    except (ImportError, AttributeError) as exc:
        return None, f"not installed ({exc.__class__.__name__})"
    try:
        version = importlib.metadata.version("scrypt")
    except importlib.metadata.PackageNotFoundError:
        version = "?"

    def pow_(h: bytes) -> bytes:
        return fn(h, h, 1024, 1, 1, 32)

    return pow_, version


def build_implementations(default: str, quick: bool) -> tuple[list[Impl], dict[str, str]]:
    """The rows, in table order, plus notes for rows that cannot run (e.g. py-scrypt)."""
    impls: list[Impl] = []
    notes: dict[str, str] = {}
    for name in core.backends():
        lanes = core.lanes(name)
        chunk = SCAN_CHUNK_PER_LANE * lanes
        label = f"scan {name}"
        impls.append(Impl(label, "scan", _check_scan(label, lanes), _scan_batches(label, chunk),
                          backend=name, info={"lanes": lanes, "chunk": chunk}))
    # pow_hash uses each backend's one-lane ROMix; only the default matters in --quick
    for name in core.backends() if not quick else [default]:
        label = f"pow_hash {name}"
        pow_fn = core.pow_hash
        impls.append(Impl(label, "pow_hash", _check_single(label, pow_fn),
                          _single_batches(pow_fn), backend=name))
    impls.append(Impl("hashlib.scrypt", "hashlib", _check_single("hashlib.scrypt", _hashlib_pow),
                      _single_batches(_hashlib_pow), info={"openssl": ssl.OPENSSL_VERSION}))
    pys, version = _pyscrypt()
    if pys is None:
        notes["py-scrypt"] = version
    else:
        impls.append(Impl("py-scrypt", "py-scrypt", _check_single("py-scrypt", pys),
                          _single_batches(pys), info={"version": version}))
    label = f"scan {default} x2 threads"
    chunk = SCAN_CHUNK_PER_LANE * core.lanes(default)
    impls.append(Impl(label, "scan", _check_scan(label, core.lanes(default)),
                      _scan_batches(label, chunk), threads=2, backend=default,
                      info={"lanes": core.lanes(default), "chunk": chunk}))
    impls.append(Impl("hashlib.scrypt x2 threads", "hashlib",
                      _check_single("hashlib.scrypt", _hashlib_pow),
                      _single_batches(_hashlib_pow), threads=2))
    return impls, notes


# ---------------------------------------------------------------- report


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "Model", "Hardware")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5, cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def machine_info(default: str) -> dict[str, Any]:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": usable,
        "arch": platform.machine(),
        "python": platform.python_version(),
        "openssl": ssl.OPENSSL_VERSION,
        "default_backend": default,
        "backends": core.backends(),
        "sha256_impl": str(_scrypt.sha256_impl()),
        "git_commit": _git_commit(),
    }


def _fmt_rate(x: float) -> str:
    return f"{x:,.0f}".replace(",", " ")


def _row_result(impl: Impl, hashlib_rates: list[float], single: dict[str, float]
                ) -> dict[str, Any]:
    med = statistics.median(impl.rates)
    hashlib_median = statistics.median(hashlib_rates)
    res: dict[str, Any] = {
        "name": impl.name, "kind": impl.kind, "backend": impl.backend, "threads": impl.threads,
        "hps_median": round(med, 1), "hps_min": round(min(impl.rates), 1),
        "hps_max": round(max(impl.rates), 1), "hps_rounds": [round(r, 1) for r in impl.rates],
        "us_per_hash": round(1e6 / med, 2), "x_hashlib": round(med / hashlib_median, 3),
        # ratio within each round (rows of a round are minutes apart at most): drift cancels
        "x_hashlib_rounds": [round(r / h, 3) for r, h in zip(impl.rates, hashlib_rates,
                                                              strict=True)],
        "cpu_per_wall": round(statistics.median(impl.cpu_per_wall), 3),
        # hashes per second of CPU actually received: less sensitive to other load on the box
        "hps_per_cpu_second": round(statistics.median(
            r / c for r, c in zip(impl.rates, impl.cpu_per_wall, strict=True) if c > 0), 1),
        **impl.info,
    }
    if impl.threads > 1:  # scaling against the same implementation on one thread
        base = single.get(impl.kind if impl.kind == "hashlib" else f"scan {impl.backend}")
        if base:
            res["x_one_thread"] = round(med / base, 3)
    return res


def _status(value: float, threshold: float) -> str:
    return "PASS" if value >= threshold else "BELOW"


def render(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"doge-agent bench  {report['date']}  (commit {m['git_commit'] or '?'})",
        f"machine: {m['cpu']}, {m['cores']} cores ({m['cores_usable']} usable), "
        f"{m['arch']}, Python {m['python']}, {m['openssl']}",
        f"scrypt core: backends {', '.join(m['backends'])}; default {m['default_backend']}; "
        f"SHA-256 {m['sha256_impl']}",
        f"method: scrypt(N=1024, r=1, p=1, 32) of an 80-byte header; {report['rounds']} "
        f"interleaved round(s) of {report['seconds']:g} s each; median, min-max across rounds; "
        f"load average before {report['load_before']}, after {report['load_after']}",
        "",
    ]
    head = ("implementation", "H/s (median)", "min–max", "µs/hash", "× hashlib", "cpu/wall")
    rows = [head]
    for r in report["results"]:
        if "hps_median" not in r:
            rows.append((r["name"], r["status"], "–", "–", "–", "–"))
            continue
        rows.append((
            r["name"], _fmt_rate(r["hps_median"]),
            f"{_fmt_rate(r['hps_min'])}–{_fmt_rate(r['hps_max'])}",
            f"{r['us_per_hash']:.1f}", f"{r['x_hashlib']:.2f}×", f"{r['cpu_per_wall']:.2f}",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:],
                                                                      strict=True)]
        lines.append(" | ".join(cells))
        if n == 0:
            lines.append("-+-".join("-" * w for w in widths))
    lines.append("")
    for r in report["results"]:
        if "x_one_thread" in r:
            lines.append(f"two-thread scaling: {r['name']} = {r['x_one_thread']:.2f}× one thread")
    starved = [r["name"] for r in report["results"]
               if r.get("cpu_per_wall", 1e9) < CONTENDED * r["threads"]]
    if starved:  # another process took our cores: those rows under-state the speed
        lines.append(f"WARNING: cpu/wall below {CONTENDED:g} per thread (the machine was busy): "
                     + ", ".join(starved))
    lines.append("acceptance (issue 3), single core vs hashlib.scrypt:")
    for t in report["targets"]:
        lines.append(f"  {t['name']}: {t['value']:.2f}× (need ≥ {t['threshold']:g}×) "
                     f"{t['status']}" + (f"; stretch {t['stretch']:g}×: {t['stretch_status']}"
                                         if "stretch" in t else ""))
    return "\n".join(lines)


def _loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


# ---------------------------------------------------------------- main


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="doge-agent bench", description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=None,
                   help="seconds per measurement (default 3, --quick 1)")
    p.add_argument("--rounds", type=int, default=None,
                   help="interleaved rounds; the median is reported (default 3, --quick 1)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument("--quick", action="store_true",
                   help="short run: pow_hash on the default backend only, 1 round of 1 s")
    a = p.parse_args(argv)
    a.seconds = a.seconds if a.seconds is not None else (1.0 if a.quick else 3.0)
    a.rounds = a.rounds if a.rounds is not None else (1 if a.quick else 3)
    if a.seconds <= 0 or a.rounds < 1:
        p.error("--seconds must be > 0 and --rounds >= 1")
    return a


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    original = core.backend()
    try:
        return _run(args, original)
    except WrongHash as exc:
        print(f"bench: ABORTED, an implementation is wrong: {exc}\n"
              "(no speed is reported for wrong hashes; run `doge-agent selftest`)", file=sys.stderr)
        return 1
    finally:
        core.set_backend(original)


def _run(args: argparse.Namespace, default: str) -> int:
    impls, notes = build_implementations(default, args.quick)
    for impl in impls:  # every check before any timing: fail fast, and warm every path up
        if impl.backend:
            core.set_backend(impl.backend)
        impl.check()
    load_before = _loadavg()
    date = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    for rnd in range(args.rounds):
        for impl in impls:
            if impl.backend:
                core.set_backend(impl.backend)
            rate, cpu_wall = _measure(impl, args.seconds)
            impl.rates.append(rate)
            impl.cpu_per_wall.append(cpu_wall)
        print(f"round {rnd + 1}/{args.rounds} done", file=sys.stderr, flush=True)

    hashlib_rates = next(i for i in impls if i.kind == "hashlib" and i.threads == 1).rates
    hashlib_median = statistics.median(hashlib_rates)
    single = {("hashlib" if i.kind == "hashlib" else i.name): statistics.median(i.rates)
              for i in impls if i.threads == 1}
    results = [_row_result(i, hashlib_rates, single) for i in impls]
    for name, why in notes.items():  # keep py-scrypt visible in the table when absent
        pos = next(n for n, r in enumerate(results) if r["name"] == "hashlib.scrypt") + 1
        results.insert(pos, {"name": name, "status": why})

    scan_x = single[f"scan {default}"] / hashlib_median
    pow_x = single[f"pow_hash {default}"] / hashlib_median
    targets = [
        {"name": f"scan {default}, one core", "value": round(scan_x, 3),
         "threshold": SCAN_TARGET[0], "status": _status(scan_x, SCAN_TARGET[0]),
         "stretch": SCAN_TARGET[1],
         "stretch_status": "REACHED" if scan_x >= SCAN_TARGET[1] else "not yet"},
        {"name": f"pow_hash {default}, one header per call", "value": round(pow_x, 3),
         "threshold": POW_TARGET, "status": _status(pow_x, POW_TARGET)},
    ]
    report = {
        "schema": 1, "date": date, "seconds": args.seconds, "rounds": args.rounds,
        "quick": args.quick, "load_before": load_before, "load_after": _loadavg(),
        "machine": machine_info(default), "results": results, "targets": targets,
    }
    print(render(report))
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
        print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

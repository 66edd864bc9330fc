"""The fuzz campaign behind `make fuzz`, and its record bench/fuzz.json.

1. Hypothesis: every property test over outside input (FUZZ_TARGETS in tests/conftest.py) with
   FUZZ_EXAMPLES cases each (scaled per target), a per-case watchdog of FUZZ_HANG_S seconds.
   The conftest writes one JSON line per target; a target that started and never finished
   (the process died, e.g. the hang watchdog ended it) is recorded as such.
2. atheris (when it imports): coverage-guided runs of the byte-level parsers
   (tools/fuzz/atheris_targets.py), each bounded by --atheris-runs and --atheris-seconds,
   starting from seed inputs plus the corpus kept in bench/out/fuzz-corpus/.

Usage: .venv/bin/python bench/fuzz_report.py [--examples N] [--atheris-runs N]
           [--atheris-seconds S] [--hang-s S] [--out bench/fuzz.json]
Exits 1 when any target failed, crashed or hung."""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
HARNESS = ROOT / "tools" / "fuzz" / "atheris_targets.py"


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def run_hypothesis(examples: int, hang_s: float, log: Path) -> dict[str, Any]:
    log.unlink(missing_ok=True)
    env = {**os.environ, "HYPOTHESIS_PROFILE": "fuzz", "FUZZ_EXAMPLES": str(examples),
           "FUZZ_HANG_S": str(hang_s), "FUZZ_LOG": str(log)}  # fmt: skip
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "fuzz", "--timeout=0",
           "-p", "no:cacheprovider", "tests"]  # fmt: skip
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.monotonic() - t0
    (OUT / "fuzz-hypothesis.out").write_text(proc.stdout + proc.stderr)
    print(proc.stdout[-3000:] + proc.stderr[-3000:], flush=True)
    return read_hypothesis_log(log, proc.returncode, wall, examples, hang_s)


def read_hypothesis_log(
    log: Path, returncode: int, wall: float, examples: int, hang_s: float
) -> dict[str, Any]:
    started: list[str] = []
    done: dict[str, dict[str, Any]] = {}
    for line in log.read_text().splitlines() if log.exists() else []:
        d = json.loads(line)
        if d.pop("event") == "start":
            started.append(d["target"])
        else:
            done[d["target"]] = d
    targets = []
    for name in dict.fromkeys(started):
        rec = done.get(name) or {"target": name, "cases": None, "failures": 1,
                                 "outcome": "died: the pytest process ended inside this target "
                                            "(hang watchdog or crash); see fuzz-hypothesis.out"}
        targets.append(rec)
    cases = sum(t["cases"] or 0 for t in targets)
    return {
        "tool": f"hypothesis {_version('hypothesis')}",
        "command": "HYPOTHESIS_PROFILE=fuzz pytest -m fuzz --timeout=0 tests",
        "examples_per_target": examples,
        "hang_watchdog_s": hang_s,
        "deadline_s": float(os.environ.get("FUZZ_DEADLINE_S", "10")),
        "pytest_exit_code": returncode,
        "wall_s": round(wall, 1),
        "targets": targets,
        "cases_total": cases,
        "failures": sum(1 for t in targets if t["outcome"] != "passed"),
        "hangs": sum((t.get("hangs") or 0) for t in targets),
        "max_case_s": max((t.get("max_case_s") or 0.0 for t in targets), default=0.0),
    }


_DONE = re.compile(r"Done (\d+) runs in (\d+) second")
_STATS = re.compile(r"#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)")
_SLOWEST = re.compile(r"stat::slowest_unit_time_sec:\s*(\d+)")


def run_atheris(runs: int, seconds: int, hang_s: float) -> dict[str, Any]:
    try:
        import atheris  # noqa: F401
    except ImportError as e:
        return {"tool": "atheris", "skipped": f"atheris does not import ({e}); "
                "`.venv/bin/pip install atheris` (a manylinux wheel, no compiler needed)"}
    sys.path.insert(0, str(HARNESS.parent))
    from atheris_targets import TARGETS, seeds  # type: ignore[import-not-found]

    results = []
    t_all = time.monotonic()
    for name, seed_inputs in seeds().items():
        assert name in TARGETS
        corpus = OUT / "fuzz-corpus" / name
        corpus.mkdir(parents=True, exist_ok=True)
        for i, s in enumerate(seed_inputs):
            (corpus / f"seed-{i}").write_bytes(s)
        crashes = OUT / "fuzz-crashes"
        crashes.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, str(HARNESS), name, f"-runs={runs}",
               f"-max_total_time={seconds}", f"-timeout={max(1, round(hang_s))}",
               f"-artifact_prefix={crashes}/{name}-", "-print_final_stats=1",
               str(corpus)]  # fmt: skip
        t0 = time.monotonic()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        wall = time.monotonic() - t0
        text = proc.stdout + proc.stderr
        (OUT / f"fuzz-atheris-{name}.log").write_text(text)
        done = _DONE.search(text)
        stats = _STATS.findall(text)
        slowest = _SLOWEST.search(text)
        if proc.returncode == 0:
            outcome = "passed"
        elif "libFuzzer: timeout" in text:
            outcome = f"hang: a run exceeded {hang_s:g} s (see bench/out/fuzz-atheris-{name}.log)"
        else:
            outcome = f"crash (exit {proc.returncode}; see bench/out/fuzz-atheris-{name}.log)"
        results.append({
            "target": name,
            "execs": int(done.group(1)) if done else (int(stats[-1][0]) if stats else None),
            "coverage_edges": int(stats[-1][1]) if stats else None,
            "features": int(stats[-1][2]) if stats else None,
            "corpus_inputs": int(stats[-1][3]) if stats else None,
            "slowest_exec_s": int(slowest.group(1)) if slowest else None,
            "wall_s": round(wall, 1),
            "outcome": outcome,
        })  # fmt: skip
        print(f"atheris {name}: {results[-1]}", flush=True)
    return {
        "tool": f"atheris {_version('atheris')} (libFuzzer)",
        "command": f"python tools/fuzz/atheris_targets.py <target> -runs={runs} "
                   f"-max_total_time={seconds} <corpus>",
        "runs_per_target": runs,
        "max_seconds_per_target": seconds,
        "wall_s": round(time.monotonic() - t_all, 1),
        "targets": results,
        "execs_total": sum(r["execs"] or 0 for r in results),
        "failures": sum(1 for r in results if r["outcome"] != "passed"),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=int(os.environ.get("FUZZ_EXAMPLES", 20000)))
    ap.add_argument("--hang-s", type=float, default=float(os.environ.get("FUZZ_HANG_S", 20)))
    ap.add_argument("--atheris-runs", type=int,
                    default=int(os.environ.get("FUZZ_ATHERIS_RUNS", 1_000_000)))
    ap.add_argument("--atheris-seconds", type=int,
                    default=int(os.environ.get("FUZZ_ATHERIS_SECONDS", 150)))
    ap.add_argument("--no-atheris", action="store_true")
    ap.add_argument("--no-hypothesis", action="store_true")
    ap.add_argument("--hypothesis-record", type=Path, default=None,
                    help="take the Hypothesis section from this earlier record instead of running")
    ap.add_argument("--atheris-record", type=Path, default=None,
                    help="take the atheris section from this earlier record instead of running")
    ap.add_argument("--hypothesis-log", type=Path, default=None,
                    help="record this finished run's log instead of running Hypothesis again")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "fuzz.json")
    a = ap.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.UTC)
    t0 = time.monotonic()
    if a.hypothesis_record is not None:
        earlier = json.loads(a.hypothesis_record.read_text())
        hyp = earlier["hypothesis"]
        started = dt.datetime.fromisoformat(earlier["date"].replace("Z", "+00:00"))
    elif a.no_hypothesis:
        hyp = {"tool": "hypothesis", "skipped": "--no-hypothesis", "cases_total": 0,
               "failures": 0, "hangs": 0, "wall_s": 0.0, "targets": []}  # fmt: skip
    elif a.hypothesis_log is not None:
        hyp = read_hypothesis_log(a.hypothesis_log, 0 if a.hypothesis_log.exists() else 1,
                                  float("nan"), a.examples, a.hang_s)  # fmt: skip
        rc_file = a.hypothesis_log.with_suffix(".rc")
        if rc_file.exists():
            hyp["pytest_exit_code"] = int(rc_file.read_text())
        hyp["wall_s"] = sum(t.get("wall_s") or 0 for t in hyp["targets"])
        hyp["note"] = f"recorded from {a.hypothesis_log.name} (wall_s: sum over targets)"
    else:
        hyp = run_hypothesis(a.examples, a.hang_s, OUT / "fuzz-hypothesis.jsonl")
    if a.atheris_record is not None:
        ath = json.loads(a.atheris_record.read_text())["atheris"]
    elif a.no_atheris:
        ath = {"tool": "atheris", "skipped": "--no-atheris"}
    else:
        ath = run_atheris(a.atheris_runs, a.atheris_seconds, a.hang_s)
    failures = hyp["failures"] + ath.get("failures", 0)
    record = {
        "date": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": f"FUZZ_EXAMPLES={a.examples} FUZZ_ATHERIS_RUNS={a.atheris_runs} "
                   f"FUZZ_ATHERIS_SECONDS={a.atheris_seconds} make fuzz  (bench/fuzz_report.py)",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared), "
                   f"python {platform.python_version()}",
        "wall_s": round(time.monotonic() - t0 + (hyp["wall_s"] if a.hypothesis_log else 0), 1)
        if not (a.hypothesis_record or a.atheris_record)
        else max(hyp.get("wall_s", 0), ath.get("wall_s", 0)),
        "cases_total": hyp["cases_total"] + ath.get("execs_total", 0),
        "failures": failures,
        "hangs": hyp["hangs"] + sum(1 for r in ath.get("targets", []) if "hang" in r["outcome"]),
        "hypothesis": hyp,
        "atheris": ath,
    }
    if a.hypothesis_record or a.atheris_record:
        record["note"] = ("assembled from earlier records (--hypothesis-record/--atheris-record); "
                          "their phases ran side by side, so wall_s is the longer of the two")
    a.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"{a.out}: {record['cases_total']} cases, {failures} failures, "
          f"{record['wall_s']:.0f} s", flush=True)  # fmt: skip
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

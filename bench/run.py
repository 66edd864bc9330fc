"""`make bench`: run the benchmarks and keep their figures in bench/results.json.

Usage: .venv/bin/python bench/run.py [--only scrypt|mining|tuner|all] [--quick] [--json PATH]
       [--seconds S] [--rounds R]   (the last two are the scrypt bench's)

The scrypt section keeps its structure at the top level of the JSON (as agent.benchmark writes
it); the mining figures (bench/mining.py) go under "mining". With --only, the other section of an
existing file is kept as it was.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: make the in-place built `agent` importable

from agent import benchmark  # noqa: E402


def _parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=("scrypt", "mining", "tuner", "all"), default="all")
    p.add_argument("--json", metavar="PATH", default=str(ROOT / "bench" / "results.json"))
    p.add_argument("--quick", action="store_true", help="short runs (for tests)")
    return p.parse_known_args(argv)


def main(argv: list[str] | None = None) -> int:
    args, scrypt_args = _parse(sys.argv[1:] if argv is None else argv)
    path = Path(args.json)
    report: dict[str, Any] = {}
    if args.only != "all" and path.exists():
        try:
            report = json.loads(path.read_text())
        except ValueError:
            report = {}
    if args.only in ("scrypt", "all"):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "scrypt.json"
            quick = ["--quick"] if args.quick else []
            code = benchmark.main([*quick, *scrypt_args, "--json", str(out)])
            if code != 0:
                return code
            kept = {k: report[k] for k in ("mining", "tuner") if k in report}
            report = json.loads(out.read_text())
            report.update(kept)
    if args.only in ("mining", "all"):
        from bench import mining

        def log(msg: str) -> None:
            print(msg, file=sys.stderr, flush=True)

        report["mining"] = mining.run(quick=args.quick, log=log)
        print(mining.render(report["mining"]))
    if args.only in ("tuner", "all"):
        from bench.tuner import run_tuner

        report["tuner"] = run_tuner(args.quick)
        print(json.dumps(report["tuner"], indent=1))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`make bench`: run the benchmark and keep its figures in bench/results.json.

Usage: .venv/bin/python bench/run.py [--seconds S] [--rounds R] [--quick] [--json PATH]
(a later --json overrides the default path).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: make the in-place built `agent` importable

from agent import benchmark  # noqa: E402

if __name__ == "__main__":
    sys.exit(benchmark.main(["--json", str(ROOT / "bench" / "results.json"), *sys.argv[1:]]))

"""`python bench/agent_proc.py run -c FILE`: the agent exactly as `python -m agent run -c FILE`
runs it, with two bench-only wrappers installed first and nothing else changed:

* DOGE_BENCH_RATE_SCALE: the emulated L3+'s `rate_scale` (nonces per second x this), which the
  config does not expose;
* DOGE_BENCH_THREADS_FILE: each emulated chain's thread id is appended to this file, so the bench
  can split the process's CPU between the emulated chips (which are hardware on a real board) and
  the agent."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.cli import main
from agent.emulator import board, hashboard


def _install() -> None:
    scale = float(os.environ.get("DOGE_BENCH_RATE_SCALE", "1"))
    threads_file = os.environ.get("DOGE_BENCH_THREADS_FILE")
    init = board.EmulatedL3Plus.__init__
    start = hashboard.EmulatedChain.start

    def scaled_init(self: board.EmulatedL3Plus, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("rate_scale", scale)
        init(self, *args, **kwargs)

    def noted_start(self: hashboard.EmulatedChain) -> hashboard.EmulatedChain:
        out = start(self)
        thread = getattr(self, "_thread", None)
        if threads_file and thread is not None and thread.native_id is not None:
            with open(threads_file, "a") as f:
                f.write(f"{thread.native_id}\n")
        return out

    board.EmulatedL3Plus.__init__ = scaled_init  # type: ignore[method-assign]
    hashboard.EmulatedChain.start = noted_start  # type: ignore[method-assign]


if __name__ == "__main__":
    _install()
    sys.exit(main(sys.argv[1:]))

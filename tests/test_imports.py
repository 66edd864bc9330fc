"""What `doge-agent run` imports: the agent's RSS target (issue 6: under 40 MB while mining an
emulated L3+) depends on heavy packages staying out of the agent until a feature needs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# module -> why the running agent must not import it at start (each is imported where it is used)
KEPT_OUT = {
    "cryptography": "~8 MB: only to encrypt or decrypt a password_enc (agent.security.secrets)",
    "prometheus_client": "/metrics is written by agent.api.http itself",
    "urllib.request": "price fetches, alert webhooks and the SSH commands import it when they call",
    "http.client": "through urllib.request",
    "email.message": "through urllib.request",
    "statistics": "only the tuner's error bounds",
    "tempfile": "only the guardian's and tuner's atomic writes",
    "importlib.resources": "the self-test vectors are read beside agent/selftest.py",
    "zipfile": "through importlib.resources",
}


def test_the_running_agent_keeps_heavy_modules_out() -> None:
    # What `doge-agent run -c FILE` has loaded once the service is built and the self-test ran.
    code = (
        "import sys\n"
        "from agent import cli, selftest\n"
        "import agent.service\n"
        "cli.build_parser().parse_args(['run', '-c', 'x.toml'])\n"
        "selftest.load_vectors()\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOGE_AGENT")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    loaded = set(proc.stdout.split())
    assert "agent.service" in loaded and "agent.api.http" in loaded
    found = {m: why for m, why in KEPT_OUT.items() if m in loaded}
    assert not found, f"imported at start: {found}"

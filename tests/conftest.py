"""Shared test fixtures.

REQUIRE_PEERS=1 (set by CI) turns a missing outside program into a failure instead of a skip,
so a real-peer test can never silently disappear from CI."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("DOGE_AGENT_SHARED", ROOT.parent / "shared"))
VECTORS_FILE = Path(__file__).resolve().parent / "data" / "scrypt-pow.json"

settings.register_profile("default", max_examples=100, deadline=None)
settings.register_profile(
    "fuzz", max_examples=20000, deadline=None, suppress_health_check=list(HealthCheck)
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def require_peer(program: str) -> str:
    """Path of an outside program; skip if missing, or fail when REQUIRE_PEERS=1."""
    path = shutil.which(program)
    if path is None:
        msg = f"{program} is not installed (bash .ci/run installs it)"
        if os.environ.get("REQUIRE_PEERS") == "1":
            pytest.fail(msg + "; REQUIRE_PEERS=1 makes this a failure")
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def vectors() -> dict:
    """The public vectors (a copy of shared/vectors/scrypt-pow.json kept in tests/data)."""
    return json.loads(VECTORS_FILE.read_text())

"""Shared test fixtures, and the fuzz campaign's bookkeeping.

REQUIRE_PEERS=1 (set by CI) turns a missing outside program into a failure instead of a skip,
so a real-peer test can never silently disappear from CI.

HYPOTHESIS_PROFILE=fuzz (make fuzz, via bench/fuzz_report.py) runs the FUZZ_TARGETS below, the
property tests over outside input, with FUZZ_EXAMPLES cases each (scaled per target by its
weight), a watchdog of FUZZ_HANG_S seconds per case, and writes one JSON line per target
(cases run, failures, slowest case) to FUZZ_LOG. Under the default profile (make test, CI) the
same tests run with the default 100 cases and nothing is recorded."""

from __future__ import annotations

import asyncio
import faulthandler
import functools
import json
import os
import shutil
import signal
import time
from collections.abc import Callable, Generator
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.statistics import collector

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("DOGE_AGENT_SHARED", ROOT.parent / "shared"))
VECTORS_FILE = Path(__file__).resolve().parent / "data" / "scrypt-pow.json"

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "default")
FUZZ = PROFILE == "fuzz"
FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "20000"))
# A case slower than this is a hang: the watchdog raises FuzzHang in it (and, should the case
# swallow that, faulthandler ends the process after twice as long, naming where it was stuck).
FUZZ_HANG_S = float(os.environ.get("FUZZ_HANG_S", "20"))
# Hypothesis's own deadline: a case that finishes but took longer than this fails the target.
FUZZ_DEADLINE_S = float(os.environ.get("FUZZ_DEADLINE_S", "10"))

settings.register_profile("default", max_examples=100, deadline=None)
settings.register_profile(
    "fuzz",
    max_examples=FUZZ_EXAMPLES,
    deadline=timedelta(seconds=FUZZ_DEADLINE_S),
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)
settings.load_profile(PROFILE)

# ---------------------------------------------------------------------------- the fuzz targets

# Every property test over outside input, by the surface it guards, and its share of
# FUZZ_EXAMPLES (slow targets, a server per case, get fewer). tests/test_fuzz_parsers.py checks
# that each entry still names a Hypothesis test, so a rename cannot drop a target silently.
FUZZ_TARGETS: dict[str, tuple[str, float]] = {
    # Stratum (pool -> agent lines)
    "test_stratum_protocol.py::test_property_random_bytes": ("stratum", 1.0),
    "test_stratum_protocol.py::test_property_wrong_types": ("stratum", 0.4),
    "test_stratum_protocol.py::test_property_notify_fields": ("stratum", 1.0),
    "test_stratum_protocol.py::test_property_hex_of_wrong_length": ("stratum", 1.0),
    "test_stratum_protocol.py::test_property_truncated_lines": ("stratum", 1.0),
    "test_stratum_protocol.py::test_property_replies": ("stratum", 0.25),
    "test_stratum_protocol.py::test_property_subscribe_result": ("stratum", 0.4),
    "test_fuzz_parsers.py::test_fuzz_stratum_difficulty_and_error": ("stratum", 0.4),
    # BM1485 chip byte stream (chips -> agent) and frames
    "test_bm1485.py::test_stream_decoder_never_raises_on_random_bytes": ("bm1485", 1.0),
    "test_bm1485.py::test_stream_decoder_recovers_frames_in_noise": ("bm1485", 0.5),
    "test_fuzz_parsers.py::test_fuzz_bm1485_stream_chunking_does_not_matter": ("bm1485", 0.4),
    "test_fuzz_parsers.py::test_fuzz_bm1485_frame_decoders": ("bm1485", 0.5),
    # cgminer API (TCP 4028)
    "test_cgminer_api.py::test_any_request_bytes_get_one_nul_terminated_reply": ("cgminer", 1.0),
    "test_fuzz_parsers.py::test_fuzz_cgminer_request_framing": ("cgminer", 0.4),
    # HTTP server, web API, stock CGI, auth headers
    "test_httpserver.py::test_random_bytes_never_crash_nor_hang": ("http", 0.25),
    "test_fuzz_parsers.py::test_fuzz_http_request_target": ("http", 1.0),
    "test_fuzz_parsers.py::test_fuzz_http_bodies_and_stock_cgi_forms": ("http", 0.5),
    "test_web.py::test_control_bodies_never_cause_a_server_error": ("http", 0.1),
    "test_access.py::test_any_header_never_raises": ("http", 1.0),
    "test_access.py::test_well_formed_headers_with_hostile_values_never_raise": ("http", 0.5),
    "test_fuzz_parsers.py::test_fuzz_peer_addresses_and_allow_lists": ("http", 0.5),
    # config files and environment overrides
    "test_config.py::test_property_validate_never_raises": ("config", 0.2),
    "test_config.py::test_property_check_never_raises_on_toml_ish_files": ("config", 0.5),
    "test_config.py::test_property_env_overrides_never_raise": ("config", 0.5),
    "test_fuzz_parsers.py::test_fuzz_listen_address": ("config", 1.0),
    "test_fuzz_parsers.py::test_fuzz_board_profile": ("config", 0.15),
    # files the agent wrote and reads back, maybe damaged
    "test_guardian.py::test_parse_prices_any_bytes_gives_prices_or_price_error": ("files", 1.0),
    "test_tuner.py::test_parse_profile_never_raises_anything_else": ("files", 1.0),
    "test_fuzz_parsers.py::test_fuzz_state_file": ("files", 1.0),
    "test_fuzz_parsers.py::test_fuzz_log_lines": ("files", 0.5),
    "test_fuzz_parsers.py::test_fuzz_proc_interrupts": ("files", 0.5),
    # other peers: a remote miner through pyasic, litecoind's getblocktemplate, a miner's shares
    "test_fuzz_parsers.py::test_fuzz_remote_miner_data": ("peers", 1.0),
    "test_fuzz_parsers.py::test_fuzz_getblocktemplate": ("peers", 0.4),
    "test_pool_server.py::test_property_submit_params_only_ever_give_share_errors": ("peers", 0.5),
    # the emulated board's link socket (I2C and fault injection for `emulate --root`)
    "test_emulator_process.py::test_property_link_server_answers_every_line": ("peers", 0.5),
}


class FuzzHang(Exception):
    """A fuzz case ran longer than FUZZ_HANG_S."""


@dataclass
class TargetRecord:
    target: str
    surface: str
    max_examples: int
    cases: int = 0  # calls of the test body, every phase (generate, reuse, shrink)
    generated: int = 0  # cases of the generate phase: new inputs
    invalid: int = 0  # cases rejected by assume() or a filter
    failures: int = 0  # distinct failures Hypothesis found
    hangs: int = 0
    max_case_s: float = 0.0
    wall_s: float = 0.0
    stopped_because: str = ""
    outcome: str = "running"


def _target_key(item: pytest.Item) -> str:
    return f"{Path(str(item.fspath)).name}::{getattr(item, 'originalname', item.name)}"


def _watched(inner: Callable[..., Any], rec: TargetRecord) -> Callable[..., Any]:
    """The test body, counted, timed, and stopped when it hangs."""

    def on_alarm(signum: int, frame: Any) -> None:
        rec.hangs += 1
        raise FuzzHang(f"{rec.target}: a case ran longer than {FUZZ_HANG_S:g} s")

    @functools.wraps(inner)
    def run(*args: Any, **kwargs: Any) -> Any:
        old = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, FUZZ_HANG_S)
        faulthandler.dump_traceback_later(2 * FUZZ_HANG_S + 5, exit=True)
        t0 = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            faulthandler.cancel_dump_traceback_later()
            signal.signal(signal.SIGALRM, old)
            rec.cases += 1
            rec.max_case_s = max(rec.max_case_s, time.perf_counter() - t0)

    return run


def _fuzz_log(line: dict[str, Any]) -> None:
    path = os.environ.get("FUZZ_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "fuzz: a property test over outside input (make fuzz)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        entry = FUZZ_TARGETS.get(_target_key(item))
        if entry is None:
            continue
        item.add_marker(pytest.mark.fuzz)
        if not FUZZ:
            continue
        surface, weight = entry
        fn = getattr(item.obj, "__func__", item.obj)
        handle = getattr(fn, "hypothesis", None)
        if handle is None:
            raise pytest.UsageError(f"fuzz target {item.nodeid} is not a Hypothesis test")
        own = fn._hypothesis_internal_use_settings
        n = max(1, round(FUZZ_EXAMPLES * weight))
        # the profile's numbers win over a test's own @settings(max_examples=...)
        fn._hypothesis_internal_use_settings = settings(
            own, max_examples=n, deadline=timedelta(seconds=FUZZ_DEADLINE_S),
            suppress_health_check=list(HealthCheck),
        )  # fmt: skip
        rec = TargetRecord(_target_key(item), surface, n)
        item.stash[_RECORD] = rec
        handle.inner_test = _watched(handle.inner_test, rec)
    whole = not config.getoption("keyword") and all(Path(a).is_dir() for a in config.args)
    if FUZZ and config.getoption("markexpr", "") == "fuzz" and whole:
        found = {_target_key(i) for i in items}
        missing = sorted(set(FUZZ_TARGETS) - found)
        if missing:
            raise pytest.UsageError(f"fuzz targets not collected: {', '.join(missing)}")


_RECORD = pytest.StashKey[TargetRecord]()


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    rec = item.stash.get(_RECORD, None)
    if rec is None:
        return (yield)
    outer = collector.value

    def note(stats: dict[str, Any]) -> None:
        cases = stats.get("generate-phase", {}).get("test-cases", [])
        rec.generated = len(cases)
        rec.invalid = sum(
            1 for phase in ("reuse", "generate", "shrink")
            for c in stats.get(f"{phase}-phase", {}).get("test-cases", [])
            if c["status"] in ("invalid", "overrun")
        )  # fmt: skip
        rec.failures = max(
            (stats.get(f"{p}-phase", {}).get("distinct-failures", 0) for p in
             ("reuse", "generate", "shrink")), default=0)  # fmt: skip
        rec.stopped_because = str(stats.get("stopped-because", ""))
        if outer is not None:
            outer(stats)

    _fuzz_log({"event": "start", "target": rec.target})
    t0 = time.monotonic()
    try:
        with collector.with_value(note):
            result = yield
        rec.outcome = "passed"
        return result
    except BaseException as exc:
        rec.outcome = f"failed: {type(exc).__name__}: {str(exc)[:300]}"
        rec.failures = max(rec.failures, 1)
        raise
    finally:
        rec.wall_s = round(time.monotonic() - t0, 3)
        rec.max_case_s = round(rec.max_case_s, 4)
        _fuzz_log({"event": "done", **asdict(rec)})


async def until_changed(
    changed: asyncio.Event, cond: Callable[[], bool], timeout: float, what: str
) -> None:
    """Wait until cond() holds, re-checking each time `changed` is set (the rig sets it on every
    nonce and event it records); AssertionError naming `what` after `timeout` seconds."""

    async def loop() -> None:
        while not cond():
            changed.clear()
            await changed.wait()

    try:
        await asyncio.wait_for(loop(), timeout)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


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

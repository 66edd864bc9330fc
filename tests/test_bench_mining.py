"""The mining bench harness (bench/run.py --only mining --quick): it runs end to end and writes
every section with the keys the README table is made from. Speeds are never asserted here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

LATENCIES = ("notify_to_work_ready", "notify_to_work_written_4_chains", "agent_on_job_to_written",
             "nonce_to_submit_sent", "nonce_verified_to_submit_sent")
PROCESS = ("startup_to_first_share_s", "rss_mb_max", "cpu_pct_agent", "emulator_process",
           "nonces_per_s", "exit_code")


def test_quick_mining_bench_writes_every_section(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    existing = {"schema": 1, "results": [{"name": "kept"}]}  # the scrypt section stays as it was
    out.write_text(json.dumps(existing))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--only", "mining", "--quick",
         "--json", str(out)],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(out.read_text())
    assert report["results"] == [{"name": "kept"}]
    m = report["mining"]
    assert m["quick"] is True
    for key in ("frames_decoded_per_s", "nonces_ingested_per_s", "decode_x_line_rate"):
        assert key in m["ingest"]
    assert set(m["latency"]) == {"idle", "http_load", "cgminer_load", "flood"}
    for phase in m["latency"].values():
        for key in LATENCIES:
            assert {"n", "p50_ms", "p99_ms", "max_ms"} <= set(phase[key])
    assert m["latency"]["idle"]["notify_to_work_written_4_chains"]["n"] > 0
    for key in ("status_api", "cgminer_4028"):
        assert {"ok_per_s", "requests", "latency_ms_p99"} <= set(m["surfaces"][key])
    assert m["surfaces"]["flood"] and all("attempts" in f for f in m["surfaces"]["flood"])
    assert {"kill_to_backup_work_written_s", "worst_s", "status"} <= set(m["failover"])
    for key in ("process_real_rate", "process_100x_rate"):
        assert set(PROCESS) <= set(m[key])
        assert m[key]["exit_code"] == 0
        assert {"cpu_pct", "rss_mb_max"} <= set(m[key]["emulator_process"])
    assert {"p50_ratio", "p99_ratio"} <= set(m["flood_vs_idle"])
    assert len(m["targets"]) == 7
    assert all(t["status"] in ("PASS", "BELOW") for t in m["targets"])


def test_short_soak_accounts_for_every_nonce(tmp_path: Path) -> None:
    """bench/soak.py for 40 s with a pool restart and chip faults every few seconds: the agent
    (its own process) keeps mining, no task dies, every nonce lands in one bucket."""
    out = tmp_path / "soak.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "soak.py"), "--minutes", "0.67", "--sample-s", "2",
         "--pool-restart-s", "12", "--pool-down-s", "2", "--fault-s", "3", "--json", str(out)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["exit_code"] == 0 and r["task_restarts"] == 0 and r["invariant_breaks"] == 0
    assert r["pool_restarts"] >= 2 and sum(r["chip_faults"].values()) >= 5
    assert r["nonces_accounted"] == sum(r["buckets"].values()) > 0
    assert r["buckets"]["pending"] == 0 and r["buckets"]["accepted"] > 0
    # every nonce the chips emitted is counted (line noise adds HW errors, so >= not ==)
    assert r["nonces_accounted"] >= r["nonces_emitted_by_chips"]
    assert r["rss_mb"]["max"] > 0 and r["emulator_rss_mb"]["end"] > 0

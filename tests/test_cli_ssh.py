"""The maintenance CLI against a running agent (`doge-agent run` on the CPU board, the local pool):
status as a table and as JSON, pools list and switch with the owner password from the
environment, logs of the agent's own rotated JSON log, and the exit codes when it is down."""

from __future__ import annotations

import io
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import pytest
from test_service import PoolThread, agent_env

from agent import cli

WAIT_S = 60
OWNER = "owner-pass-1234"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def call(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = cli.main(list(argv), out)
    return code, out.getvalue()


def wait_for(what: str, check: object, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():  # type: ignore[operator]
                return
        except OSError:
            pass
        assert time.monotonic() < deadline, what
        time.sleep(0.1)  # polling the agent's API with a deadline, not synchronising


def get_status(url: str) -> dict:
    with urllib.request.urlopen(url + "/api/status", timeout=5) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    tmp = tmp_path_factory.mktemp("agent")
    port = free_port()
    with PoolThread(1 / 64) as pool:
        pool_url = f"stratum+tcp://127.0.0.1:{pool.pool.port}"
        conf = tmp / "agent.toml"
        conf.write_text(
            f'[agent]\nstate_dir = "{tmp}"\n'
            f'[api]\nhttp_listen = "127.0.0.1:{port}"\ncgminer_listen = "127.0.0.1:0"\n'
            f'password = "{OWNER}"\n'
            '[logging]\nmax_bytes = 1024\nbackups = 2\nlevel = "debug"\nconsole = "off"\n'
            f'[[pools]]\nurl = "{pool_url}"\nuser = "wallet.a"\npriority = 0\n'
            f'[[pools]]\nurl = "{pool_url}"\nuser = "wallet.b"\npriority = 1\n'
            '[board]\nkind = "cpu"\nthreads = 1\nticket_difficulty = 0.0009765625\n'
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "-c", str(conf)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=agent_env(),
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for(
                "the agent never had a live pool",
                lambda: (
                    proc.poll() is None
                    and any(p["status"] == "alive" for p in get_status(url)["pools"])
                ),
            )
            yield {"url": url, "conf": conf, "dir": tmp, "proc": proc}
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(WAIT_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
            if proc.stderr is not None:
                proc.stderr.close()


def test_status_table_and_json(agent: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    code, out = call("status", "--url", agent["url"])
    assert code == 0, out
    assert "\x1b[" not in out  # not a terminal: no colour
    assert out.startswith("doge-agent ") and "hashrate" in out and "guardian" in out
    assert "CHAIN" in out and "HW ERR" in out and "TEMP C" in out
    assert "URL" in out and "LATENCY" in out and "alive" in out
    code, out = call("status", "--url", agent["url"], "--json")
    assert code == 0
    snap = json.loads(out)
    for key in ("hashrate_hs", "shares", "pools", "chains", "fans", "guardian", "uptime_s"):
        assert key in snap
    code, out = call("status", "-c", str(agent["conf"]))  # the address from the config file
    assert code == 0 and "CHAIN" in out


def test_pools_list_and_switch_with_the_password_from_env(
    agent: dict, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DOGE_AGENT_PASSWORD", raising=False)
    code, out = call("pools", "-c", str(agent["conf"]))
    assert code == 0 and "alive" in out and "#" in out
    # No password in the environment and no terminal: a usage error, nothing sent.
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert call("pools", "switch", "1", "-c", str(agent["conf"]))[0] == 2
    assert "DOGE_AGENT_PASSWORD" in capsys.readouterr().err
    monkeypatch.setenv("DOGE_AGENT_PASSWORD", "wrong-password")
    assert call("pools", "switch", "1", "-c", str(agent["conf"]))[0] == 1
    assert "refused the credentials" in capsys.readouterr().err
    monkeypatch.setenv("DOGE_AGENT_PASSWORD", OWNER)
    code, out = call("pools", "switch", "1", "-c", str(agent["conf"]))
    assert code == 0 and "pool 1 is now preferred" in out
    code, out = call("pools", "--json", "-c", str(agent["conf"]))
    assert code == 0
    listing = {p["user"]: p for p in json.loads(out)}
    assert listing["wallet.b"]["priority"] < listing["wallet.a"]["priority"]
    assert all("password" not in k for p in listing.values() for k in p)
    code, _ = call("pools", "switch", "7", "-c", str(agent["conf"]))
    assert code == 1 and "no pool 7" in capsys.readouterr().err
    assert call("pools", "enable", "-1")[0] == 2  # argparse: not an index
    # The owner password never reached the agent's log.
    text = "".join(p.read_text() for p in agent["dir"].glob("agent.log*"))
    assert OWNER not in text and "wrong-password" not in text


def test_logs_of_the_agents_rotated_file(agent: dict) -> None:
    log = agent["dir"] / "agent.log"
    wait_for("the log never rotated", lambda: log.with_name("agent.log.1").exists())
    assert not log.with_name("agent.log.3").exists()  # backups = 2
    assert all(p.stat().st_size <= 1024 or p.read_text().count("\n") == 1
               for p in agent["dir"].glob("agent.log*"))  # fmt: skip
    code, out = call("logs", "-c", str(agent["conf"]), "-n", "5")
    assert code == 0
    lines = [x for x in out.splitlines() if not x.startswith("    ")]
    assert len(lines) == 5
    assert all(x[:4].isdigit() and ("INFO" in x or "DEBUG" in x or "WARNING" in x) for x in lines)
    code, out = call("logs", "--file", str(log), "-n", "1000", "--level", "info")
    assert code == 0 and "DEBUG" not in out
    assert call("logs", "--file", str(agent["dir"] / "missing.log"))[0] == 1
    assert call("logs", "--since", "yesterday-ish", "--file", str(log))[0] == 2


def test_exit_codes_when_the_agent_is_down(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    assert call("status", "--url", url)[0] == 1
    assert "not reachable" in capsys.readouterr().err
    assert call("status", "--url", url, "--json")[0] == 1
    assert call("pools", "--url", url)[0] == 1
    assert call("status", "--url", "ftp://x")[0] == 2
    assert call("status", "--bogus")[0] == 2
    assert call("pools", "frobnicate")[0] == 2
    for command in (["status"], ["pools"], ["pools", "switch"], ["logs"]):
        assert call(*command, "--help")[0] == 0
    out = capsys.readouterr().out
    assert "DOGE_AGENT_PASSWORD" in out and "--follow" in out and "--json" in out

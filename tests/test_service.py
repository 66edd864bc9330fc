"""The mining service end to end: `doge-agent run` on the CPU board mines through the local pool,
its shares are accepted, every nonce is accounted for, and it stops cleanly on SIGTERM with
READY, WATCHDOG and STOPPING sent to a real notify socket."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

from conftest import ROOT

from agent.config import loads
from agent.emulator.pool import FixedDifficulty, StratumPool
from agent.sdnotify import Notifier
from agent.service import MiningService
from agent.stratum.pools import PoolOptions

WAIT_S = 60


def agent_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOGE_AGENT", "NOTIFY_"))}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


API_ON_FREE_PORTS = '[api]\nhttp_listen = "127.0.0.1:0"\ncgminer_listen = "127.0.0.1:0"\n'


def cpu_config(tmp_path: Path, pool_url: str, password: str = "x") -> str:
    return (
        API_ON_FREE_PORTS + f'[agent]\nstate_dir = "{tmp_path}"\n'
        f'[[pools]]\nurl = "{pool_url}"\nuser = "wallet.rig1"\npassword = "{password}"\n'
        '[board]\nkind = "cpu"\nthreads = 1\nticket_difficulty = 0.0009765625\n'
    )


def emulated_config(tmp_path: Path, pool_port: int, board: str = "", api: str = "") -> str:
    """The emulated L3+ against the local pool, surfaces on free ports."""
    return (
        API_ON_FREE_PORTS + api + f'[agent]\nstate_dir = "{tmp_path}"\n'
        f'[[pools]]\nurl = "stratum+tcp://127.0.0.1:{pool_port}"\nuser = "w.1"\n'
        f'[board]\nkind = "emulated"\n{board}'
    )


async def start_service(service: MiningService) -> tuple[asyncio.Event, asyncio.Task[int]]:
    """Runs the service until the returned event is set; returns once it is mining."""
    stop = asyncio.Event()
    runner = asyncio.create_task(service.run(stop))
    await asyncio.wait_for(service.ready.wait(), WAIT_S)
    return stop, runner


def test_service_in_process_counts_every_nonce(tmp_path: Path) -> None:
    """Against the local pool in the same loop: shares accepted, the nonce invariant holds, and
    the pool saw exactly the shares the agent counted as accepted."""

    async def main() -> None:
        pool = StratumPool(policy=FixedDifficulty(1 / 64))
        await pool.start()
        conf = loads(cpu_config(tmp_path, f"stratum+tcp://127.0.0.1:{pool.port}"))
        service = MiningService(conf, pool_options=PoolOptions(stability_s=0.5))
        stop, runner = await start_service(service)
        assert service.shares is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_S
        while service.shares.counts["accepted"] < 5 and loop.time() < deadline:
            await asyncio.sleep(0.05)  # polling a counter with a deadline, not synchronising
        stop.set()
        assert await asyncio.wait_for(runner, WAIT_S) == 0
        snap = service.state.snapshot()
        s = snap["shares"]
        assert s["accepted"] >= 5
        assert snap["nonces"] == sum(s.values())
        assert s["rejected"] == 0 and s["hw_errors"] == 0
        assert s["below_target"] > 0  # ticket 1/1024 is far easier than the pool's 1/64
        assert pool.stats.accepted == s["accepted"]
        await pool.stop()

    asyncio.run(main())


class PoolThread:
    """The local pool on its own loop in a thread, for a test driving a subprocess."""

    def __init__(self, difficulty: float) -> None:
        self.started = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.pool = StratumPool(policy=FixedDifficulty(difficulty))
        self.thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.pool.start())
        self.started.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.pool.stop())

    def __enter__(self) -> PoolThread:
        self.thread.start()
        assert self.started.wait(WAIT_S)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(WAIT_S)


def test_run_mines_through_the_pool_and_stops_cleanly(tmp_path: Path) -> None:
    sock_path = tmp_path / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(sock_path))
    notify.settimeout(WAIT_S)
    with PoolThread(1 / 64) as pool:
        conf = tmp_path / "agent.toml"
        conf.write_text(cpu_config(tmp_path, f"stratum+tcp://127.0.0.1:{pool.pool.port}", "s3cr3t"))
        env = agent_env()
        env.update(NOTIFY_SOCKET=str(sock_path), WATCHDOG_USEC="400000")
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "-c", str(conf)],
            stderr=subprocess.PIPE, text=True, env=env,
        )
        try:
            messages = [notify.recv(4096).decode()]
            while not messages[-1].startswith("READY=1"):
                messages.append(notify.recv(4096).decode())
            log = []
            assert proc.stderr is not None
            for line in proc.stderr:  # blocks until the first share is accepted (or exit)
                log.append(line)
                if "first share accepted" in line:
                    break
            assert any("first share accepted" in line for line in log), "".join(log)
            assert notify.recv(4096) == b"WATCHDOG=1"  # pinged every 0.2 s while healthy
            proc.send_signal(signal.SIGTERM)
            _, rest = proc.communicate(timeout=WAIT_S)
        finally:
            if proc.poll() is None:
                proc.kill()
        tail = []
        notify.settimeout(1)
        try:
            while True:
                tail.append(notify.recv(4096).decode())
        except TimeoutError:
            pass
        notify.close()
    text = "".join(log) + rest
    assert proc.returncode == 0, text
    assert any(m.startswith("STOPPING=1") for m in tail), tail
    assert "stopped cleanly" in text
    assert "s3cr3t" not in text
    final = re.findall(r"nonces (\d+): accepted (\d+), rejected (\d+), stale (\d+), "
                       r"below target (\d+), hw errors (\d+), pending (\d+)", text)[-1]
    nonces, *buckets = map(int, final)
    assert buckets[0] >= 1 and nonces == sum(buckets)


def test_a_board_kind_without_a_driver_is_refused(tmp_path: Path) -> None:
    conf = loads('[board]\nkind = "l3plus"\n')

    async def main() -> int:
        service = MiningService(conf, notifier=Notifier({}), serve_surfaces=False)
        return await service.run(asyncio.Event())

    assert asyncio.run(main()) == 1


def test_emulated_board_mines_through_the_chip_protocol(tmp_path: Path) -> None:
    """kind = "emulated": the real chain driver over pseudo-terminals to the emulated BM1485
    chips, the real board drivers against the emulated PICs, fans and sensors; shares accepted
    by the local pool, every nonce accounted for, chains powered down at shutdown."""

    async def main() -> None:
        pool = StratumPool(policy=FixedDifficulty(1 / 256))
        await pool.start()
        conf = loads(emulated_config(tmp_path, pool.port, "chains = 4\nchips_per_chain = 72\n"))
        service = MiningService(conf, notifier=Notifier({}))
        stop, runner = await start_service(service)
        assert service.shares is not None and service.emulator is not None
        emulator = service.emulator
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_S
        while loop.time() < deadline and (
            service.shares.counts["accepted"] < 5
            or any(c["chips"] != 72 for c in service.state.snapshot()["chains"])
        ):
            await asyncio.sleep(0.1)  # polling counters against a deadline
        snap = service.state.snapshot()
        stop.set()
        assert await asyncio.wait_for(runner, WAIT_S) == 0
        s = snap["shares"]
        assert s["accepted"] >= 5 and s["hw_errors"] == 0 and s["rejected"] == 0
        assert snap["nonces"] == sum(s.values())
        assert [c["chips"] for c in snap["chains"]] == [72] * 4
        assert {c["frequency_mhz"] for c in snap["chains"]} == {384.375}
        assert len(snap["fans"]) == 2
        # shutdown powered every chain down through its PIC
        assert not any(p.dc_dc_on for p in emulator.peripherals.pics)
        await pool.stop()

    asyncio.run(main())


def http(port: int, path: str, method: str = "GET", body: bytes = b"",
         headers: dict[str, str] | None = None) -> tuple[int, bytes]:  # fmt: skip
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def cgminer(port: int, command: str) -> dict:
    import json

    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(json.dumps({"command": command}).encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return json.loads(data.rstrip(b"\0"))


def test_surfaces_and_controls_of_a_running_agent(tmp_path: Path) -> None:
    """The emulated L3+ seen through /api/status, /metrics and the cgminer API; pause and resume
    only with the owner's password; the LEDs follow; the password never shows."""
    import base64
    import json

    async def main() -> None:
        pool = StratumPool(policy=FixedDifficulty(1 / 256))
        await pool.start()
        conf = loads(emulated_config(tmp_path, pool.port, api='password = "owner-pw-123"\n'))
        service = MiningService(conf, notifier=Notifier({}))
        stop, runner = await start_service(service)
        assert service.surfaces is not None and service.surfaces.web is not None
        web, api4028 = service.surfaces.web.port, service.surfaces.cgminer.port
        loop = asyncio.get_running_loop()
        call = lambda *a, **k: loop.run_in_executor(None, lambda: http(*a, **k))  # noqa: E731
        deadline = loop.time() + WAIT_S
        while loop.time() < deadline and service.state.snapshot()["shares"]["accepted"] < 3:
            await asyncio.sleep(0.1)  # polling a counter against a deadline

        status, body = await call(web, "/api/status")
        snap = json.loads(body)
        assert status == 200 and [c["chips"] for c in snap["chains"]] == [72] * 4
        assert snap["shares"]["accepted"] >= 3
        status, metrics = await call(web, "/metrics")
        assert status == 200 and b"hashrate" in metrics
        summary = await loop.run_in_executor(None, cgminer, api4028, "summary")
        assert summary["STATUS"][0]["STATUS"] == "S"

        status, _ = await call(web, "/api/control/pause", "POST", b"{}")
        assert status == 401 and not service.paused
        good = {"Authorization": "Basic " + base64.b64encode(b"root:owner-pw-123").decode(),
                "Content-Type": "application/json"}  # fmt: skip
        bad = dict(good, Authorization="Basic " + base64.b64encode(b"root:wrong").decode())
        status, _ = await call(web, "/api/control/pause", "POST", b"{}", bad)
        assert status == 401 and not service.paused
        status, body = await call(web, "/api/control/pause", "POST", b"{}", good)
        assert status == 200 and service.paused, body
        emulator = service.emulator
        assert not any(p.dc_dc_on for p in emulator.peripherals.pics)
        assert service.state.snapshot()["guardian"]["state"] == "paused"
        status, _ = await call(web, "/api/control/resume", "POST", b"{}", good)
        assert status == 200 and not service.paused
        assert all(p.dc_dc_on for p in emulator.peripherals.pics)
        before = service.state.snapshot()["nonces"]
        deadline = loop.time() + WAIT_S
        while loop.time() < deadline and service.state.snapshot()["nonces"] <= before:
            await asyncio.sleep(0.1)
        assert service.state.snapshot()["nonces"] > before, "no nonce after resume"
        status, _ = await call(web, "/api/control/locate", "POST", b'{"on": true}', good)
        assert status == 200
        assert service.board is not None and service.board.green.pattern == "locate"

        stop.set()
        assert await asyncio.wait_for(runner, WAIT_S) == 0
        await pool.stop()

    asyncio.run(main())


def test_guardian_pauses_and_resumes_the_running_agent(tmp_path: Path) -> None:
    """Prices in the local cache file cross the threshold: the agent pauses hashing (pools kept)
    and resumes; an owner's pause is never lifted by the guardian."""
    import json

    prices = tmp_path / "prices.json"

    def set_price(ltc_usd: float) -> None:
        prices.write_text(json.dumps({"litecoin": {"usd": ltc_usd}, "dogecoin": {"usd": 1e-9}}))

    async def wait_for(cond, what: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_S
        while not cond():
            assert loop.time() < deadline, what
            await asyncio.sleep(0.05)  # polling state against a deadline

    async def main() -> None:
        pool = StratumPool(policy=FixedDifficulty(1 / 64))
        await pool.start()
        set_price(0.01)  # at the local pool's easy nBits: ~0.1 USD/day against 1.9 USD/day power
        conf = loads(
            cpu_config(tmp_path, f"stratum+tcp://127.0.0.1:{pool.port}")
            + '[guardian]\nenabled = true\nmin_dwell_s = 0\ninterval_s = 1\n'
            'electricity_usd_kwh = 0.1\nwatts_default = 800\n'
        )
        service = MiningService(conf, notifier=Notifier({}))
        stop, runner = await start_service(service)
        await wait_for(lambda: service.paused, "the guardian never paused")
        assert service.paused_by == "guardian"
        snap = service.state.snapshot()
        assert snap["guardian"]["state"] == "paused" and "guardian" in str(snap["guardian"])
        await wait_for(lambda: service.pools is not None and service.pools.active is not None,
                       "pools are kept connected while paused")  # fmt: skip
        set_price(10.0)
        await wait_for(lambda: not service.paused, "the guardian never resumed")
        before = service.state.snapshot()["nonces"]
        await wait_for(lambda: service.state.snapshot()["nonces"] > before, "no nonce after resume")
        await service.controls.pause("owner")
        set_price(0.01)
        guardian = service.guardian
        assert guardian is not None
        await wait_for(lambda: guardian.last is not None and guardian.last.state == "paused",
                       "the guardian did not see the low price")  # fmt: skip
        set_price(10.0)
        await wait_for(lambda: guardian.last is not None and guardian.last.state == "mining",
                       "the guardian did not see the high price")  # fmt: skip
        assert service.paused and service.paused_by == "owner"  # the owner's pause holds
        stop.set()
        assert await asyncio.wait_for(runner, WAIT_S) == 0
        await pool.stop()

    asyncio.run(main())


def test_heat_ramp_on_the_running_agent(tmp_path: Path) -> None:
    """Ambient climbs from 25 to 60 °C around the emulated L3+ (its physics 20x faster than real
    time): the running agent's thermal loop raises the fans, throttles and powers chains off as it
    must, with reasons, and no chip ever passes the dangerous limit."""

    async def main() -> None:
        pool = StratumPool(policy=FixedDifficulty(1 / 256))
        await pool.start()
        conf = loads(emulated_config(tmp_path, pool.port))
        service = MiningService(conf, notifier=Notifier({}))
        stop, runner = await start_service(service)
        emulator = service.emulator
        assert emulator is not None and service.thermal is not None
        emulator.physics_speed = 20.0
        settle = loop_time = asyncio.get_running_loop().time()
        while service.thermal.last is None or service.thermal.last.fan_code != "pid":
            assert asyncio.get_running_loop().time() - settle < WAIT_S, "no PID fan control"
            await asyncio.sleep(0.1)  # the sensors answer after the chains' first poll
        first_duty = service.thermal.last.fan_duty_pct or 0.0
        del loop_time
        thermal = emulator.peripherals.thermal
        dangerous = conf.thermal.dangerous_temp_c
        hottest = 0.0
        loop = asyncio.get_running_loop()
        ramp_s = 30.0  # real seconds: 10 simulated minutes
        started = loop.time()
        while (elapsed := loop.time() - started) < ramp_s + 5:
            thermal.ambient_c = 25.0 + 35.0 * min(1.0, elapsed / ramp_s)
            hottest = max(hottest, *(thermal.chip_temp_c(i) for i in range(4)))
            assert not runner.done(), "the agent stopped during the heat ramp"
            await asyncio.sleep(0.1)  # sampling the model, not synchronising
        counts = dict(service.thermal.counts)
        last = service.thermal.last
        stop.set()
        assert await asyncio.wait_for(runner, WAIT_S) == 0
        await pool.stop()
        duty = last.fan_duty_pct if last else None
        print(f"\nheat ramp: hottest chip {hottest:.1f} °C (dangerous {dangerous} °C), "
              f"fans {first_duty} -> {duty} %, {counts}")  # fmt: skip
        assert hottest < dangerous, f"a chip reached {hottest:.1f} °C"
        assert last is not None and last.fan_duty_pct is not None
        assert last.fan_duty_pct > first_duty, "the fans did not follow the heat"
        acted = [k for k in counts if k.startswith(("chain:throttle", "chain:power_off"))]
        if hottest > conf.thermal.hot_temp_c:  # above hot, the loop must have stepped in
            assert acted, counts

    asyncio.run(main())

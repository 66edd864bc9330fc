"""The mining service: starts every part in order, joins the mining path, and stops in order.

    start:  self-test -> hashing side -> work source + share path -> pools -> READY
    run:    pool job -> WorkSource -> one piece of work per hashing unit (a CPU board, or a chain)
            nonce -> SharePath (classify, verify, submit, account)
    stop:   STOPPING -> hashing side stopped (its last nonces are still reported) -> shares in
            flight answered (bounded wait) -> pools closed

The watchdog is pinged only while the loop turns and every hashing unit is alive, so systemd
restarts an agent whose hashing has died, not one that is merely waiting for a pool."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from agent import __version__, scrypt, selftest
from agent import defaults as D
from agent.alerts import AlertHook, AlertOptions
from agent.config import Config
from agent.control.thermal import ThermalDecision, ThermalLoop, ThermalOptions
from agent.hardware.board import Board, BoardError
from agent.hardware.chain import Chain, ChainError, ChainEvent
from agent.hardware.cpu import CpuBoard, Nonce, Work
from agent.hardware.leds import status_patterns
from agent.mining.shares import SharePath
from agent.mining.work import WorkSource
from agent.sdnotify import Notifier
from agent.security import secrets
from agent.state import State
from agent.stratum.client import Job as PoolJob
from agent.stratum.pools import PoolManager, PoolOptions, PoolSpec
from agent.surfaces import PoolEntry, ServiceControls, Surfaces

log = logging.getLogger(__name__)


class HashingUnit(Protocol):
    """What the service needs of a CPU board or a chain of chips."""

    def set_work(self, work: Work) -> None: ...
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def wait(self) -> None: ...


class StartupError(RuntimeError):
    """The service cannot start; the text says why."""


class MiningService:
    def __init__(
        self,
        conf: Config,
        *,
        state: State | None = None,
        notifier: Notifier | None = None,
        pool_options: PoolOptions | None = None,
        serve_surfaces: bool = True,
    ) -> None:
        self.conf = conf
        self.state = state or State()
        self.notifier = notifier or Notifier()
        self.pool_options = pool_options or PoolOptions()
        self.units: list[HashingUnit] = []
        self.work: WorkSource | None = None
        self.shares: SharePath | None = None
        self.pools: PoolManager | None = None
        self.ready = asyncio.Event()
        self._unit_watch: list[asyncio.Task[None]] = []
        self.board: Board | None = None  # the peripherals of a chip board (l3plus, emulated)
        self.emulator: Any = None  # agent.emulator.board.EmulatedL3Plus for kind = "emulated"
        self.remote: Any = None  # agent.hardware.remote.RemoteMiner for kind = "remote"
        self.thermal: ThermalLoop | None = None
        self._thermal_task: asyncio.Task[None] | None = None
        self._thermal_off: set[int] = set()  # chains the thermal loop has powered down
        self.events: list[ChainEvent] = []  # recent chain events, newest last
        self.serve_surfaces = serve_surfaces
        self.controls = ServiceControls(self)
        self.surfaces: Surfaces | None = None
        self.secret_filter = secrets.SecretFilter()
        self.owner_password = ""
        self.pool_entries: list[PoolEntry] = []
        self.alerts = AlertHook(AlertOptions.from_config(conf.alerts))
        self.paused = False
        self._restart = asyncio.Event()

    # ------------------------------------------------------------------------------ lifecycle

    async def run(self, stop: asyncio.Event) -> int:
        """Runs until `stop` is set or a hashing unit dies; returns the process exit code.
        A restart asked through the controls stops and starts the mining side in place; the
        surfaces keep serving."""
        try:
            self._load_secrets()
            await self.alerts.start()
            if self.serve_surfaces:
                await self._start_surfaces()
        except StartupError as exc:
            log.error("cannot start: %s", exc)
            await self._stop_surfaces()
            await self.alerts.stop()
            return 2
        code = 0
        while True:
            try:
                await self.start()
            except StartupError as exc:
                log.error("cannot start: %s", exc)
                await self.shutdown()
                code = 1
                break
            outcome = await self._wait(stop)
            await self.shutdown()
            if outcome != "restart":
                code = 1 if outcome == "failed" else 0
                break
            log.info("restarting the mining service")
        await self._stop_surfaces()
        await self.alerts.stop(grace_s=self.alerts.options.timeout_s)
        log.info("stopped cleanly" if code == 0 else "stopped")
        return code

    def _load_secrets(self) -> None:
        """The board's key (created at first start), pool and owner passwords decrypted, and a
        log filter that masks every one of them."""
        conf = self.conf
        needs_key = any(p.password_enc for p in conf.pools) or conf.api.password_enc
        try:
            key = secrets.ensure_key(conf.agent.state_dir) if needs_key else None
            passwords = secrets.resolve_pool_passwords(conf, key) if key else [
                p.password if p.password is not None else D.POOL_PASSWORD for p in conf.pools
            ]
            owner = conf.api.password or ""
            if conf.api.password_enc and key is not None:
                owner = secrets.decrypt(conf.api.password_enc, key, "api.password_enc")
        except secrets.SecretsError as exc:
            raise StartupError(str(exc)) from None
        self.owner_password = owner
        for secret in (*passwords, owner, conf.api.token or ""):
            if secret:
                self.secret_filter.add(secret)
        secrets.install_secret_filter(self.secret_filter)
        self.pool_entries = [
            PoolEntry(p.url, p.user, pw, p.priority)
            for p, pw in zip(conf.pools, passwords, strict=True)
        ]

    async def _start_surfaces(self) -> None:
        token = self.conf.api.token or ""
        self.surfaces = Surfaces(self, self.controls, self.owner_password, token)
        try:
            await self.surfaces.start()
        except OSError as exc:
            raise StartupError(f"cannot listen: {exc}") from None

    async def _stop_surfaces(self) -> None:
        if self.surfaces is not None:
            await self.surfaces.stop()
            self.surfaces = None

    async def start(self) -> None:
        conf = self.conf
        log.info("doge-agent %s starting (%s)", __version__, ", ".join(conf.sources) or "defaults")
        self.notifier.status("self-test")
        report = io.StringIO()
        if selftest.run(report) != 0:
            raise StartupError("the scrypt self-test failed:\n" + report.getvalue())
        log.info("self-test passed on %s", ", ".join(scrypt.backends()))

        self.notifier.status("starting the hashing side")
        self.units = await self._make_units()
        many = len(self.units) > 1
        self.work = WorkSource(
            id_space=D.CHIP_WORK_IDS if many else D.CPU_WORK_IDS, works_per_job=len(self.units)
        )
        self.shares = SharePath(
            self.work, self.state, conf.board.ticket_difficulty, self._submit
        )
        if not self.paused or self.remote is not None:  # a remote miner is read while paused
            await self._start_units()
        if self.board is not None:
            self._start_thermal()
        await self.rebuild_pools()
        self._publish()  # the chains are in the snapshot before the first tick
        self.ready.set()
        self.notifier.ready(f"mining on {self._describe()}")
        log.info("mining on %s", self._describe())

    async def _start_units(self) -> None:
        for unit in self.units:
            try:
                await unit.start()
            except ChainError as exc:
                raise StartupError(str(exc)) from None
        self._unit_watch = [asyncio.create_task(u.wait()) for u in self.units]

    async def _stop_units(self) -> None:
        watches, self._unit_watch = self._unit_watch, []
        for task in watches:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for unit in self.units:
            with contextlib.suppress(Exception):
                await unit.stop()

    async def shutdown(self) -> None:
        self.ready.clear()
        self.notifier.stopping("stopping")
        if self._thermal_task is not None:
            self._thermal_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._thermal_task
            self._thermal_task = None
        await self._stop_units()
        self.remote = None  # a stopped agent leaves the remote miner as it is
        if self.board is not None:
            await self.board.power_off_all("agent stopping")
            await self.board.close()
            self.board = None
        if self.emulator is not None:
            await self.emulator.stop()
            self.emulator = None
        if self.shares is not None:
            unanswered = await self.shares.drain(D.SHUTDOWN_SHARE_WAIT_S)
            if unanswered:
                log.warning("%d share(s) still unanswered at shutdown: left pending", unanswered)
        if self.pools is not None:
            pools, self.pools = self.pools, None
            await pools.stop()
        self._log_status()

    def request_restart(self) -> None:
        self._restart.set()

    async def pause(self, reason: str) -> None:
        """Hashing stopped and chains powered down; pools stay connected."""
        if self.paused:
            return
        if self.remote is not None:
            await self._remote_mining(False, reason)  # ControlError unless a re-read confirms
        self.paused = True
        self.state.set_guardian("paused", reason)
        log.warning("paused: %s", reason)
        self.alerts.condition("paused", True, f"mining paused: {reason}")
        if self.remote is None:  # a remote miner stays read while paused
            await self._stop_units()
        if self.board is not None:
            await self.board.power_off_all(reason)
        self.show_leds()

    async def resume(self, reason: str) -> None:
        if not self.paused:
            return
        if self.remote is not None:
            await self._remote_mining(True, reason)  # ControlError unless a re-read confirms
        self.paused = False
        self.state.set_guardian("mining", reason)
        self.alerts.condition("paused", False)
        log.info("resuming: %s", reason)
        if self.board is not None:
            present = self.board.present()
            for i, chain in enumerate(self.board.chains):
                if chain is not None and present[i] and i not in self._thermal_off:
                    await self.board.power_on(i)
        if self.remote is None:
            await self._start_units()
            if self.work is not None:
                for unit in self.units:
                    self._more_work(unit)
        self.show_leds()

    async def _remote_mining(self, mining: bool, reason: str) -> None:
        """The remote miner paused or resumed through pyasic, confirmed by re-reading it."""
        from agent.api.controls import ControlError
        from agent.hardware.remote import RemoteError

        try:
            await (self.remote.resume if mining else self.remote.pause)(reason)
        except RemoteError as exc:
            raise ControlError(str(exc)) from None

    async def rebuild_pools(self) -> None:
        """(Re)start the pool manager on the enabled pools, in priority order."""
        if self.pools is not None:
            old, self.pools = self.pools, None  # its stop is no "all pools down"
            await old.stop()
        if self.conf.board.kind == "remote":
            log.info("board.kind = remote: the remote miner mines its own pools; none joined here")
            return
        specs = [
            PoolSpec(url=p.url, user=p.user, password=p.password, priority=p.priority)
            for p in self.pool_entries
            if p.enabled
        ]
        if not specs:
            log.warning("no pool is configured or enabled: nothing will be mined until one is")
            return
        self.pools = manager = PoolManager(
            specs, self.pool_options, on_job=self._on_job, state=self.state,
            on_active=lambda label: self._on_active_pool(manager, label),
        )  # fmt: skip
        self.notifier.status("connecting to pools")
        await self.pools.start()

    def _on_active_pool(self, manager: PoolManager, label: str | None) -> None:
        if manager is self.pools:  # not a manager being stopped
            self.alerts.condition("pools_down", label is None, "all pools are down")

    def pool_stats(self) -> list[Any]:
        return self.pools.stats() if self.pools is not None else []

    def _submit(self, job: PoolJob, extranonce2: bytes, ntime: int, nonce: int) -> Any:
        if self.pools is None:
            raise RuntimeError("no pool manager")
        return self.pools.submit(job, extranonce2, ntime, nonce)

    async def _wait(self, stop: asyncio.Event) -> str:
        """Waits for stop, a restart request or a dead hashing unit; returns which. Meanwhile
        publishes readings, pings the watchdog and logs the status."""
        stopper = asyncio.create_task(stop.wait())
        restarter = asyncio.create_task(self._restart.wait())
        ping_s = self.notifier.watchdog_interval_s()
        tick_s = min(ping_s or D.PUBLISH_INTERVAL_S, D.PUBLISH_INTERVAL_S)
        last_log = asyncio.get_running_loop().time()
        try:
            while True:
                watch = {stopper, restarter, *self._unit_watch}
                done, _ = await asyncio.wait(watch, timeout=tick_s, return_when="FIRST_COMPLETED")
                if stopper in done:
                    return "stop"
                if restarter in done:
                    self._restart.clear()
                    return "restart"
                for task in done:
                    if task.cancelled():
                        continue  # a paused unit's watch
                    log.error("a hashing unit stopped: %s", task.exception() or "it returned")
                    return "failed"
                if ping_s:
                    self.notifier.watchdog()
                self._publish()
                now = asyncio.get_running_loop().time()
                if now - last_log >= D.STATUS_LOG_INTERVAL_S:
                    last_log = now
                    self._log_status()
        finally:
            stopper.cancel()
            restarter.cancel()

    # ------------------------------------------------------------------------------ the path

    async def _make_units(self) -> list[HashingUnit]:
        board = self.conf.board
        if board.kind == "cpu":
            return [
                CpuBoard(
                    board.threads,
                    board.ticket_difficulty,
                    self._on_nonce,
                    on_exhausted=self._exhausted(0),
                    on_hashes=lambda _chip, n: self.state.add_hashes(0, n),
                )
            ]
        if board.kind == "emulated":
            from agent.emulator.board import EmulatedL3Plus

            root = Path(self.conf.agent.state_dir) / D.EMULATOR_DIR
            self.emulator = EmulatedL3Plus(
                root, chains=board.chains, chips=board.chips_per_chain,
                ticket_difficulty=board.ticket_difficulty,
            )  # fmt: skip
            await self.emulator.start()
            profile = self.emulator.profile
            peripherals = self.emulator.peripherals
        elif board.kind == "remote":
            return [self._make_remote()]
        elif board.kind == "l3plus":
            from agent.hardware import profile as PR

            try:
                profile = PR.load("l3plus", board)
            except PR.ProfileError as exc:
                raise StartupError("; ".join(exc.errors)) from None
            peripherals = None
        else:
            raise StartupError(f'board.kind = "{board.kind}" has no driver in this build yet')
        try:
            self.board = Board.open(profile, emulator=peripherals)
        except BoardError as exc:
            raise StartupError(str(exc)) from None
        self.board.start()
        present = self.board.present()
        for i in range(profile.chains):
            if present[i]:
                await self.board.power_on(i)
        chains = self.board.build_chains(self._make_chain)
        units: list[HashingUnit] = [c for c in chains if c is not None]
        if not units:
            raise StartupError("no hash board is present")
        return units

    def _make_remote(self) -> HashingUnit:
        """A stock miner read and controlled through pyasic (the optional `remote` extra). Its
        web password, when not the stock default, comes from DOGE_AGENT_REMOTE_PASSWORD."""
        import os

        try:
            from agent.hardware.remote import RemoteMiner

            password = os.environ.get("DOGE_AGENT_REMOTE_PASSWORD") or None
            if password:
                self.secret_filter.add(password)
            self.remote = RemoteMiner(self.conf.board.host or "", self.state, web_password=password)
        except RuntimeError as exc:  # pyasic missing: the message names the extra to install
            raise StartupError(str(exc)) from None
        return self.remote

    def _make_chain(self, index: int, uart: str, board: Board) -> Chain:
        conf = self.conf.board
        profile = board.profile
        return Chain(
            uart, index, ticket_difficulty=conf.ticket_difficulty,
            expected_chips=profile.chips_per_chain,
            sensor_chips=tuple(profile.sensor_chip_addresses), on_nonce=self._on_nonce,
            on_exhausted=lambda _old, i=index: self._more_work(board.chains[i]),
            on_event=self._on_chain_event, reset=lambda i=index: board.reset_chain(i),
            baudrate=profile.uart_baud,
        )  # fmt: skip

    def _on_chain_event(self, event: ChainEvent) -> None:
        self.events.append(event)
        del self.events[: -D.RECENT_EVENTS]
        if event.kind in ("chain_dead", "chain_recovered"):
            self.alerts.condition("chain_dead", event.kind == "chain_dead",
                                  f"chain {event.chain}: dead: {event.detail}",
                                  key=f"chain_dead:{event.chain}", chain=event.chain)  # fmt: skip
        if event.kind not in ("hw_error", "stale", "crc_error"):  # the chain logs those itself
            chip = "" if event.chip is None else f" (chip {event.chip})"
            log.info("chain %d: %s%s: %s", event.chain, event.kind, chip, event.detail)

    def _start_thermal(self) -> None:
        board = self.board
        assert board is not None
        chains = {i: c for i, c in enumerate(board.chains) if c is not None}
        self.thermal = ThermalLoop(
            read_temps=lambda: {i: [c.temp_c] for i, c in chains.items()},
            read_fans=lambda: board.sample_fans(time.monotonic()),
            apply=self._apply_thermal,
            options=ThermalOptions.from_config(self.conf.thermal),
        )
        self._thermal_task = asyncio.create_task(self.thermal.run(), name="thermal")

    async def _apply_thermal(self, d: ThermalDecision) -> None:
        board = self.board
        assert board is not None
        if d.fan_duty_pct is not None:
            board.fans.set_duty(d.fan_duty_pct)
        for action in d.chains:
            i = action.chain
            if action.action == "power_off" and i not in self._thermal_off:
                self._thermal_off.add(i)
                await board.power_off(i, action.reason)
            elif action.action != "power_off" and i in self._thermal_off:
                self._thermal_off.discard(i)
                log.info("chain %d: power on again: %s", i, action.reason)
                await board.power_on(i)  # the chain driver re-boots the silent chain itself
        self._thermal_alerts(d)

    def _thermal_alerts(self, d: ThermalDecision) -> None:
        """Edge-triggered: the hook fires when a latched flag appears, not on every tick."""
        hot = [a.reason for a in d.chains if a.code == "overheat"]
        self.alerts.condition("overheat", "overheat" in d.flags,
                              "overheat shutdown: " + "; ".join(hot or ["a chain tripped"]))
        self.alerts.condition("fan_failure", "fan_failed" in d.flags, d.fan_reason)  # fmt: skip

    def _exhausted(self, index: int) -> Callable[[Work], None]:
        return lambda _old: self._more_work(self.units[index])

    def _more_work(self, unit: HashingUnit | None) -> None:
        assert self.work is not None
        fresh = self.work.next_work()
        if unit is None:
            return
        if fresh is not None:
            unit.set_work(fresh)
        else:
            log.warning("no more work for the current job; waiting for the pool's next one")

    def _on_job(self, job: PoolJob) -> None:
        assert self.work is not None and self.shares is not None
        pool_id = self.shares.note_job(job)
        n = job.notify
        works = self.work.on_job(pool_id, n, job.difficulty, job.extranonce1, job.extranonce2_size)
        for unit, work in zip(self.units, works, strict=False):
            unit.set_work(work)
        log.debug("job %s from %s: %d work(s), difficulty %g", n.job_id, job.pool, len(works),
                  job.difficulty)  # fmt: skip

    def _on_nonce(self, found: Nonce) -> None:
        assert self.shares is not None
        self.shares.on_nonce(found)

    # ------------------------------------------------------------------------------ reporting

    def show_leds(self) -> None:
        """The LEDs follow the agent: located, paused, a board fault, or mining."""
        if self.board is None:
            return
        if self.controls.locating():
            status = "locate"
        elif self.paused:
            status = "stopped"
        else:
            status = "fault" if self.board.problems or self._thermal_off else "healthy"
        red, green = status_patterns(status)
        self.board.red.set(red)
        self.board.green.set(green)

    def _publish(self) -> None:
        """Chain and fan readings into the snapshot the surfaces read."""
        if self.board is None:
            return
        self.show_leds()
        for chain in self.board.chains:
            if chain is not None:
                self.state.set_chain(
                    chain.chain, chips=chain.chip_count, frequency_mhz=chain.frequency_mhz,
                    temp_c=chain.temp_c,
                )
        self.state.set_fans(self.board.fan_status())

    def _describe(self) -> str:
        board = self.conf.board
        if board.kind == "cpu":
            return f"the CPU board ({board.threads} thread(s), {scrypt.backend()})"
        if board.kind == "remote":
            return f"the remote miner at {board.host}"
        return f"{len(self.units)} chain(s)"

    def _log_status(self) -> None:
        snap: dict[str, Any] = self.state.snapshot()
        s = snap["shares"]
        log.info(
            "hashrate %.0f H/s; nonces %d: accepted %d, rejected %d, stale %d, below target %d, "
            "hw errors %d, pending %d",
            snap["hashrate_hs"], snap["nonces"], s["accepted"], s["rejected"], s["stale"],
            s["below_target"], s["hw_errors"], s["pending"],
        )  # fmt: skip

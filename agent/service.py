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
import dataclasses
import gc
import hashlib
import io
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from agent import __version__, scrypt, selftest
from agent import defaults as D
from agent.alerts import AlertHook, AlertOptions
from agent.config import Config, ConfigError, overlay_path
from agent.config import load as load_config
from agent.control.guardian import GuardianLoop, GuardianOptions
from agent.control.thermal import ThermalDecision, ThermalLoop, ThermalOptions
from agent.control.tuner import TunerAction, TunerDecision, TunerLoop, TunerOptions, apply_to
from agent.hardware.board import Board, BoardError
from agent.hardware.chain import Chain, ChainError, ChainEvent, ChainTuning
from agent.hardware.cpu import CpuBoard, Nonce, Work
from agent.hardware.leds import status_patterns
from agent.hardware.pic import voltage_from_code
from agent.mining.shares import SharePath
from agent.mining.work import WorkSource
from agent.persist import StateFile
from agent.sdnotify import Notifier
from agent.security import secrets
from agent.state import State, check_counters
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


class SupervisionError(RuntimeError):
    """A background task died too often within the window: the agent exits for systemd."""


def chain_readings(chain: Chain) -> list[float | None]:
    """Every temperature a chain's sensors give, PCB and die: the thermal loop must judge on the
    chips' own diodes, which run well above the board under load. None for a sensor not read."""
    out: list[float | None] = []
    for reading in chain.temps.values():
        out += [None] if reading is None else [reading.local_c, reading.remote_c]
    return out or [None]


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
        self._throttled: dict[int, float] = {}  # chains the thermal loop runs below 100 % clock
        self.tuner: TunerLoop | None = None
        self._tuner_task: asyncio.Task[None] | None = None
        self.events: list[ChainEvent] = []  # recent chain events, newest last
        self.serve_surfaces = serve_surfaces
        self.controls = ServiceControls(self)
        self.surfaces: Surfaces | None = None
        self.secret_filter = secrets.SecretFilter()
        self.owner_password = ""
        self.pool_entries: list[PoolEntry] = []
        self.alerts = AlertHook(AlertOptions.from_config(conf.alerts))
        self.paused = False
        self.paused_by: str | None = None
        self.guardian: GuardianLoop | None = None
        self._guardian_task: asyncio.Task[None] | None = None
        self._restart = asyncio.Event()
        self._reload = asyncio.Event()  # SIGHUP or a changed config file
        self.counts: Counter[str] = Counter()  # task deaths, reloads applied and refused
        self._deaths: dict[str, list[float]] = {}  # task name -> monotonic times it died
        self._unit_down: dict[int, float] = {}  # dead unit index -> deadline of its restart
        self._pools_restart: asyncio.Task[None] | None = None
        self.save_interval_s = D.STATE_SAVE_INTERVAL_S
        # Fixed for the life of the process: a reload that moves state_dir takes effect at the
        # next start, so counters are never split between two folders.
        self.counters_file = StateFile(
            Path(conf.agent.state_dir) / D.COUNTERS_FILE, "counters", 1, check_counters
        )

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
        self._restore_counters()
        watcher = asyncio.create_task(self._watch_config(), name="config watch")
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
            gc.unfreeze()  # what start() froze may be garbage once the mining side is down
            await self.shutdown()
            if outcome != "restart":
                code = 1 if outcome == "failed" else 0
                break
            log.info("restarting the mining service")
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await watcher
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
            if conf.tuner.enabled:
                self._start_tuner()
        if conf.guardian.enabled:
            self._start_guardian()
        await self.rebuild_pools()
        self._publish()  # the chains are in the snapshot before the first tick
        # Everything made so far (modules, config, board, pools) lives as long as the process:
        # out of the collector's sight, a full collection no longer walks it in the middle of
        # dispatching work (tens of ms on the board's CPU, for nothing it could free).
        gc.collect()
        gc.freeze()
        self.ready.set()
        self.notifier.ready(f"mining on {self._describe()}")
        log.info("mining on %s", self._describe())

    async def _start_units(self) -> None:
        for unit in self.units:
            try:
                await unit.start()
            except ChainError as exc:
                raise StartupError(str(exc)) from None
        self._unit_down.clear()
        self._unit_watch = [
            asyncio.create_task(self._supervise_unit(i), name=f"hashing unit {i}")
            for i in range(len(self.units))
        ]

    def _start_guardian(self) -> None:
        options = GuardianOptions.from_config(self.conf.guardian)
        price_path = Path(self.conf.agent.state_dir) / options.price_file  # absolute stays
        loop: GuardianLoop

        def why() -> str:
            return f"guardian: {loop.last.reason}" if loop.last else "guardian"

        loop = GuardianLoop(
            read_hashrate=lambda: self.state.snapshot()["hashrate_hs"],
            read_power=self._power_w,
            pause=lambda: self.pause(why(), by="guardian"),
            resume=lambda: self.resume(why(), by="guardian"),
            price_path=price_path,
            options=options,
            read_nbits=self._nbits,
            # until a hashrate is measured while mining; without it a board that starts
            # unprofitable would be judged at 0 H/s and never resumed
            nominal_hashrate_hs=self._nominal_hashrate_hs(),
        )
        self.guardian = loop
        self._guardian_task = asyncio.create_task(self._run_guardian(loop), name="guardian")

    async def _run_guardian(self, loop: GuardianLoop) -> None:
        while True:
            decision = await loop.tick()
            if self.paused_by != "owner":  # the owner's pause is what the snapshot shows then
                self.state.set_guardian(decision.state, decision.reason)
            await asyncio.sleep(loop.options.interval_s)

    def _nominal_hashrate_hs(self) -> float:
        """What the hashing side should do: timed on the CPU board, from the chips' clock and
        count on a chip board (the L3+ nameplate: 504 MH/s from 288 chips at 384 MHz)."""
        board = self.conf.board
        if board.kind == "cpu":
            count = scrypt.lanes() * D.NOMINAL_TIMING_BATCHES
            started = time.perf_counter()
            scrypt.scan(bytes(80), 0, count, 0)
            return board.threads * count / (time.perf_counter() - started)
        chains = [c for c in (self.board.chains if self.board else []) if c is not None]
        chips = sum(c.chip_count for c in chains) or board.chains * board.chips_per_chain
        mhz = chains[0].frequency_mhz if chains else D.BM1485_FREQUENCY_MHZ
        return chips * mhz * 1e6 * D.BM1485_HASHES_PER_CLOCK

    def _power_w(self) -> float | None:
        """Measured or modelled wall power; None lets the guardian use its configured watts."""
        if self.emulator is not None:
            return float(self.emulator.peripherals.thermal.wall_w)
        return None

    def _nbits(self) -> int | None:
        job = self.work.current_job if self.work is not None else None
        return job.notify.nbits if job is not None else None

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
        if self._pools_restart is not None:
            self._pools_restart.cancel()
            self._pools_restart = None
        for task in (self._thermal_task, self._guardian_task, self._tuner_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._thermal_task = self._guardian_task = self._tuner_task = None
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
        self.save_counters()  # after the drain: the answers that came are in
        self._log_status()

    def request_restart(self) -> None:
        self._restart.set()

    async def pause(self, reason: str, by: str = "owner") -> None:
        """Hashing stopped and chains powered down; pools stay connected. `by` is "owner" or
        "guardian": the guardian never resumes what the owner paused."""
        if self.paused:
            if by == "owner":
                self.paused_by = "owner"
            return
        if self.remote is not None:
            await self._remote_mining(False, reason)  # ControlError unless a re-read confirms
        self.paused = True
        self.paused_by = by
        self.state.set_guardian("paused", reason)
        log.warning("paused: %s", reason)
        self.alerts.condition("paused", True, f"mining paused: {reason}")
        if self.remote is None:  # a remote miner stays read while paused
            await self._stop_units()
        if self.board is not None:
            await self.board.power_off_all(reason)
        self.save_counters()  # a pause may be long, and the power may go in it
        self.show_leds()

    async def resume(self, reason: str, by: str = "owner") -> None:
        if not self.paused:
            return
        if by == "guardian" and self.paused_by == "owner":
            log.info("guardian would resume, but the owner paused mining: staying paused")
            return
        if self.remote is not None:
            await self._remote_mining(True, reason)  # ControlError unless a re-read confirms
        self.paused = False
        self.paused_by = None
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
        """Waits for stop, a restart request or a background task that died too often; returns
        which. Meanwhile applies reloads, publishes readings, pings the watchdog (only while no
        dead unit is overdue for its restart), saves the counters and logs the status."""
        stopper = asyncio.create_task(stop.wait())
        restarter = asyncio.create_task(self._restart.wait())
        reloader = asyncio.create_task(self._reload.wait())
        ping_s = self.notifier.watchdog_interval_s()
        tick_s = min(ping_s or D.PUBLISH_INTERVAL_S, D.PUBLISH_INTERVAL_S)
        loop = asyncio.get_running_loop()
        last_log = last_save = loop.time()
        try:
            while True:
                watch = {stopper, restarter, reloader, *self._unit_watch}
                if self._thermal_task is not None:
                    watch.add(self._thermal_task)
                done, _ = await asyncio.wait(watch, timeout=tick_s, return_when="FIRST_COMPLETED")
                if stopper in done:
                    return "stop"
                if restarter in done:
                    self._restart.clear()
                    return "restart"
                fired = reloader if reloader in done else None
                if fired is not None:
                    self._reload.clear()
                    reloader = asyncio.create_task(self._reload.wait())
                    await self.reload()
                for task in done:
                    if task is fired or task.cancelled():
                        continue  # the reload just handled, or a paused unit's watch
                    # a supervised task ends only when it gave up (or, a bug, when it returned)
                    log.error("%s", task.exception() or f"{task.get_name()} stopped")
                    return "failed"
                if self._check_pools() == "failed":
                    return "failed"
                if ping_s and self._healthy():
                    self.notifier.watchdog()
                self._publish()
                now = loop.time()
                if now - last_save >= self.save_interval_s:
                    last_save = now
                    await self._save_counters_async()
                if now - last_log >= D.STATUS_LOG_INTERVAL_S:
                    last_log = now
                    self._log_status()
        finally:
            stopper.cancel()
            restarter.cancel()
            reloader.cancel()

    # ------------------------------------------------------------------------------ counters

    def _restore_counters(self) -> None:
        """The counters of earlier runs, once per process (not at an in-place restart)."""
        saved = self.counters_file.load()
        if saved is None:
            return
        try:
            self.state.import_counters(saved)
        except ValueError as exc:  # load() validated them; a mismatch here is a bug, not fatal
            log.warning("counters in %s not restored: %s", self.counters_file.path, exc)
            return
        b = saved["buckets"]
        log.info(
            "counters restored from %s: %d nonces, accepted %d, rejected %d; %d share(s) "
            "pending at the last save were never answered: counted stale",
            self.counters_file.path, saved["nonces"], b["accepted"], b["rejected"], b["pending"],
        )  # fmt: skip
        self.save_counters()  # those pending shares are stale for good: on disk at once

    def save_counters(self) -> bool:
        """Counters to <state_dir>/counters.json now; False (logged, counted) when not written."""
        return self.counters_file.save(self.state.export_counters())

    async def _save_counters_async(self) -> None:
        # The fsyncs may take a while on flash: off the loop, with the snapshot taken on it.
        data = self.state.export_counters()
        await asyncio.to_thread(self.counters_file.save, data)

    # ------------------------------------------------------------------------------ supervision

    def _died(self, name: str, why: str) -> float | None:
        """Log and count a dead task; the backoff before its restart, or None when it died more
        than D.SUPERVISE_MAX_FAILURES times within D.SUPERVISE_WINDOW_S (then the agent exits
        non-zero and systemd restarts the whole process)."""
        now = time.monotonic()
        times = [t for t in self._deaths.get(name, []) if now - t < D.SUPERVISE_WINDOW_S]
        times.append(now)
        self._deaths[name] = times
        self.counts["task_deaths"] += 1
        self.counts[f"died: {name}"] += 1
        self.state.task_restarts = self.counts["task_deaths"]
        if len(times) > D.SUPERVISE_MAX_FAILURES:
            log.error("%s died %d times within %.0f s (last: %s): giving up", name, len(times),
                      D.SUPERVISE_WINDOW_S, why)  # fmt: skip
            self.state.add_event("supervisor", f"{name} keeps dying: the agent exits")
            return None
        delay = min(D.SUPERVISE_BACKOFF_MAX_S, D.SUPERVISE_BACKOFF_MIN_S * 2 ** (len(times) - 1))
        log.error("%s died (%s): restarting it in %.1f s", name, why, delay)
        # the event text is public: the exception's type only, its text may carry anything
        self.state.add_event("supervisor", f"{name} died; restarting it in {delay:.1f} s")
        return delay

    async def _supervise_unit(self, index: int) -> None:
        """Watches one hashing unit: one that dies is stopped, and started again after a backoff.
        Ends (with SupervisionError) only when the unit dies too often."""
        unit = self.units[index]
        name = f"hashing unit {index}"
        while True:
            try:
                await unit.wait()
                why = "it stopped by itself"
            except Exception as exc:  # CancelledError (stop, pause) is not an Exception
                why = f"{type(exc).__name__}: {exc}"
            while True:
                delay = self._died(name, why)
                if delay is None:
                    raise SupervisionError(f"{name} keeps dying: {why}")
                self._unit_down[index] = time.monotonic() + delay + D.SUPERVISE_GRACE_S
                with contextlib.suppress(Exception):  # CpuBoard.stop re-raises: already logged
                    await unit.stop()
                await asyncio.sleep(delay)
                try:
                    await unit.start()
                except Exception as exc:
                    why = f"restart failed: {type(exc).__name__}: {exc}"
                    continue
                break
            self._unit_down.pop(index, None)
            log.info("%s restarted", name)
            if self.work is not None:
                self._more_work(unit)  # fresh work of the current job, if the pool sent one

    def _healthy(self) -> bool:
        """False once a dead unit is overdue for its restart: then the watchdog goes unpinged."""
        now = time.monotonic()
        return all(deadline > now for deadline in self._unit_down.values())

    async def _keep_alive(
        self, name: str, run: Callable[[], Awaitable[None]],
        on_death: Callable[[], Awaitable[None]] | None = None,
    ) -> None:  # fmt: skip
        """Runs a loop that should run forever; restarts it with backoff when it dies."""
        while True:
            try:
                await run()
                why = "it returned"
            except Exception as exc:
                why = f"{type(exc).__name__}: {exc}"
            delay = self._died(name, why)
            if on_death is not None:
                with contextlib.suppress(Exception):
                    await on_death()
            if delay is None:
                raise SupervisionError(f"{name} keeps dying: {why}")
            await asyncio.sleep(delay)

    async def _thermal_down(self) -> None:
        # Nobody watches the temperatures until the loop is back: fans to full, as for a
        # missing reading (safe by default).
        if self.board is not None:
            self.board.fans.set_duty(100.0)

    def _check_pools(self) -> str | None:
        """A pool manager task that died (a bug: it retries network faults itself) restarts the
        pool manager after a backoff; "failed" when that happened too often."""
        pools = self.pools
        if pools is None or self._pools_restart is not None:
            return None
        stopping = getattr(pools, "_stopping", None)
        if stopping is not None and stopping.is_set():
            return None  # a rebuild or a stop in progress: its tasks end on purpose
        for pool in getattr(pools, "_pools", ()):
            task = getattr(pool, "task", None)
            if task is None or not task.done() or task.cancelled():
                continue
            error = task.exception()
            why = f"{type(error).__name__}: {error}" if error else "it returned"
            delay = self._died(f"pool task {pool.label}", why)
            if delay is None:
                return "failed"
            self._pools_restart = asyncio.create_task(self._restart_pools(delay))
            break
        return None

    async def _restart_pools(self, delay: float) -> None:
        try:
            await asyncio.sleep(delay)
            await self.rebuild_pools()
        except Exception as exc:
            log.error("restarting the pools failed: %s", exc)
        finally:
            self._pools_restart = None

    # ------------------------------------------------------------------------------ hot reload

    def request_reload(self) -> None:
        """SIGHUP: read the config file again; applied by the service loop between its ticks."""
        self._reload.set()

    def _config_files(self) -> list[Path]:
        if not self.conf.sources:
            return []
        main = Path(self.conf.sources[0])
        # the overlay too, even while missing: creating it is a change to apply
        return [main, overlay_path(main, self.conf.agent.environment)]

    def _config_fingerprint(self) -> tuple[Any, ...]:
        marks: list[Any] = []
        for path in self._config_files():
            try:
                st = path.stat()
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                marks.append((str(path), st.st_mtime_ns, st.st_size, digest))
            except FileNotFoundError:
                marks.append((str(path), None))
            except OSError as exc:
                marks.append((str(path), "unreadable", exc.errno))
        return tuple(marks)

    async def _watch_config(self) -> None:
        """Polls the config files (mtime, size, sha256; no inotify on every board) and asks for a
        reload when they changed and then held still for one poll, so that a file an editor
        writes in two steps is not read half-written."""
        if not self.conf.sources:
            return
        applied = previous = await asyncio.to_thread(self._config_fingerprint)
        while True:
            await asyncio.sleep(D.CONFIG_POLL_INTERVAL_S)
            try:
                mark = await asyncio.to_thread(self._config_fingerprint)
            except Exception as exc:  # never let the watcher die on a strange filesystem
                log.warning("config watch: %s", exc)
                continue
            if mark != applied and mark == previous:
                applied = mark
                log.info("the config file changed: reloading")
                self.request_reload()
            previous = mark

    async def reload(self) -> bool:
        """Load the config file again and swap it in: live what can change live, a restart of
        the mining side for the board. An invalid file changes nothing: the agent keeps mining
        on the config it has, and says why. True when the new config is in use."""
        if not self.conf.sources:
            log.warning("reload: the config came from no file; nothing to reload")
            return False
        self.notifier.reloading()
        path = self.conf.sources[0]
        try:
            new = await asyncio.to_thread(load_config, path)
        except ConfigError as exc:
            return self._refuse(exc.errors)
        except Exception as exc:  # bad input never crashes the agent
            return self._refuse([f"{path}: {type(exc).__name__}: {exc}"])
        try:
            return await self._apply_config(new)
        except Exception as exc:  # a bug in applying must not take the agent down
            log.exception("applying the reloaded config failed")
            self.counts["reloads_failed"] += 1
            self.notifier.ready()
            self.notifier.status(f"reload failed: {type(exc).__name__}")
            return False

    def _refuse(self, errors: list[str]) -> bool:
        self.counts["reloads_refused"] += 1
        for error in errors:  # config errors name their key path and never show a secret
            log.error("config reload refused: %s", error)
        first = errors[0] if errors else "invalid"
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        self.state.add_event("config", f"reload refused: {first}{more}")
        self.notifier.ready()
        self.notifier.status(f"reload refused: {first}{more}; running on the previous config")
        return False

    async def _apply_config(self, new: Config) -> bool:
        old = self.conf
        if new.agent.state_dir != old.agent.state_dir:
            log.warning("agent.state_dir changes at the next start of the agent; until then "
                        "it stays %s", old.agent.state_dir)  # fmt: skip
            new = dataclasses.replace(
                new, agent=dataclasses.replace(new.agent, state_dir=old.agent.state_dir)
            )
        changed = [
            f.name for f in dataclasses.fields(Config)
            if f.name != "sources" and getattr(old, f.name) != getattr(new, f.name)
        ]  # fmt: skip
        if not changed:
            log.info("config reloaded: nothing changed")
            self.notifier.ready()
            return True
        if "pools" in changed or "api" in changed:
            # passwords first: one that does not decrypt refuses the whole file
            self.conf = new
            try:
                self._load_secrets()
            except StartupError as exc:
                self.conf = old
                return self._refuse([str(exc)])
        self.conf = new
        if new.agent.log_level != old.agent.log_level:
            logging.getLogger().setLevel(new.agent.log_level.upper())
        if new.thermal != old.thermal and self.thermal is not None:
            self.thermal.options = ThermalOptions.from_config(new.thermal)
        if new.tuner != old.tuner and self.tuner is not None:
            try:  # enabled = false stops the tuner's actions; a new tuner starts at restart
                self.tuner.options = dataclasses.replace(
                    TunerOptions.from_config(new.tuner),
                    ticket_difficulty=self.tuner.options.ticket_difficulty,
                )
            except ValueError as exc:
                log.error("[tuner] not changed: %s", exc)
        if "pools" in changed:
            # the file wins over pools added or switched through the controls since
            await self.rebuild_pools()
        if "api" in changed and self.serve_surfaces:
            await self._stop_surfaces()
            try:
                await self._start_surfaces()
            except StartupError as exc:
                log.error("the new [api] cannot be served (%s): back to the previous one", exc)
                self.conf = dataclasses.replace(self.conf, api=old.api)
                with contextlib.suppress(StartupError):
                    self._load_secrets()
                    await self._start_surfaces()
        if "board" in changed:
            self.request_restart()  # the hashing side is rebuilt on the new board settings
        self.counts["reloads"] += 1
        what = ", ".join(changed)
        log.info("config reloaded: %s changed%s", what,
                 "; restarting the mining side" if "board" in changed else "")  # fmt: skip
        self.state.add_event("config", f"reloaded: {what} changed")
        self.notifier.ready(f"config reloaded: {what} changed")
        return True

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
        if board.kind == "emulated" and board.emulator_dir:
            profile = self._external_emulator(board.emulator_dir)
            peripherals = None
        elif board.kind == "emulated":
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

    def _external_emulator(self, root: str) -> Any:
        """The profile of an emulated board served by `doge-agent emulate --root DIR` in another
        process: its ptys, its sysfs folder and its I2C bus on a unix socket."""
        from agent.emulator.server import read_description
        from agent.hardware import profile as PR

        try:
            desc = read_description(root)
            return PR.load("emulated", self.conf.board, overrides={
                k: desc[k] for k in ("sysfs_root", "i2c_bus", "chains", "chips_per_chain")
            } | {"uarts": tuple(desc["uarts"])})  # fmt: skip
        except ValueError as exc:  # a description that is missing, stale or not ours
            raise StartupError(f"board.emulator_dir: {exc}") from None
        except PR.ProfileError as exc:
            raise StartupError("; ".join(exc.errors)) from None

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
        # A nonce the chain driver rejected itself (bad ticket, unknown work, duplicate, retired
        # work) never reaches the share path: count it here, so every nonce is in the snapshot.
        if event.kind in ("hw_error", "unknown_work"):
            self.state.record_nonce(event.chain, self.conf.board.ticket_difficulty, "hw_errors")
        elif event.kind == "stale":
            self.state.record_nonce(event.chain, self.conf.board.ticket_difficulty, "stale")
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
            read_temps=lambda: {i: chain_readings(c) for i, c in chains.items()},
            read_fans=lambda: board.sample_fans(time.monotonic()),
            apply=self._apply_thermal,
            options=ThermalOptions.from_config(self.conf.thermal),
        )
        self._thermal_task = asyncio.create_task(
            self._keep_alive("thermal loop", self.thermal.run, self._thermal_down), name="thermal"
        )

    async def _apply_thermal(self, d: ThermalDecision) -> None:
        board = self.board
        assert board is not None
        if d.fan_duty_pct is not None:
            board.fans.set_duty(d.fan_duty_pct)
        for action in d.chains:
            i = action.chain
            if action.action != "power_off":
                pct = action.freq_pct if action.action == "throttle" else 100.0
                await self._scale_chain(i, pct, action.reason)
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

    async def _scale_chain(self, i: int, pct: float, reason: str) -> None:
        """Thermal throttle: every chip of chain i at pct % of its tuned clock (100: as tuned)."""
        chain = self.board.chains[i] if self.board is not None else None
        if not isinstance(chain, Chain):
            return
        pct = min(100.0, max(1.0, pct))
        if abs(chain.scale_pct - pct) < 1e-6:
            return
        if pct < 100.0:
            self._throttled[i] = pct
        else:
            self._throttled.pop(i, None)
        log.warning("chain %d: clocks at %.0f %% of tuned: %s", i, pct, reason)
        try:
            await chain.set_frequency_scale(pct)
        except ValueError as exc:
            log.error("chain %d: throttle to %.0f %% failed: %s", i, pct, exc)

    # ------------------------------------------------------------------------------ the tuner

    def _start_tuner(self) -> None:
        """Per-chip autotuning ([tuner]): per-chip counters from the chains, power from the
        emulated board's model (None on a real board: the tuner models it), clocks and gating
        through the chains, voltage through the PICs; the profile is kept in state_dir and
        restored at start. Chains paused, throttled or powered off by thermal are left alone."""
        board = self.board
        assert board is not None
        ticket = self.conf.board.ticket_difficulty
        if self.emulator is not None:
            # An emulated chip sends the nonces of a real one (its mask's difficulty at the rate
            # model) but each meets only the easy emulator ticket: judge its rate as a real chip.
            ticket = D.BM1485_TICKET_DIFFICULTY
        options = dataclasses.replace(
            TunerOptions.from_config(self.conf.tuner), ticket_difficulty=ticket
        )
        lo_v, hi_v = voltage_from_code(D.PIC_VOLTAGE_CODE_MAX), voltage_from_code(0)

        def setter(i: int) -> Callable[[float], Awaitable[int]]:
            return lambda v: board.pics[i].set_voltage(min(hi_v, max(lo_v, v)))  # the PIC's range

        targets = {
            i: ChainTuning(c, setter(i)) for i, c in enumerate(board.chains) if isinstance(c, Chain)
        }
        skipped: set[int] = set()
        loop: TunerLoop

        def read() -> list[Any]:
            out = []
            for i, t in targets.items():
                chain = t.chain
                if (self.paused or i in self._thermal_off or i in self._throttled
                        or not chain.booted.is_set()):  # fmt: skip
                    skipped.add(i)
                    continue
                if i in skipped:  # back: judge its chips on counters from now on only
                    skipped.discard(i)
                    _restart_windows(loop, i, chain, loop.clock())
                power = self.emulator.chain_power_w(i) if self.emulator is not None else None
                out.append(t.sample(temp_c=chain.temp_c, power_w=power))
            return out

        async def apply(a: TunerAction) -> None:
            if a.chain in targets and not (self.paused or a.chain in self._thermal_off
                                           or a.chain in self._throttled):  # fmt: skip
                await apply_to(targets, a)

        loop = TunerLoop(read, apply, options, state_dir=self.conf.agent.state_dir)
        self.tuner = loop
        self.state.set_tuner("starting", "waiting for the chains to boot")

        async def run() -> None:
            while self.paused or not any(t.chain.booted.is_set() for t in targets.values()):
                await asyncio.sleep(1.0)
            for i, t in targets.items():  # the voltage the PIC holds now
                with contextlib.suppress(Exception):
                    t.voltage_v = await board.pics[i].voltage()
            await loop.restore()
            while True:
                self._publish_tuner(loop, await loop.tick())
                await asyncio.sleep(loop.options.interval_s)

        self._tuner_task = asyncio.create_task(self._keep_alive("tuner loop", run), name="tuner")

    def _publish_tuner(self, loop: TunerLoop, d: TunerDecision | None) -> None:
        if d is None:
            self.state.set_tuner("error", "reading the chip counters failed")
            return
        if not d.verdicts:
            self.state.set_tuner("idle", "paused" if self.paused else "no chain to tune")
            return
        chips = {(c.chain, i): s for c in self.units if isinstance(c, Chain)
                 for i, s in c.chips.items()}  # fmt: skip
        for v in d.verdicts:
            s = chips.get((v.chain, v.chip))
            self.state.set_chip(v.chain, v.chip, status=v.verdict,
                                frequency_mhz=s.frequency_mhz if s else None)  # fmt: skip
        done = sum(v.verdict in ("settled", "disabled") for v in d.verdicts)
        state = "settled" if done == len(d.verdicts) and not d.actions else "tuning"
        why = d.actions[-1].reason if d.actions else f"{done} of {len(d.verdicts)} chips settled"
        self.state.set_tuner(state, why)

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


def _restart_windows(loop: TunerLoop, chain_index: int, chain: Chain, now: float) -> None:
    """A chain back from a pause or a throttle: its chips' verdicts start on counters from now
    (the samples taken at a throttled clock say nothing about the tuned one)."""
    from agent.control.tuner import TunerMemory

    chips = dict(loop.memory.chips)
    for (n, idx), m in chips.items():
        s = chain.chips.get(idx)
        if n == chain_index and s is not None:
            chips[(n, idx)] = dataclasses.replace(
                m, t0=now, nonces0=s.nonces, hw0=s.hw_errors, cores0=dict(s.cores)
            )
    loop.memory = TunerMemory(chips, loop.memory.chains)

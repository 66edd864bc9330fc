"""A stock miner on the network as the service's hashing side, read and controlled through pyasic.

pyasic is an optional extra (`pip install doge-agent[remote]`), imported only when a remote miner
is made. The miner mines its own pools: the service gives it no work (`set_work` is a no-op) and
connects to no pool itself. Every few seconds `get_data()` is read into the State (hashrate, boards
with chips and temperatures, fans, pools); the remote's own uptime is kept on `reading`.

pyasic reports success even when a call did nothing (shared/reference/pyasic-compat.md §9), so
pause() and resume() never trust a return value: after each attempt the miner is read again until
it shows the wanted state, with backoff; a miner still in the old state is a RemoteError, never a
success. A miner that stops answering is reported (chains and fans unknown, an event) and retried
with backoff; it never stops the service."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.hardware.cpu import Work
from agent.state import State

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install doge-agent[remote]"
POLL_INTERVAL_S = 5.0  # get_data() every this often while the miner answers
CALL_TIMEOUT_S = 15.0  # one pyasic call (get_miner, get_data, a control) at most this long
RETRY_MIN_S = 1.0  # first wait after a failed read; doubles up to RETRY_MAX_S
RETRY_MAX_S = 60.0
CONFIRM_TRIES = 6  # re-reads after a pause/resume before the action counts as failed
CONFIRM_FIRST_S = 0.25  # first wait before a confirming re-read; doubles up to CONFIRM_MAX_S
CONFIRM_MAX_S = 4.0
ACTION_TRIES = 2  # the control call itself is sent at most this many times


class RemoteError(RuntimeError):
    """A remote action failed or could not be confirmed; the text says why."""


def load_pyasic() -> Any:
    """The pyasic module, or a RuntimeError naming the extra to install."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydantic/passlib deprecation noise on import
            return importlib.import_module("pyasic")
    except ImportError as exc:
        raise RuntimeError(
            f'board.kind = "remote" needs pyasic, an optional extra: {INSTALL_HINT} ({exc})'
        ) from None


# ------------------------------------------------------------------------------ pure mapping


@dataclass
class BoardReading:
    slot: int
    chips: int | None
    hashrate_hs: float | None  # the summary total (GHS 5s), else the sum of the boards
    temp_c: float | None
    chip_temp_c: float | None
    missing: bool


@dataclass
class PoolReading:
    url: str
    user: str | None
    accepted: int
    rejected: int
    active: bool
    alive: bool


@dataclass
class RemoteReading:
    """One get_data() of the remote miner, in our units (H/s, degrees C, rpm, seconds)."""

    hashrate_hs: float | None  # the summary total (GHS 5s), else the sum of the boards
    boards: list[BoardReading] = field(default_factory=list)
    fans_rpm: list[int | None] = field(default_factory=list)
    pools: list[PoolReading] = field(default_factory=list)
    uptime_s: int | None = None
    is_mining: bool | None = None
    model: str | None = None


def _hs(rate: Any) -> float | None:
    """A pyasic hashrate (AlgoHashRate) in H/s; None when absent or unreadable."""
    if rate is None:
        return None
    try:
        return float(rate.into(rate.unit.H))
    except (AttributeError, TypeError, ValueError):
        try:
            return float(rate)
        except (TypeError, ValueError):
            return None


def _num(x: Any) -> float | None:
    try:
        return None if x is None else float(x)
    except (TypeError, ValueError):
        return None


def _int(x: Any, default: int | None = None) -> int | None:
    """int(x), or `default` for what has no integer value (NaN, infinity, "abc", None)."""
    try:
        return int(x)
    except (TypeError, ValueError, OverflowError):
        return default


def reading_from_data(data: Any) -> RemoteReading:
    """pyasic MinerData -> RemoteReading (nothing is trusted: odd values become None)."""
    boards = []
    for i, b in enumerate(getattr(data, "hashboards", None) or []):
        chips = getattr(b, "chips", None)
        boards.append(BoardReading(
            slot=_int(getattr(b, "slot", i) or i, i),
            chips=_int(chips) if isinstance(chips, int | float) and chips >= 0 else None,
            hashrate_hs=_hs(getattr(b, "hashrate", None)),
            temp_c=_num(getattr(b, "temp", None)),
            chip_temp_c=_num(getattr(b, "chip_temp", None)),
            missing=bool(getattr(b, "missing", False)),
        ))  # fmt: skip
    fans: list[int | None] = []
    for f in getattr(data, "fans", None) or []:
        speed = getattr(f, "speed", None)
        fans.append(_int(speed) if isinstance(speed, int | float) else None)
    pools = []
    for p in getattr(data, "pools", None) or []:
        url = getattr(p, "url", None)
        pools.append(PoolReading(
            url=str(url) if url is not None else "", user=getattr(p, "user", None),
            accepted=_int(getattr(p, "accepted", 0) or 0, 0),
            rejected=_int(getattr(p, "rejected", 0) or 0, 0),
            active=bool(getattr(p, "active", False)), alive=bool(getattr(p, "alive", False)),
        ))  # fmt: skip
    uptime = getattr(data, "uptime", None)
    device = getattr(data, "device_info", None)
    model = getattr(device, "model", None) if device is not None else None
    return RemoteReading(
        hashrate_hs=_hs(getattr(data, "raw_hashrate", None) or getattr(data, "hashrate", None)),
        boards=boards, fans_rpm=fans, pools=pools,
        uptime_s=_int(uptime) if isinstance(uptime, int | float) else None,
        is_mining=getattr(data, "is_mining", None),
        model=str(model) if model is not None else None,
    )  # fmt: skip


# ------------------------------------------------------------------------------ the shell


class RemoteMiner:
    """The service's only hashing unit for board.kind = "remote"."""

    def __init__(
        self,
        host: str,
        state: State,
        *,
        web_password: str | None = None,
        poll_interval_s: float = POLL_INTERVAL_S,
        call_timeout_s: float = CALL_TIMEOUT_S,
        retry_min_s: float = RETRY_MIN_S,
        retry_max_s: float = RETRY_MAX_S,
        confirm_tries: int = CONFIRM_TRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pyasic = load_pyasic()
        self.host = host
        self.state = state
        self._web_password = web_password
        self.poll_interval_s = poll_interval_s
        self.call_timeout_s = call_timeout_s
        self.retry_min_s = retry_min_s
        self.retry_max_s = retry_max_s
        self.confirm_tries = confirm_tries
        self._clock = clock
        self.miner: Any = None  # the pyasic miner object, once identified
        self.reading: RemoteReading | None = None  # the last good read
        self.reachable: bool | None = None  # None until the first read
        self.last_error: str | None = None
        self.polled = asyncio.Event()  # set after every poll (good or failed); tests wait on it
        self._exclude: list[str] = []  # fields left out after a web failure (see _read)
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._started = asyncio.Event()
        self._hashes_at: float | None = None
        self._chains: set[int] = set()
        self._action = asyncio.Lock()

    def __repr__(self) -> str:  # never show the password
        return f"RemoteMiner({self.host!r})"

    # ---------------------------------------------------------------- the unit protocol

    def set_work(self, work: Work) -> None:
        """A stock miner mines its own pools: there is no work to give it."""

    async def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._poll_loop(), name=f"remote {self.host}")
            self._started.set()

    async def stop(self) -> None:
        task, self._task = self._task, None
        self._started.clear()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def wait(self) -> None:
        """Returns only if the poller itself died (a bug): an unreachable miner is retried."""
        await self._started.wait()
        assert self._task is not None
        await self._task

    # ---------------------------------------------------------------- reading

    async def _call(self, coro: Any) -> Any:
        return await asyncio.wait_for(coro, self.call_timeout_s)

    async def _identify(self) -> Any:
        if self.miner is None:
            miner = await self._call(self.pyasic.get_miner(self.host))
            if miner is None:
                raise RemoteError(f"{self.host} answered nothing pyasic recognises as a miner")
            web = getattr(miner, "web", None)
            if web is not None and self._web_password is not None:
                web.pwd = self._web_password  # this miner only, not pyasic's global default
            self.miner = miner
            log.info("remote miner at %s: %s", self.host, type(miner).__name__)
        return self.miner

    async def _read(self) -> RemoteReading:
        miner = await self._identify()
        pyasic = self.pyasic
        try:
            data = await self._call(miner.get_data(exclude=self._exclude or None))
        except pyasic.APIError as exc:
            if self._exclude:
                raise
            # the old Antminer class raises when its web pages refuse us (wrong web password):
            # the mining data itself comes from the cgminer API, so read without mac and config
            log.warning("remote miner at %s: %s; reading without mac and config", self.host, exc)
            self._exclude = ["mac", "config"]
            data = await self._call(miner.get_data(exclude=self._exclude))
        reading = reading_from_data(data)
        if (
            reading.hashrate_hs is None
            and reading.uptime_s is None
            and not any(b.chips for b in reading.boards)
        ):
            # pyasic swallows failed calls and returns empty fields: no data is no answer
            raise RemoteError(f"{self.host} answered no mining data")
        with contextlib.suppress(Exception):
            # get_data() of the old Antminer class never asks the web page whether it mines
            reading.is_mining = await self._call(miner.is_mining())
        return reading

    async def refresh(self) -> RemoteReading:
        """Read the miner now and publish it; raises when it does not answer."""
        reading = await self._read()
        self._publish(reading)
        return reading

    async def _poll_loop(self) -> None:
        backoff = self.retry_min_s
        while True:
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._unreachable(exc)
                delay = backoff
                backoff = min(backoff * 2, self.retry_max_s)
            else:
                backoff = self.retry_min_s
                delay = self.poll_interval_s
            self.polled.set()
            self.polled = asyncio.Event()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    def _publish(self, r: RemoteReading) -> None:
        state = self.state
        now = self._clock()
        if self.reachable is not True:
            if self.reachable is False:
                log.info("remote miner at %s answers again", self.host)
                state.add_event("remote", f"remote miner {self.host} answers again")
            self.reachable = True
        self.last_error = None
        self.reading = r
        # Hashrate: the State computes rates from counted hashes, so the remote's rate is
        # credited as rate x time since the last read (the window then averages the reads).
        dt = (
            (now - self._hashes_at) if self._hashes_at is not None else state.snapshot()["uptime_s"]
        )
        self._hashes_at = now
        boards = r.boards
        if boards:
            # the total from the miner's summary, split in the boards' proportions: per-board
            # rates come rounded (chain_rateN has 6 decimals of GH/s), the summary less so
            rates = [b.hashrate_hs or 0.0 for b in boards]
            total = r.hashrate_hs if r.hashrate_hs is not None else sum(rates)
            share = sum(rates)
            if share > 0:
                rates = [total * x / share for x in rates]
            else:
                rates = [total / len(boards)] * len(boards)
            for b, rate in zip(boards, rates, strict=True):
                temp = b.temp_c if b.temp_c is not None else b.chip_temp_c
                self._credit(b.slot, rate, dt, chips=0 if b.missing else (b.chips or 0),
                             temp_c=temp)  # fmt: skip
        else:
            self._credit(0, r.hashrate_hs, dt, chips=None, temp_c=None)
        state.set_fans([{"rpm": rpm, "duty_pct": None} for rpm in r.fans_rpm])
        for p in r.pools:
            if not p.url:
                continue
            status = "active" if p.active else ("alive" if p.alive else "dead")
            state.set_pool(p.url, status=status)
            pool = state.pools.get(p.url)
            if pool is not None:  # the remote counts its shares itself
                pool.accepted, pool.rejected = p.accepted, p.rejected

    def _credit(self, chain: int, rate: float | None, dt: float, *, chips: int | None,
                temp_c: float | None) -> None:  # fmt: skip
        self._chains.add(chain)
        self.state.set_chain(chain, chips=chips, temp_c=temp_c)
        if rate is not None and rate > 0 and dt > 0:
            self.state.add_hashes(chain, int(rate * dt))

    def _unreachable(self, exc: BaseException) -> None:
        why = str(exc) or type(exc).__name__
        self.last_error = why
        self._hashes_at = self._clock()  # no hashrate is credited for the time it was silent
        if self.reachable is not False:
            log.warning("remote miner at %s does not answer: %s (retrying)", self.host, why)
            self.state.add_event("remote", f"remote miner {self.host} does not answer: {why}")
        self.reachable = False
        self.miner = None  # identify again: it may come back as something else
        self._exclude = []
        for chain in self._chains:
            self.state.set_chain(chain, chips=0, temp_c=None)  # state unknown
        self.state.set_fans([
            {"rpm": None, "duty_pct": None} for _ in (self.reading.fans_rpm if self.reading else [])
        ])  # fmt: skip
        for p in self.reading.pools if self.reading else []:
            if p.url:
                self.state.set_pool(p.url, status="unknown")

    # ---------------------------------------------------------------- control

    async def pause(self, reason: str) -> None:
        """Stop the remote's mining; returns once a re-read shows it stopped, else RemoteError."""
        await self._set_mining(False, reason)

    async def resume(self, reason: str) -> None:
        await self._set_mining(True, reason)

    async def _set_mining(self, mining: bool, reason: str) -> None:
        verb = "resume" if mining else "pause"
        async with self._action:
            last = "no answer"
            for attempt in range(1, ACTION_TRIES + 1):
                try:
                    miner = await self._identify()
                    await self._send_mining(miner, mining)
                except Exception as exc:  # unreachable, a refused write, a timeout
                    last = f"the {verb} call failed: {exc or type(exc).__name__}"
                    log.warning("remote miner at %s: %s (try %d)", self.host, last, attempt)
                    if isinstance(exc, RemoteError) or self.miner is None:
                        continue  # our own refusal, or nobody there: nothing to re-read
                    # a call that timed out may still have been applied (a slow resume): re-read
                seen = await self._confirm(mining)
                if seen is None:
                    self.miner = None  # unreadable: identify it again before the next try
                if seen is mining:
                    log.info("remote miner at %s: %s confirmed by re-reading it (%s)",
                             self.host, verb, reason)  # fmt: skip
                    self._wake.set()  # publish the new state now
                    return
                last = "it still reports " + {True: "mining", False: "not mining",
                                              None: "nothing readable"}[seen]  # fmt: skip
                log.warning("remote miner at %s: %s not confirmed: %s (try %d)",
                            self.host, verb, last, attempt)  # fmt: skip
            msg = f"remote miner {self.host}: {verb} failed: {last}"
            self.state.add_event("remote", msg)
            raise RemoteError(msg)

    async def _send_mining(self, miner: Any, mining: bool) -> None:
        """The model's way to stop or resume; return values are ignored (they may lie)."""
        from pyasic.config.mining import MiningModeConfig
        from pyasic.miners.backends.antminer import AntminerModern, AntminerOld

        if isinstance(miner, AntminerOld):
            # pyasic has no stop/resume for the old Antminer web (L3+): the work-mode key alone,
            # never the pools (a form without their passwords would overwrite them)
            await self._call(
                miner.web.set_miner_conf({"bitmain-work-mode": "0" if mining else "1"})
            )
        elif isinstance(miner, AntminerModern):
            # pyasic's stop_mining re-sends whatever get_config() returned, empty pools included
            # when that read failed: read it ourselves and refuse to write pools we did not see
            cfg = await self._call(miner.get_config())
            if not any(p.url for g in cfg.pools.groups for p in g.pools):
                raise RemoteError(
                    f"remote miner {self.host}: its config read back without "
                    "pools; not writing it (that would erase its pools)"
                )
            cfg.mining_mode = MiningModeConfig.normal() if mining else MiningModeConfig.sleep()
            await self._call(miner.send_config(cfg))
        elif mining:
            await self._call(miner.resume_mining())
        else:
            await self._call(miner.stop_mining())

    async def _confirm(self, mining: bool) -> bool | None:
        """Re-read whether the miner mines until it shows `mining` (or the tries run out)."""
        wait = CONFIRM_FIRST_S
        seen: bool | None = None
        for _ in range(self.confirm_tries):
            await asyncio.sleep(wait)  # backoff between re-reads of a remote device
            wait = min(wait * 2, CONFIRM_MAX_S)
            try:
                seen = await self._call(self.miner.is_mining())
            except Exception as exc:
                log.debug("remote miner at %s: re-read failed: %s", self.host, exc)
                seen = None
                continue
            if seen is mining:
                return seen
        return seen

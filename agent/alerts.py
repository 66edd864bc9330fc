"""The alert hook: critical events (overheat shutdown, fan failure, all pools down, a pause, a
dead chain) delivered to a command and/or an HTTP URL, once per onset.

    hook = AlertHook(AlertOptions.from_config(conf.alerts))
    await hook.start()
    hook.condition("overheat", True, "chain 1: DC-DC off: 91 C")   # every tick: edge-triggered
    hook.condition("overheat", False)                              # cleared: re-armed
    await hook.stop()

A condition fires when it becomes true (and at most once per `min_interval_s` per key, so a
flapping condition does not flood), again only after it cleared and came back, or every
`reminder_s` while it lasts when that is > 0. Delivery runs in one background task reading a
bounded queue: condition() never blocks and never raises; a hook that hangs is abandoned after
`timeout_s`; when the queue is full the oldest alert is dropped (counted).

The command is an argv list run without a shell; the event comes as JSON on stdin and as
DOGE_AGENT_ALERT_* environment variables (the agent's own environment is not passed on: it may
hold secrets). The URL gets the same JSON in a POST (urllib, in an executor thread)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from agent import __version__
from agent import defaults as D

log = logging.getLogger(__name__)

KINDS = ("overheat", "fan_failure", "pools_down", "paused", "chain_dead")
_PASSED_ENV = ("PATH", "LANG", "LC_ALL", "TZ", "HOME")


@dataclass(frozen=True)
class AlertOptions:
    command: tuple[str, ...] | None = None
    url: str | None = field(default=None, repr=False)  # may carry credentials
    min_interval_s: float = D.ALERT_MIN_INTERVAL_S
    reminder_s: float = D.ALERT_REMINDER_S
    timeout_s: float = D.ALERT_TIMEOUT_S
    queue_size: int = D.ALERT_QUEUE_SIZE

    @classmethod
    def from_config(cls, alerts: Any) -> AlertOptions:
        return cls(
            command=tuple(alerts.command) if alerts.command else None,
            url=alerts.url,
            min_interval_s=alerts.min_interval_s,
            reminder_s=alerts.reminder_s,
            timeout_s=alerts.timeout_s,
        )

    @property
    def enabled(self) -> bool:
        return bool(self.command or self.url)


@dataclass(frozen=True)
class AlertEvent:
    kind: str  # overheat, fan_failure, pools_down, paused, chain_dead
    key: str  # kind, or kind:detail for one of several (chain_dead:2)
    message: str
    time: str  # ISO-8601 UTC
    reminder: bool = False
    host: str = ""
    agent_version: str = __version__
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, default=str)

    def env(self) -> dict[str, str]:
        out = {k: os.environ[k] for k in _PASSED_ENV if k in os.environ}
        out.update(
            DOGE_AGENT_ALERT_KIND=self.kind, DOGE_AGENT_ALERT_KEY=self.key,
            DOGE_AGENT_ALERT_MESSAGE=self.message, DOGE_AGENT_ALERT_TIME=self.time,
            DOGE_AGENT_ALERT_REMINDER="1" if self.reminder else "0",
            DOGE_AGENT_ALERT_HOST=self.host, DOGE_AGENT_ALERT_JSON=self.to_json(),
        )  # fmt: skip
        return {k: v.replace("\x00", "") for k, v in out.items()}


@dataclass
class _Track:
    active: bool = False
    armed: bool = True  # fires at the next moment the condition is true
    last_fired: float | None = None


class EdgeTracker:
    """Pure edge detection: should(key, active, now) is True when an alert is due."""

    def __init__(self, min_interval_s: float, reminder_s: float = 0.0) -> None:
        self.min_interval_s = min_interval_s
        self.reminder_s = reminder_s
        self._tracks: dict[str, _Track] = {}

    def should(self, key: str, active: bool, now: float) -> tuple[bool, bool]:
        """(fire, is_reminder)."""
        t = self._tracks.setdefault(key, _Track())
        t.active = active
        if not active:
            t.armed = True
            return False, False
        since = None if t.last_fired is None else now - t.last_fired
        if t.armed:
            if since is not None and since < self.min_interval_s:
                return False, False  # a flap: stays armed, fires when the interval is over
            t.armed, t.last_fired = False, now
            return True, False
        if self.reminder_s > 0 and since is not None and since >= self.reminder_s:
            t.last_fired = now
            return True, True
        return False, False

    def active(self) -> list[str]:
        return [k for k, t in self._tracks.items() if t.active]


class AlertHook:
    def __init__(
        self,
        options: AlertOptions | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.options = options or AlertOptions()
        self.clock = clock
        self.wall = wall
        self.tracker = EdgeTracker(self.options.min_interval_s, self.options.reminder_s)
        self.counters = {"fired": 0, "delivered": 0, "failed": 0, "timeouts": 0, "dropped": 0}
        self.sent: deque[AlertEvent] = deque(maxlen=50)  # recent alerts, newest last
        self._queue: deque[AlertEvent] = deque()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._host = socket.gethostname()

    # ------------------------------------------------------------------------------ producers

    def condition(
        self, kind: str, active: bool, message: str = "", *, key: str | None = None,
        **details: Any,
    ) -> bool:  # fmt: skip
        """Report a condition's current truth (call it every time it is evaluated). Returns True
        when an alert was raised. Never blocks, never raises."""
        try:
            fire, reminder = self.tracker.should(key or kind, bool(active), self.clock())
            if fire:
                self._raise(kind, key or kind, message, reminder, details)
            return fire
        except Exception:  # an alert must never break the loop that reports it
            log.exception("alert %s could not be raised", kind)
            return False

    def _raise(
        self, kind: str, key: str, message: str, reminder: bool, details: dict[str, Any]
    ) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.wall()))
        event = AlertEvent(kind, key, message or kind, stamp, reminder, self._host,
                           details={k: v for k, v in details.items()})  # fmt: skip
        self.counters["fired"] += 1
        self.sent.append(event)
        log.warning("alert %s%s: %s", key, " (reminder)" if reminder else "", event.message,
                    extra={"alert": kind})  # fmt: skip
        if not self.options.enabled:
            return
        if len(self._queue) >= self.options.queue_size:
            dropped = self._queue.popleft()
            self.counters["dropped"] += 1
            log.warning("alert queue full: dropped the oldest alert (%s)", dropped.key)
        self._queue.append(event)
        if self._wake is not None:
            self._wake.set()

    # ------------------------------------------------------------------------------ delivery

    async def start(self) -> None:
        if self._task is None and self.options.enabled:
            self._wake = asyncio.Event()
            if self._queue:
                self._wake.set()
            self._task = asyncio.create_task(self._deliver_loop(), name="alerts")

    async def stop(self, grace_s: float = 0.0) -> None:
        """Stop delivering; with grace_s, let what is queued go out for at most that long."""
        task, self._task = self._task, None
        if task is None:
            return
        if grace_s > 0 and self._queue:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.drained(), grace_s)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task

    async def drained(self) -> None:
        """Waits until the queue is empty and nothing is being delivered (for tests)."""
        while self._queue or self._busy:
            await asyncio.sleep(0.01)

    _busy = False

    async def _deliver_loop(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                event = self._queue.popleft()
                self._busy = True
                try:
                    await self.deliver(event)
                finally:
                    self._busy = False

    async def deliver(self, event: AlertEvent) -> bool:
        """Run the command and POST to the URL (those configured); True when all succeeded."""
        ok = True
        if self.options.command:
            ok &= await self._run_command(event)
        if self.options.url:
            ok &= await self._post(event)
        self.counters["delivered" if ok else "failed"] += 1
        return ok

    async def _run_command(self, event: AlertEvent) -> bool:
        argv = list(self.options.command or ())
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE, env=event.env(), start_new_session=True,
            )  # fmt: skip
        except OSError as exc:
            log.error("alert command %s cannot start: %s", argv[0], exc)
            return False
        try:
            _, err = await asyncio.wait_for(
                proc.communicate(event.to_json().encode() + b"\n"), self.options.timeout_s
            )
        except TimeoutError:
            self.counters["timeouts"] += 1
            log.error("alert command %s: no answer in %g s: killed", argv[0],
                      self.options.timeout_s)  # fmt: skip
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.wait(), 5)
            return False
        except (OSError, ValueError) as exc:  # it closed stdin early: still wait for its status
            log.debug("alert command %s: %s", argv[0], exc)
            err = b""
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.wait(), self.options.timeout_s)
        if proc.returncode != 0:
            tail = (err or b"").decode("utf-8", "replace").strip().splitlines()[-1:]
            log.error("alert command %s exited %s%s", argv[0], proc.returncode,
                      f": {tail[0][:200]}" if tail else "")  # fmt: skip
            return False
        return True

    async def _post(self, event: AlertEvent) -> bool:
        import urllib.request  # here, not at the top: with http.client and email, ~1.5 MB of RSS

        url = self.options.url or ""
        body = event.to_json().encode()
        timeout = self.options.timeout_s

        def post() -> int:
            req = urllib.request.Request(
                url, data=body, method="POST",
                headers={"Content-Type": "application/json",
                         "User-Agent": f"doge-agent/{__version__}"},
            )  # fmt: skip
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return int(resp.status)

        try:
            status = await asyncio.wait_for(_in_daemon_thread(post), timeout + 1)
        except TimeoutError:
            self.counters["timeouts"] += 1
            log.error("alert POST: no answer in %g s", timeout)
            return False
        except Exception as exc:  # HTTPError, URLError, a reset: the URL's credentials never shown
            if isinstance(getattr(exc, "reason", None), TimeoutError):
                self.counters["timeouts"] += 1
            log.error("alert POST failed: %s", _describe(exc))
            return False
        return 200 <= status < 300


async def _in_daemon_thread(fn: Callable[[], int]) -> int:
    """fn() in a daemon thread: unlike an executor's, a POST stuck past its timeout can never
    hold up the agent's exit."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[int] = loop.create_future()

    def settle(value: int | None, exc: BaseException | None) -> None:
        if fut.done():
            return
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(int(value or 0))

    def run() -> None:
        try:
            value, exc = fn(), None
        except BaseException as e:  # handed to the loop, raised there
            value, exc = None, e
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting
            loop.call_soon_threadsafe(settle, value, exc)

    threading.Thread(target=run, name="alert-post", daemon=True).start()
    return await fut


def _describe(exc: Exception) -> str:
    code = getattr(exc, "code", None)
    if code is not None:
        return f"HTTP {code}"
    reason = getattr(exc, "reason", None)
    return f"{type(exc).__name__}: {reason if reason is not None else exc}"

"""The surfaces of a running agent, and the Controls they may call.

Web (status page, /api/status, /api/health, /metrics, POST controls), the stock Antminer CGI
pages on the same HTTP server, and the cgminer API on TCP 4028 all read the one State snapshot;
writes go through ServiceControls, which acts on the MiningService."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent import defaults as D
from agent.api import stock_cgi
from agent.api.cgminer import CgminerOptions, CgminerServer
from agent.api.controls import ControlError
from agent.api.http import WebOptions, WebSurface
from agent.security.access import AccessPolicy

if TYPE_CHECKING:
    from agent.service import MiningService

log = logging.getLogger(__name__)


@dataclass
class PoolEntry:
    """A pool as the owner manages it at run time (config order, enabled flag)."""

    url: str
    user: str
    password: str
    priority: int
    enabled: bool = True


class ServiceControls:
    """Controls (agent/api/controls.py) implemented on the mining service."""

    def __init__(self, service: MiningService) -> None:
        self.service = service
        self._locate_until: float | None = None
        self._locating = False
        self._locate_timer: asyncio.TimerHandle | None = None

    async def pause(self, reason: str) -> str:
        await self.service.pause(reason or "paused by the owner")
        return "paused"

    async def resume(self, reason: str) -> str:
        await self.service.resume(reason or "resumed by the owner")
        return "resumed"

    async def restart(self) -> str:
        self.service.request_restart()
        return "restarting the mining service"

    def locate(self, on: bool, seconds: float | None = None) -> str:
        if self._locate_timer is not None:
            self._locate_timer.cancel()
            self._locate_timer = None
        self._locating = bool(on)
        self.service.show_leds()
        if on and seconds:
            loop = asyncio.get_running_loop()
            self._locate_timer = loop.call_later(seconds, self.locate, False)
        return f"locate {'on' if on else 'off'}"

    def locating(self) -> bool:
        return self._locating

    def pools(self) -> list[dict[str, Any]]:
        stats = {s.url: s for s in self.service.pool_stats()}
        out = []
        for i, p in enumerate(self.service.pool_entries):
            s = stats.get(p.url)
            out.append({
                "index": i, "url": p.url, "user": p.user, "priority": p.priority,
                "enabled": p.enabled, "status": s.status if s else "disabled",
                "active": bool(s and s.active),
            })  # fmt: skip
        return out

    def _entry(self, index: int) -> PoolEntry:
        entries = self.service.pool_entries
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(entries):
            raise ControlError(f"no pool {index!r}: pools are 0..{len(entries) - 1}")
        return entries[index]

    async def add_pool(self, url: str, user: str, password: str, priority: int | None) -> str:
        from agent.stratum.pools import PoolSpec

        try:
            PoolSpec(url=url, user=user, password=password).target()
        except ValueError as exc:
            raise ControlError(str(exc)) from None
        if not user:
            raise ControlError("a pool needs a user")
        entries = self.service.pool_entries
        last = max((p.priority for p in entries), default=-1)
        prio = priority if priority is not None else last + 1
        entries.append(PoolEntry(url, user, password, prio))
        await self.service.rebuild_pools()
        return f"pool {len(entries) - 1} added: {url}"

    async def switch_pool(self, index: int) -> str:
        chosen = self._entry(index)
        best = min(p.priority for p in self.service.pool_entries)
        for p in self.service.pool_entries:
            if p is not chosen and p.priority <= best:
                p.priority += 1
        chosen.priority = best
        chosen.enabled = True
        await self.service.rebuild_pools()
        return f"pool {index} is now preferred"

    async def enable_pool(self, index: int, enabled: bool) -> str:
        entry = self._entry(index)
        if not enabled and sum(p.enabled for p in self.service.pool_entries) == 1 and entry.enabled:
            raise ControlError("cannot disable the last enabled pool")
        entry.enabled = bool(enabled)
        await self.service.rebuild_pools()
        return f"pool {index} {'enabled' if enabled else 'disabled'}"

    async def remove_pool(self, index: int) -> str:
        entry = self._entry(index)
        if len(self.service.pool_entries) == 1:
            raise ControlError("cannot remove the last pool")
        self.service.pool_entries.remove(entry)
        await self.service.rebuild_pools()
        return f"pool {index} removed"


class Surfaces:
    """Starts and stops the web server (with the stock CGI pages) and the cgminer API."""

    def __init__(self, service: MiningService, controls: ServiceControls, owner_password: str,
                 token: str) -> None:  # fmt: skip
        self.service = service
        self.controls = controls
        self.owner_password = owner_password
        self.token = token
        self.web: WebSurface | None = None
        self.cgminer: CgminerServer | None = None

    async def start(self) -> None:
        conf = self.service.conf
        api = conf.api
        options = WebOptions.from_config(
            conf, password=self.owner_password, token=self.token, user=api.user,
            login_max_failures=api.login_max_failures, login_lockout_s=api.login_lockout_s,
        )  # fmt: skip
        self.web = WebSurface(self.service.state, self.controls, options)
        stock_cgi.register(
            self.web.server, self.service.state, self.controls,
            stock_cgi.StockCgiOptions(
                password=self.owner_password, user=api.user, read_allow=tuple(api.read_allow),
                write_allow=tuple(api.write_allow), login_max_failures=api.login_max_failures,
                login_lockout_s=api.login_lockout_s,
            ),
        )  # fmt: skip
        await self.web.start()
        policy = AccessPolicy(list(api.cgminer_read_allow), list(api.cgminer_write_allow))
        self.cgminer = CgminerServer(
            self.service.state, self.controls, policy, CgminerOptions(listen=api.cgminer_listen)
        )
        await self.cgminer.start()
        log.info("status page on http://%s/ (port %d); cgminer API on port %d",
                 api.http_listen, self.web.port, self.cgminer.port)  # fmt: skip

    async def stop(self) -> None:
        for surface in (self.cgminer, self.web):
            if surface is not None:
                try:
                    await asyncio.wait_for(surface.stop(), D.SURFACE_STOP_S)
                except Exception as exc:  # a surface that will not close must not block shutdown
                    log.warning("a surface did not stop cleanly: %s", exc)

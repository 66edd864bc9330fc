"""Shared by the fleet API tests: a fake Controls that records calls, and a State fed like a
4 x 72 L3+ (temperatures, fans, pools, nonces) on a fixed clock, so every read is reproducible."""

from __future__ import annotations

import asyncio
from typing import Any

from agent.api.controls import ControlError
from agent.state import State

POOL_A = "stratum+tcp://127.0.0.1:3333"
POOL_B = "stratum+tcp://127.0.0.2:3334"
CHAINS, CHIPS = 4, 72
TEMPS = (61.0, 62.5, 64.0, 65.5)
FANS = (3150, 3750)
UPTIME_S = 600.0
TICKET_DIFFICULTY = 131072.0  # about 140 MH/s a chain over the window, like an L3+


class FakeControls:
    """Records every call as (name, args); `called` is set on each one."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.called = asyncio.Event()
        self.located = False
        self.paused = False
        self._pools: list[dict[str, Any]] = [
            {"url": POOL_A, "user": "wallet.rig1", "priority": 0, "enabled": True},
            {"url": POOL_B, "user": "wallet.rig1", "priority": 1, "enabled": True},
        ]

    def _record(self, name: str, *args: Any) -> None:
        self.calls.append((name, args))
        self.called.set()

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]

    async def pause(self, reason: str) -> str:
        self._record("pause", reason)
        self.paused = True
        return "paused"

    async def resume(self, reason: str) -> str:
        self._record("resume", reason)
        self.paused = False
        return "resumed"

    async def restart(self) -> str:
        self._record("restart")
        return "restarted"

    def locate(self, on: bool, seconds: float | None = None) -> str:
        self._record("locate", on)
        self.located = on
        return "ok"

    def locating(self) -> bool:
        return self.located

    def pools(self) -> list[dict[str, Any]]:
        return [
            {**p, "index": i, "status": "alive" if p["enabled"] else "disabled"}
            for i, p in enumerate(self._pools)
        ]

    async def add_pool(self, url: str, user: str, password: str, priority: int | None) -> str:
        self._record("add_pool", url, user, priority)  # never the password
        if not url.startswith("stratum+"):
            raise ControlError("url must be stratum+tcp:// or stratum+ssl://")
        self._pools.append({"url": url, "user": user, "priority": len(self._pools),
                            "enabled": True})  # fmt: skip
        return "added"

    def _check(self, index: int) -> None:
        if not 0 <= index < len(self._pools):
            raise ControlError(f"no pool {index}")

    async def switch_pool(self, index: int) -> str:
        self._record("switch_pool", index)
        self._check(index)
        self._pools.insert(0, self._pools.pop(index))
        return "switched"

    async def enable_pool(self, index: int, enabled: bool) -> str:
        self._record("enable_pool", index, enabled)
        self._check(index)
        self._pools[index]["enabled"] = enabled
        return "ok"

    async def remove_pool(self, index: int) -> str:
        self._record("remove_pool", index)
        self._check(index)
        self._pools.pop(index)
        return "removed"


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def l3plus_state() -> State:
    """4 chains x 72 chips at 384 MHz with temperatures, 2 fans, 2 pools and some nonces;
    the clock then stands still UPTIME_S after the start."""
    clock = Clock()
    state = State(clock=clock, window_s=UPTIME_S)
    for c in range(CHAINS):
        state.set_chain(c, chips=CHIPS, frequency_mhz=384.0, temp_c=TEMPS[c])
    state.set_pool(POOL_A, status="alive", latency_ms=12.0)
    state.set_pool(POOL_B, status="alive", latency_ms=30.0)
    state.set_fans([{"rpm": FANS[0], "duty_pct": 60.0}, {"rpm": FANS[1], "duty_pct": 60.0}])
    clock.now += UPTIME_S / 2
    for c in range(CHAINS):
        for _ in range(10 + c):
            state.record_nonce(c, TICKET_DIFFICULTY, "accepted", pool=POOL_A)
    state.record_nonce(0, TICKET_DIFFICULTY, "hw_errors")
    clock.now += UPTIME_S / 2
    return state

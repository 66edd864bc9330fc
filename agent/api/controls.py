"""What the surfaces may ask the running agent to do. The mining service implements Controls;
the web page, the cgminer API and the stock CGI call it only for authenticated, allowed clients.

Every action returns a short human-readable result or raises ControlError naming what was wrong."""

from __future__ import annotations

from typing import Any, Protocol


class ControlError(Exception):
    """An action that cannot be done (bad argument, unknown pool...); the text says why."""


class Controls(Protocol):
    async def pause(self, reason: str) -> str:
        """Stop hashing (chains powered down), keep the pools connected."""
        ...

    async def resume(self, reason: str) -> str: ...

    async def restart(self) -> str:
        """Restart the mining service in place (the process stays up)."""
        ...

    def locate(self, on: bool, seconds: float | None = None) -> str:
        """The locate LED pattern on (for `seconds`, or until turned off) or off."""
        ...

    def locating(self) -> bool: ...

    def pools(self) -> list[dict[str, Any]]:
        """Configured pools in priority order: index, url, user, priority, enabled, status."""
        ...

    async def add_pool(self, url: str, user: str, password: str, priority: int | None) -> str: ...

    async def switch_pool(self, index: int) -> str:
        """Make pool `index` the preferred one (it gets the best priority)."""
        ...

    async def enable_pool(self, index: int, enabled: bool) -> str: ...

    async def remove_pool(self, index: int) -> str: ...

"""Nonce verification on the C core's own threads, with results delivered on the event loop.

A chain's nonces arrive one by one (31 a second on a whole L3+). Handing each to a Python thread
pool cost more CPU than the scrypt hash itself: a future per nonce, the GIL taken by the worker
before and after the hash, and a wake-up of the loop through its self-pipe. agent.scrypt.Verifier
hashes on threads that never take the GIL, and makes a pipe readable when results wait; the loop
watches that pipe and takes every finished hash in one call.

A lazy verifier (lazy_s > 0) does not wake the loop for each result: one waits until the loop
comes by for something else (collect()), or lazy_s, unless its hash meets the urgent target it
was submitted with (a share: the pool should have it at once).

    v = NonceVerifier(loop, on_result, lazy_s=0.5)  # on_result(context, raw_hash) on the loop
    v.submit(header80, context, urgent_target)
    v.collect()                          # at any wake-up: results finished so far
    await v.drain(timeout_s)             # at stop: wait for hashes in flight
    v.close()
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Generic, TypeVar

from agent import defaults as D
from agent import scrypt

T = TypeVar("T")
MAX_TARGET = 2**256 - 1  # an easier target is every hash

log = logging.getLogger(__name__)


class NonceVerifier(Generic[T]):
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_result: Callable[[T, bytes], None],
        threads: int = D.CHAIN_VERIFY_THREADS,
        lazy_s: float = 0.0,
    ) -> None:
        self._loop = loop
        self._on_result = on_result
        self._lazy_s = lazy_s
        self._v = scrypt.Verifier(threads, lazy_s)
        self._fd = self._v.fileno()
        self._contexts: dict[int, T] = {}
        self._next_tag = 0
        self._idle: asyncio.Event | None = None
        loop.add_reader(self._fd, self._ready)

    @property
    def pending(self) -> int:
        """Headers submitted whose result has not been delivered yet."""
        return len(self._contexts)

    def submit(self, header80: bytes, context: T, urgent_target: int | None = None) -> None:
        """Queue one 80-byte header; on_result(context, raw_hash) follows on the loop, at once
        if the hash is at or under urgent_target. OverflowError when the queue is full (the
        hashing threads are far behind)."""
        tag = self._next_tag
        urgent = None if urgent_target is None else min(urgent_target, MAX_TARGET).to_bytes(
            32, "little")  # fmt: skip
        self._v.submit(header80, tag, urgent)
        self._next_tag = tag + 1
        self._contexts[tag] = context

    def collect(self) -> None:
        """Deliver the results finished so far (no system call when there are none)."""
        if self._contexts:
            self._ready()

    def _ready(self) -> None:
        for tag, raw in self._v.take():
            context = self._contexts.pop(tag)
            try:
                self._on_result(context, raw)
            except Exception:  # one bad result must not lose the others taken with it
                log.exception("verifier: handling the result for %r failed", context)
        if not self._contexts and self._idle is not None:
            self._idle.set()

    async def drain(self, timeout_s: float) -> int:
        """Wait until every submitted header is delivered; returns how many were not by then."""
        if self._contexts:
            self._idle = asyncio.Event()
            self._v.set_lazy(0.0)  # every result as it comes: nothing else will wake us
            try:
                await asyncio.wait_for(self._idle.wait(), timeout_s)
            except TimeoutError:
                pass
            finally:
                self._idle = None
                if not self._v.closed:
                    self._v.set_lazy(self._lazy_s)
        return len(self._contexts)

    def close(self) -> None:
        """Stop the threads; results not delivered yet are dropped. Idempotent."""
        if not self._v.closed:
            self._loop.remove_reader(self._fd)
            self._v.close()
            self._contexts.clear()

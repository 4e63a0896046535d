"""The admission gate of the engines that hand requests to a server of their own.

vLLM and llama.cpp batch whatever they are given up to the size they started
with; gale's batch size, which a deployment changes in place, is this gate in
front of them: at most `limit` requests inside, the rest wait in arrival order.
"""

from __future__ import annotations

import asyncio
import collections


class Slots:
    """At most `limit` holders at once; the limit may change any time (one loop only)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def waiting(self) -> int:
        """Callers waiting for a slot."""
        return len(self._waiting)

    async def acquire(self) -> None:
        if self.held < self.limit and not self._waiting:
            self.held += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # granted just as we were cancelled: pass it on
            elif waiter in self._waiting:
                self._waiting.remove(waiter)
            raise

    def release(self) -> None:
        self.held -= 1
        self._wake()

    def set_limit(self, limit: int) -> None:
        self.limit = limit
        self._wake()

    def fail_waiting(self, error: BaseException) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_exception(error)

    def _wake(self) -> None:
        while self._waiting and self.held < self.limit:
            waiter = self._waiting.popleft()
            if not waiter.done():
                self.held += 1
                waiter.set_result(None)

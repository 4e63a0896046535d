"""The admission gate of the engines that hand requests to a server of their own.

vLLM and llama.cpp batch whatever they are given up to the size they started
with; gale's batch size, which a deployment changes in place, is this gate in
front of them: at most `limit` requests inside, the rest wait in arrival order.
"""

from __future__ import annotations

import asyncio
import collections
import heapq


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


class LowestFree:
    """Numbers 0 to `size` - 1 handed out lowest first, so those in use stay together.

    llama-server keeps each slot's KV cache in a region of its own, and a decode step
    reads the regions from the lowest slot in the batch to the highest, busy or not:
    eight requests on slots 0 to 7 read 8 regions, on slots 3 and 60 read 58. Left to
    itself, llama-server picks a slot by prompt likeness or least recent use, which
    spreads requests over every slot once it has run 64 at once (bundled model, 8
    requests at once: 498 tokens/s before a run of 64, 367 after). Asking for the
    lowest free slot keeps the regions a step reads as few as the requests in it.
    """

    def __init__(self, size: int) -> None:
        self._free = list(range(size))  # a heap

    def take(self) -> int | None:
        """The lowest free number, or None when all are taken."""
        return heapq.heappop(self._free) if self._free else None

    def give(self, number: int | None) -> None:
        if number is not None:
            heapq.heappush(self._free, number)

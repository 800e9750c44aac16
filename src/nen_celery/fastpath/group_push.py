"""Group commits of one event loop's LPUSHes onto one queue (the direct path from asyncio).

Why: under load a receiver's webhooks arrive together; one command for all of them saves each
one redis-py's command round (pool, encode, send, parse, timeout) and Redis its own command
cost, which on a shared machine is CPU the receiver and workers get back.
"""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

BATCH_MESSAGES = 128  # at most this many messages in one LPUSH ...
BATCH_BYTES = 1 << 20  # ... or this many bytes (at least one message, whatever its size)


class GroupPush:
    """One event loop's pushes onto one queue, as group commits: one LPUSH in flight at a time,
    carrying every message that arrived while the previous one was out (LPUSH takes many values
    and keeps their order, so the queue is FIFO as with one LPUSH each).

    Each message is still answered only after Redis has it. Bounded in time: a batch must land
    within ``deadline`` of the arrival of its oldest message, so no message waits longer than
    that, however many batches were ahead of it; a failed or timed-out push fails its own batch
    (each caller raises the error), and the next batch tries afresh within what is left of its
    own deadline.
    """

    def __init__(self, client: aioredis.Redis, key: str, deadline: float) -> None:
        self.client = client
        self.key = key
        self.deadline = deadline
        self.waiting: list[tuple[bytes, float, asyncio.Future[None]]] = []
        self.flusher: asyncio.Task[None] | None = None

    async def push(self, payload: bytes) -> None:
        """Return once ``payload`` is on the queue; raise the push's error otherwise."""
        loop = asyncio.get_running_loop()
        pushed: asyncio.Future[None] = loop.create_future()
        self.waiting.append((payload, loop.time(), pushed))
        if self.flusher is None:
            self.flusher = loop.create_task(self._flush())
        await pushed

    def _take(self) -> list[tuple[bytes, float, asyncio.Future[None]]]:
        """The oldest waiting messages, up to one batch."""
        size, count = 0, 0
        for payload, _, _ in self.waiting:
            if count and (count == BATCH_MESSAGES or size + len(payload) > BATCH_BYTES):
                break
            size += len(payload)
            count += 1
        batch, self.waiting = self.waiting[:count], self.waiting[count:]
        return batch

    async def _flush(self) -> None:
        try:
            while self.waiting:
                batch = self._take()
                try:
                    async with asyncio.timeout_at(batch[0][1] + self.deadline):
                        await self.client.lpush(self.key, *[payload for payload, _, _ in batch])
                except BaseException as exc:
                    for _, _, pushed in batch:
                        if not pushed.done():
                            pushed.set_exception(exc)
                    if not isinstance(exc, Exception):
                        for _, _, pushed in self.waiting:
                            pushed.cancel()
                        raise  # cancelled (the loop is closing), or exiting
                else:
                    for _, _, pushed in batch:
                        if not pushed.done():  # its caller may have been cancelled
                            pushed.set_result(None)
        finally:
            self.flusher = None

"""Adaptive micro-batching: concurrent requests share one model call.

One consumer task takes everything queued (up to `max_batch_size` rows; a request is never split)
and runs the model on it in a single worker thread, so the event loop keeps accepting and parsing
while the model works. Requests that arrive during a model call form the next batch by
themselves, which is where most of the batching comes from under load.

The wait bound adds a little: a batch smaller than the recent concurrency (the number of requests
in the previous batch, or requests known to be arriving) waits at most `max_wait_s` for the
rest. With one client in flight nothing ever waits, so single-request latency is the model's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

In = TypeVar("In")

log = logging.getLogger(__name__)

# predict(inputs) -> one result per input, in order; a result may be an exception instance,
# which fails only that input's request.
PredictMany = Callable[[Sequence[In]], Sequence[Any]]


@dataclass(slots=True)
class _Pending(Generic[In]):
    item: In
    size: int
    future: asyncio.Future[Any] = field(repr=False)


class BatcherClosed(RuntimeError):
    """The batcher is shutting down and takes no new work."""


class MicroBatcher(Generic[In]):
    def __init__(
        self,
        predict: PredictMany[In],
        *,
        max_batch_size: int,
        max_wait_s: float,
        size_of: Callable[[In], int] = lambda _: 1,
        on_batch: Callable[[int, int, float], None] | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        self._predict = predict
        self._max_rows = max_batch_size
        self._max_wait = max_wait_s
        self._size_of = size_of
        self._on_batch = on_batch  # (requests, rows, seconds) after each model call
        self._queue: deque[_Pending[In]] = deque()
        self._wakeup = asyncio.Event()
        self._arriving = 0
        self._last_batch_requests = 1
        self._closing = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict")
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="micro-batcher")

    async def close(self) -> None:
        """Stop taking work, finish everything already submitted, release the worker thread."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    @contextlib.contextmanager
    def arriving(self) -> Iterator[None]:
        """Mark a request as on its way (body being read, parsed): a batch may wait for it."""
        self._arriving += 1
        try:
            yield
        finally:
            self._arriving -= 1
            self._wakeup.set()

    async def submit(self, item: In) -> Any:
        """Queue `item` for the next batch and return its own result (or raise its error)."""
        if self._closing:
            raise BatcherClosed("the server is shutting down")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(item, self._size_of(item), future))
        self._wakeup.set()
        return await future

    def _take(self, batch: list[_Pending[In]], rows: int) -> int:
        while self._queue:
            size = self._queue[0].size
            if batch and rows + size > self._max_rows:
                break
            batch.append(self._queue.popleft())
            rows += size
        return rows

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch: list[_Pending[In]] = []
            rows = self._take(batch, 0)
            deadline = loop.time() + self._max_wait
            while rows < self._max_rows and not self._queue and not self._closing:
                expected = max(self._last_batch_requests, len(batch) + self._arriving)
                remaining = deadline - loop.time()
                if len(batch) >= expected or remaining <= 0:
                    break
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                rows = self._take(batch, rows)
            self._last_batch_requests = len(batch)
            await self._execute(loop, batch, rows)

    async def _execute(
        self, loop: asyncio.AbstractEventLoop, batch: list[_Pending[In]], rows: int
    ) -> None:
        items = [p.item for p in batch]
        started = loop.time()
        try:
            results = await loop.run_in_executor(self._executor, self._predict, items)
            if len(results) != len(batch):
                raise RuntimeError(f"predict returned {len(results)} results for {len(batch)}")
        except Exception as e:  # a bug below us: fail this batch, keep serving
            log.exception("batch of %d requests failed", len(batch))
            results = [e] * len(batch)
        if self._on_batch is not None:
            self._on_batch(len(batch), rows, loop.time() - started)
        for pending, result in zip(batch, results, strict=True):
            if pending.future.done():  # the client went away
                continue
            if isinstance(result, BaseException):
                pending.future.set_exception(result)
            else:
                pending.future.set_result(result)

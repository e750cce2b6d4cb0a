"""The micro-batcher's scheduling, run on a real event loop with a plain function as the model."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import pytest

from mlship.serving.batcher import BatcherClosed, MicroBatcher

pytestmark = pytest.mark.unit


class Model:
    """Squares numbers; records each call; can be slowed down or made to fail."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[list[int]] = []
        self.delay = delay
        self.threads: set[str] = set()

    def __call__(self, items: Sequence[int]) -> list[object]:
        self.calls.append(list(items))
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)
        return [ValueError(f"bad {x}") if x < 0 else x * x for x in items]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=10))


async def started(model, **kw) -> MicroBatcher[int]:
    kw.setdefault("max_batch_size", 64)
    kw.setdefault("max_wait_s", 0.0)
    batcher = MicroBatcher(model, **kw)
    batcher.start()
    return batcher


def test_requests_that_queue_during_a_model_call_share_the_next_call() -> None:
    model = Model(delay=0.1)

    async def main():
        batcher = await started(model)
        first = asyncio.create_task(batcher.submit(1))
        await asyncio.sleep(0.03)  # the first call is running now
        rest = [asyncio.create_task(batcher.submit(x)) for x in range(2, 10)]
        results = await asyncio.gather(first, *rest)
        await batcher.close()
        return results

    assert run(main()) == [x * x for x in range(1, 10)]
    assert model.calls == [[1], list(range(2, 10))]
    assert model.threads == {"predict_0"}  # the model never runs on the event loop


def test_a_lone_request_never_waits() -> None:
    model = Model()

    async def main():
        batcher = await started(model, max_wait_s=2.0)
        t0 = time.monotonic()
        assert await batcher.submit(3) == 9
        elapsed = time.monotonic() - t0
        await batcher.close()
        return elapsed

    assert run(main()) < 0.5


def test_after_a_concurrent_batch_a_short_batch_waits_for_the_rest() -> None:
    model = Model()

    async def main():
        # a wait bound far above the arrivals (0.15 s): stopping at the fourth is told apart from
        # waiting out the bound with seconds of margin either way
        batcher = await started(model, max_wait_s=5.0)
        await asyncio.gather(*(batcher.submit(x) for x in range(4)))  # concurrency seen: 4
        late = []

        async def later(x: int, delay: float) -> int:
            await asyncio.sleep(delay)
            return await batcher.submit(x)

        t0 = time.monotonic()
        late = await asyncio.gather(later(10, 0), later(11, 0.05), later(12, 0.1), later(13, 0.15))
        elapsed = time.monotonic() - t0
        await batcher.close()
        return late, elapsed

    late, elapsed = run(main())
    assert late == [100, 121, 144, 169]
    assert model.calls == [[0, 1, 2, 3], [10, 11, 12, 13]]
    assert elapsed < 2.5  # it stopped waiting once the expected four were there (not after 5 s)


def test_the_wait_is_bounded() -> None:
    model = Model()

    async def main():
        batcher = await started(model, max_wait_s=0.05)
        await asyncio.gather(*(batcher.submit(x) for x in range(4)))

        async def later(x: int, delay: float) -> int:
            await asyncio.sleep(delay)
            return await batcher.submit(x)

        await asyncio.gather(later(10, 0), later(11, 0.3))
        await batcher.close()

    run(main())
    assert model.calls == [[0, 1, 2, 3], [10], [11]]


def test_batches_respect_max_rows_and_never_split_a_request() -> None:
    model = Model(delay=0.05)

    async def main():
        batcher = await started(model, max_batch_size=10, size_of=lambda x: x)
        first = asyncio.create_task(batcher.submit(1))
        await asyncio.sleep(0.02)
        sizes = [4, 4, 4, 12, 3]
        rest = [asyncio.create_task(batcher.submit(x)) for x in sizes]
        await asyncio.gather(first, *rest)
        await batcher.close()

    run(main())
    assert model.calls == [[1], [4, 4], [4], [12], [3]]


def test_one_failing_item_fails_only_its_own_request() -> None:
    model = Model(delay=0.05)

    async def main():
        batcher = await started(model)
        blocker = asyncio.create_task(batcher.submit(0))
        await asyncio.sleep(0.02)
        results = await asyncio.gather(
            batcher.submit(2), batcher.submit(-1), batcher.submit(3), return_exceptions=True
        )
        await blocker
        await batcher.close()
        return results

    ok1, err, ok2 = run(main())
    assert (ok1, ok2) == (4, 9)
    assert isinstance(err, ValueError) and str(err) == "bad -1"
    assert model.calls[1] == [2, -1, 3]


def test_a_crashing_model_fails_its_batch_and_the_batcher_keeps_serving() -> None:
    calls = []

    def flaky(items: Sequence[int]) -> list[int]:
        calls.append(list(items))
        if len(calls) == 1:
            raise RuntimeError("boom")
        return [x + 1 for x in items]

    async def main():
        batcher = await started(flaky)
        with pytest.raises(RuntimeError, match="boom"):
            await batcher.submit(1)
        result = await batcher.submit(2)
        await batcher.close()
        return result

    assert run(main()) == 3


def test_close_answers_everything_submitted_then_refuses_new_work() -> None:
    model = Model(delay=0.05)

    async def main():
        batcher = await started(model)
        pending = [asyncio.create_task(batcher.submit(x)) for x in range(5)]
        await asyncio.sleep(0)  # let them queue
        await batcher.close()
        results = await asyncio.gather(*pending)
        with pytest.raises(BatcherClosed):
            await batcher.submit(9)
        return results

    assert run(main()) == [0, 1, 4, 9, 16]


def test_arriving_requests_are_waited_for() -> None:
    model = Model()

    async def main():
        # the batch closes as soon as the arrival is in: the wait is only a ceiling, and a generous
        # one, so a loaded machine's 50 ms that take a second cannot split the batch
        batcher = await started(model, max_wait_s=30)

        async def slow_arrival() -> int:
            with batcher.arriving():
                await asyncio.sleep(0.05)  # e.g. reading a body
            return await batcher.submit(7)

        arrival = asyncio.create_task(slow_arrival())
        await asyncio.sleep(0.01)
        results = await asyncio.gather(batcher.submit(5), arrival)
        await batcher.close()
        return results

    assert run(main()) == [25, 49]
    assert model.calls == [[5, 7]]


# ------------------------------------------------------------------ boundaries (mutation testing)


def test_a_batch_size_of_one_is_the_smallest() -> None:
    MicroBatcher(Model(), max_batch_size=1, max_wait_s=0.0)
    with pytest.raises(ValueError, match=r"^max_batch_size must be >= 1$"):
        MicroBatcher(Model(), max_batch_size=0, max_wait_s=0.0)


def test_each_model_call_is_reported_with_its_requests_rows_and_time() -> None:
    seen: list[tuple[int, int, float]] = []
    model = Model(delay=0.05)

    async def main():
        batcher = await started(model, on_batch=lambda *a: seen.append(a), size_of=lambda x: x)
        first = asyncio.create_task(batcher.submit(1))
        await asyncio.sleep(0.02)
        await asyncio.gather(first, batcher.submit(2), batcher.submit(3))
        await batcher.close()

    run(main())
    assert [(requests, rows) for requests, rows, _ in seen] == [(1, 1), (2, 5)]
    assert all(seconds >= 0.05 for _, _, seconds in seen)


def test_close_releases_the_worker_thread_and_refuses_with_a_reason() -> None:
    async def main():
        batcher = await started(Model())
        assert "micro-batcher" in {t.get_name() for t in asyncio.all_tasks()}
        assert await batcher.submit(2) == 4
        await batcher.close()
        assert not [t for t in threading.enumerate() if t.name.startswith("predict")]
        with pytest.raises(BatcherClosed, match=r"^the server is shutting down$"):
            await batcher.submit(1)

    run(main())


def test_close_without_start_is_fine() -> None:
    async def main():
        batcher = MicroBatcher(Model(), max_batch_size=4, max_wait_s=0.0)
        await batcher.close()

    run(main())


def test_a_batch_may_fill_max_rows_exactly_and_a_full_batch_never_waits() -> None:
    model = Model(delay=0.05)

    async def main():
        batcher = await started(model, max_batch_size=4, max_wait_s=5.0, size_of=lambda x: x)
        first = asyncio.create_task(batcher.submit(1))
        await asyncio.sleep(0.02)
        await asyncio.gather(first, batcher.submit(2), batcher.submit(2))  # 2 + 2 == 4: one call
        t0 = time.monotonic()
        assert await batcher.submit(4) == 16  # alone but full: no waiting for a second request
        elapsed = time.monotonic() - t0
        await batcher.close()
        return elapsed

    assert run(main()) < 2.5
    assert model.calls == [[1], [2, 2], [4]]


def test_a_model_answering_the_wrong_count_fails_its_batch_with_the_reason(caplog) -> None:
    async def main():
        batcher = await started(lambda items: [0], max_wait_s=0.0)
        blocker = asyncio.create_task(batcher.submit(1))
        await blocker
        results = await asyncio.gather(batcher.submit(2), batcher.submit(3), return_exceptions=True)
        await batcher.close()
        return results

    caplog.set_level("ERROR", logger="mlship.serving.batcher")
    results = run(main())
    assert [str(r) for r in results] == ["predict returned 1 results for 2"] * 2
    assert [r.getMessage() for r in caplog.records] == ["batch of 2 requests failed"]


def test_a_client_gone_mid_batch_does_not_stop_the_others_answers() -> None:
    model = Model(delay=0.1)

    async def main():
        batcher = await started(model)
        first = asyncio.create_task(batcher.submit(1))
        await asyncio.sleep(0.03)  # the first call runs; these three queue
        tasks = [asyncio.create_task(batcher.submit(x)) for x in (2, 3, 4)]
        await asyncio.sleep(0)
        tasks[0].cancel()  # the client of 2 went away
        results = await asyncio.gather(first, tasks[1], tasks[2])
        await batcher.close()
        return results

    assert run(main()) == [1, 9, 16]


def test_on_batch_times_are_durations_not_clock_readings() -> None:
    seen: list[float] = []

    async def main():
        batcher = await started(Model(delay=0.01), on_batch=lambda r, n, s: seen.append(s))
        await batcher.submit(1)
        await batcher.close()

    run(main())
    assert 0.01 <= seen[0] < 5

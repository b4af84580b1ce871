"""Dynamic batching on its own: waiting requests run together, large ones in chunks, and a
request that stalls while it arrives delays nobody for long."""

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from isplit.deploy.server import Batcher


def _scenario(max_batch: int, sizes: list[int], calls: list[int], wait_s: float = 0.05):
    def run(x):
        calls.append(len(x))
        return x * 2

    async def go():
        batcher = Batcher(run, max_batch, wait_s=wait_s, executor=ThreadPoolExecutor(1))
        batcher.start()
        jobs = [batcher.submit([np.full((n, 1), i, np.float32)], n) for i, n in enumerate(sizes)]
        out = await asyncio.gather(*jobs)
        await batcher.stop()
        return out

    return asyncio.run(go())


def test_dynamic_batching_runs_waiting_requests_together():
    calls = []
    sizes = [1, 2, 1, 3, 1, 6]
    out = _scenario(4, sizes, calls)
    for i, (n, (result, params)) in enumerate(zip(sizes, out)):
        assert (result == 2 * i).all() and result.shape == (n, 1)
        assert params["tail_ms"] >= 0 and 1 <= params["batch_size"] <= 4
    assert out[-1][1]["chunks"] == 2  # 6 images: 4 + 2
    assert sum(calls) == 14 and max(calls) <= 4  # no batch beyond the bound, even for the 6
    assert any(c > 1 for c in calls)  # several requests ran as one batch
    calls.clear()
    _scenario(1, [1, 1, 1], calls)
    assert calls == [1, 1, 1]  # --max-batch 1: no batching


def test_a_large_request_does_not_hold_the_tail():
    """The chunks of a large request are queued one at a time: small requests sent after it
    run between its chunks, not after all of them."""
    order = []

    def run(x):
        order.append(int(x[0, 0]))
        time.sleep(0.01)
        return x

    async def go():
        batcher = Batcher(run, 2, wait_s=0.0, executor=ThreadPoolExecutor(1))
        batcher.start()
        big = asyncio.ensure_future(batcher.submit([np.zeros((10, 1), np.float32)], 10))
        await asyncio.sleep(0.015)
        small = await batcher.submit([np.ones((1, 1), np.float32)], 1)
        await big
        await batcher.stop()
        return small

    asyncio.run(go())
    assert order.index(1) < 4, order  # not behind the big request's five chunks


def test_a_stalled_arrival_stops_holding_batches_after_the_wait():
    async def go():
        batcher = Batcher(lambda x: x, 8, wait_s=0.05, executor=ThreadPoolExecutor(1))
        with batcher.arriving():
            assert batcher.more_coming()
            await asyncio.sleep(0.08)
            assert not batcher.more_coming()  # arriving for longer than the wait: not soon

    asyncio.run(go())

"""Dynamic batching: the requests that wait together run as one batch of the tail, and a large
request runs in chunks of at most ``max_batch`` images, so that it cannot hold the tail (or its
memory) for longer than one batch while small requests wait."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from isplit.deploy.runtime import Runner

log = logging.getLogger("isplit")

#: observe(model batch size, tail seconds, the queue seconds of each job in it)
Observer = Callable[[int, float, list[float]], None]


@dataclass
class _Job:
    arrays: list[np.ndarray]
    n: int
    future: asyncio.Future
    queued: float


class Batcher:
    """Runs the jobs that are waiting together as one batch of at most ``max_batch`` images.

    After taking a job it takes every job already queued; while more requests for the model are
    arriving (being received for less than ``wait_s``: :meth:`arriving`) it waits for them, at
    most ``wait_s``. So a lone client never waits, concurrent ones are batched, and a client
    that stalls half-way through its body delays nobody for longer than ``wait_s``. A request
    larger than ``max_batch`` is queued one chunk at a time (:meth:`submit`); ``max_batch`` 1
    turns batching off. The model runs in ``executor``, off the event loop; ``observe`` sees
    every batch (metrics)."""

    def __init__(
        self, run: Runner, max_batch: int, wait_s: float, executor, observe: Observer | None = None
    ) -> None:
        self.run, self.max_batch, self.wait_s, self.executor = run, max_batch, wait_s, executor
        self.observe = observe
        self.queue: asyncio.Queue | None = None
        self._arriving: dict[int, float] = {}  # request -> when its body began to arrive
        self._ids = itertools.count()
        self._getter: asyncio.Future | None = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self.queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        for t in (self._task, self._getter):
            if t is not None:
                t.cancel()

    @contextmanager
    def arriving(self):
        """Marks a request whose body is being received for this model (see the class
        docstring)."""
        key = next(self._ids)
        self._arriving[key] = time.perf_counter()
        try:
            yield
        finally:
            del self._arriving[key]

    def more_coming(self) -> bool:
        """Whether a request began to arrive less than ``wait_s`` ago (worth waiting for)."""
        recent = time.perf_counter() - self.wait_s
        return any(t > recent for t in self._arriving.values())

    def enqueue(self, arrays: list[np.ndarray], n: int) -> asyncio.Future:
        """Queue a job of ``n`` images; the future gives ``(outputs, parameters)``."""
        future = asyncio.get_running_loop().create_future()
        self.queue.put_nowait(_Job(arrays, n, future, time.perf_counter()))
        return future

    async def submit(self, arrays: list[np.ndarray], n: int) -> tuple[np.ndarray, dict]:
        """Run ``n`` images (arrays with the batch first): at most ``max_batch`` at a time, each
        chunk queued when the one before it is done. Parameters: the tail's time (summed over
        the chunks), the largest batch it ran in, the time spent queued (summed), the chunks."""
        if n <= self.max_batch:
            return await self.enqueue(arrays, n)
        outs, tail_ms, queue_ms, batch = [], 0.0, 0.0, 0
        for start in range(0, n, self.max_batch):
            stop = min(n, start + self.max_batch)
            out, params = await self.enqueue([a[start:stop] for a in arrays], stop - start)
            outs.append(out)
            tail_ms += params["tail_ms"]
            queue_ms += params["queue_ms"]
            batch = max(batch, params["batch_size"])
        chunks = len(outs)
        params = {"tail_ms": tail_ms, "batch_size": batch, "queue_ms": queue_ms, "chunks": chunks}
        return np.concatenate(outs), params

    async def _next(self, timeout: float | None) -> _Job | None:
        """The next job, waiting at most ``timeout`` seconds (None: for ever; 0: only a job
        already queued). A pending get is kept for the next call, so that no job is lost."""
        if self._getter is None:
            try:
                return self.queue.get_nowait()
            except asyncio.QueueEmpty:
                if timeout is not None and timeout <= 0:
                    return None
                self._getter = asyncio.ensure_future(self.queue.get())
        if not self._getter.done():
            if timeout is not None and timeout <= 0:
                return None
            await asyncio.wait({self._getter}, timeout=timeout)
            if not self._getter.done():
                return None
        job, self._getter = self._getter.result(), None
        return job

    async def _loop(self) -> None:
        carry: _Job | None = None
        loop = asyncio.get_running_loop()
        while True:
            job = carry or await self._next(None)
            carry = None
            jobs, n = [job], job.n
            deadline = loop.time() + self.wait_s
            while n < self.max_batch:
                wait = deadline - loop.time() if self.more_coming() else 0.0
                nxt = await self._next(wait)
                if nxt is None:
                    break
                if n + nxt.n > self.max_batch:
                    carry = nxt
                    break
                jobs.append(nxt)
                n += nxt.n
            jobs = [j for j in jobs if not j.future.done()]  # clients that went away
            if jobs:
                await self._run(jobs, loop)

    async def _run(self, jobs: list[_Job], loop) -> None:
        started = time.perf_counter()
        try:
            arrays = (
                jobs[0].arrays
                if len(jobs) == 1
                else [np.concatenate(parts) for parts in zip(*(j.arrays for j in jobs))]
            )
            out, seconds = await loop.run_in_executor(self.executor, self._timed, arrays)
        except Exception as e:  # the model failed: every job of the batch gets the error
            log.exception("the tail failed on a batch of %d", sum(j.n for j in jobs))
            for j in jobs:
                if not j.future.done():
                    j.future.set_exception(e)
            return
        batch = sum(j.n for j in jobs)
        if self.observe is not None:
            self.observe(batch, seconds, [started - j.queued for j in jobs])
        offset = 0
        for j in jobs:
            if not j.future.done():
                params = {
                    "tail_ms": 1e3 * seconds,
                    "batch_size": batch,
                    "queue_ms": 1e3 * (started - j.queued),
                }
                j.future.set_result((out[offset : offset + j.n], params))
            offset += j.n

    def _timed(self, arrays: list[np.ndarray]) -> tuple[np.ndarray, float]:
        t = time.perf_counter()
        out = self.run(*arrays)
        return out, time.perf_counter() - t

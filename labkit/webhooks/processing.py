"""How a receiver should process webhooks: once, quickly, in the right order.

A provider that retries delivers *at least once*: when an answer is lost or
late, it sends the same delivery again. It also delivers in no particular
order: a retried old event can arrive after a newer one. So a receiver
needs three habits, each a wrapper around its ``process`` function here:

:class:`Idempotent`
    Remember each delivery id; a repeat is answered 200 but not processed
    again. At-least-once delivery becomes processed-once. (A real receiver
    keeps the ids in its database, under a unique constraint, for as long as
    the provider may retry: days.)
:class:`BackgroundWorker`
    Acknowledge fast: the request only puts the delivery in a queue and the
    receiver answers 200 at once; workers on the lab loop do the slow work
    afterwards. A receiver that works *inside* the request makes the
    provider wait, time out and retry work that is already under way.
:class:`LatestWins`
    Keep the newest state of each thing (an order, a payment): an older
    version arriving after a newer one is skipped, not applied over it.

They nest: ``Idempotent(BackgroundWorker(work))`` answers at once and queues
each delivery once. Each keeps counters, so an experiment can show its
numbers. All run on the lab loop, where the receiver calls them.

Example::

    worker = BackgroundWorker(save_to_database, workers=2)
    dedupe = Idempotent(worker)
    server = serve_receiver(process=dedupe)
    ...
    lab.run(worker.drain())
    print(dedupe.processed, dedupe.duplicates, worker.processed)
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Hashable

from labkit import lab
from labkit.errors import LabkitError
from labkit.webhooks.receiver import Delivery

__all__ = ["Idempotent", "BackgroundWorker", "LatestWins"]

Process = Callable[[Delivery], Any]


class Idempotent:
    """Run ``process`` once per delivery id; repeats are acknowledged and counted.

    ``processed`` counts deliveries processed, ``duplicates`` repeats
    suppressed. A repeat that arrives while the first copy is still being
    processed waits for it: if that fails, the repeat is processed (and if it
    succeeds, the repeat is a duplicate), so a 200 always means "done".
    A failed ``process`` is forgotten, so the provider's retry can do it.
    """

    def __init__(self, process: Process):
        self.process = process
        self.seen: set[str] = set()
        self.processed = 0
        self.duplicates = 0
        self._busy: dict[str, asyncio.Event] = {}

    async def __call__(self, delivery: Delivery) -> None:
        key = delivery.id
        if key is None:
            raise LabkitError("this delivery has no id, so repeats cannot be recognised: "
                              "check which header or field the provider puts it in")
        while key in self._busy:             # the same delivery is being processed now
            await self._busy[key].wait()
        if key in self.seen:
            self.duplicates += 1
            return
        self._busy[key] = finished = asyncio.Event()
        try:
            await lab.invoke(self.process, delivery)
            self.seen.add(key)
            self.processed += 1
        finally:
            del self._busy[key]
            finished.set()


class BackgroundWorker:
    """Fast acknowledgement: queue each delivery in the request, process it afterwards.

    Use the worker as the receiver's ``process``: it returns at once, so the
    receiver answers 200 in milliseconds however slow ``process`` is.
    ``workers`` tasks on the lab loop take deliveries from the queue in
    arrival order. ``processed`` counts the work done; ``errors`` keeps
    (delivery, exception) for work that failed. After the 200 the provider
    will not retry, so such failures are the receiver's to handle.

    The queue lives in memory: what :meth:`stop` finds unfinished is returned,
    not processed. A production receiver uses a durable queue.
    """

    def __init__(self, process: Process, workers: int = 1):
        if workers < 1:
            raise LabkitError(f"workers must be at least 1, got {workers!r}")
        self.process = process
        self.workers = workers
        self.processed = 0
        self.errors: list[tuple[Delivery, Exception]] = []
        self._queue: asyncio.Queue[Delivery] = asyncio.Queue()
        self._tasks: list[asyncio.Task] = []
        self._unfinished: list[Delivery] = []

    @property
    def queued(self) -> int:
        """Deliveries waiting for a worker."""
        return self._queue.qsize()

    def __call__(self, delivery: Delivery) -> None:
        if not self._tasks:
            loop = asyncio.get_running_loop()
            self._tasks = [loop.create_task(self._work()) for _ in range(self.workers)]
        self._queue.put_nowait(delivery)

    async def _work(self) -> None:
        while True:
            delivery = await self._queue.get()
            try:
                await lab.invoke(self.process, delivery)
                self.processed += 1
            except asyncio.CancelledError:
                self._unfinished.append(delivery)
                raise
            except Exception as exc:
                self.errors.append((delivery, exc))
            finally:
                self._queue.task_done()

    async def drain(self) -> None:
        """Wait until every queued delivery has been processed (or has failed)."""
        await self._queue.join()

    async def stop(self) -> list[Delivery]:
        """Cancel the workers; return the deliveries they had not finished.

        Those were acknowledged but never processed: with an in-memory queue
        a restart loses them, which is why production queues are durable.
        The worker starts again on the next delivery.
        """
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        unfinished, self._unfinished = self._unfinished, []
        while not self._queue.empty():
            unfinished.append(self._queue.get_nowait())
            self._queue.task_done()
        return unfinished


class LatestWins:
    """Apply a delivery only if it is newer than what was applied for its thing.

    ``key(delivery)`` names the thing (e.g. an order id in the payload) and
    ``version(delivery)`` orders its states: a sequence number or an
    ``updated_at`` from the payload, NOT the delivery's own timestamp, which
    is new on every retry. A version no newer than the one applied is
    skipped and counted in ``stale``; ``applied`` counts the others and
    ``latest`` maps each key to the version applied.
    """

    def __init__(self, process: Process, *, key: Callable[[Delivery], Hashable],
                 version: Callable[[Delivery], Any]):
        self.process = process
        self.key = key
        self.version = version
        self.latest: dict[Hashable, Any] = {}
        self.applied = 0
        self.stale = 0

    async def __call__(self, delivery: Delivery) -> None:
        key, version = self.key(delivery), self.version(delivery)
        previous = self.latest.get(key)
        if previous is not None and version <= previous:
            self.stale += 1
            return
        self.latest[key] = version      # claim it now: an older one arriving meanwhile is stale
        try:
            await lab.invoke(self.process, delivery)
        except BaseException:
            if self.latest.get(key) == version:   # nothing newer came meanwhile: undo it
                if previous is None:
                    del self.latest[key]
                else:
                    self.latest[key] = previous
            raise
        self.applied += 1

"""Group calls that arrive at once from several threads into one batched call.

A segmenter actor serves the keyframes of many streams. On a GPU one forward
pass over several frames costs little more than over one, so the actor takes
calls concurrently and hands whatever has queued up to the model together.
Nothing waits for a batch to fill: a call arriving at an idle batcher runs at
once, alone; calls arriving while a batch runs form the next one.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Sequence, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass
class _Call(Generic[Item]):
    item: Item
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None


class MicroBatcher(Generic[Item, Result]):
    """Runs ``run_batch(items) -> results`` (one result per item, in order) on one thread of its own.

    :meth:`submit` blocks its caller until its item's result is ready. When a batch raises, its items run
    again one by one, so a bad item fails only its own caller.
    """

    def __init__(self, run_batch: Callable[[Sequence[Item]], Sequence[Result]], max_batch: int = 8,
                 name: str = "micro-batcher") -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.batch_sizes: Counter[int] = Counter()  # how many batches of each size ran
        self._queue: list[_Call[Item]] = []
        self._ready = threading.Condition()
        threading.Thread(target=self._serve, name=name, daemon=True).start()

    def submit(self, item: Item) -> Result:
        call: _Call[Item] = _Call(item)
        with self._ready:
            self._queue.append(call)
            self._ready.notify()
        call.done.wait()
        if call.error is not None:
            raise call.error
        return call.result

    def _serve(self) -> None:
        while True:
            with self._ready:
                self._ready.wait_for(lambda: self._queue)
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
            self.batch_sizes[len(batch)] += 1
            self._run(batch)

    def _run(self, batch: list[_Call[Item]]) -> None:
        try:
            results = self.run_batch([call.item for call in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"a batch of {len(batch)} gave {len(results)} results")
        except Exception as exc:  # noqa: BLE001 - raised to its caller; in a batch, the items run alone
            if len(batch) == 1:
                batch[0].error = exc
                batch[0].done.set()
            else:
                for call in batch:
                    self._run([call])
            return
        for call, result in zip(batch, results):
            call.result = result
            call.done.set()

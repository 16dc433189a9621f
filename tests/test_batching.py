"""MicroBatcher: calls from several threads go to the model together; each caller gets its own result."""

from __future__ import annotations

import threading
import time

import pytest

from pipeline.batching import MicroBatcher


class SlowDoubler:
    """Doubles numbers, taking a while per batch as a model's forward pass would; fails on 13."""

    def __init__(self, seconds: float = 0.05) -> None:
        self.seconds = seconds
        self.batches: list[list[int]] = []

    def __call__(self, items):
        self.batches.append(list(items))
        time.sleep(self.seconds)
        if 13 in items:
            raise ValueError("13 is unlucky")
        return [2 * item for item in items]


def _submit_all(batcher, items):
    results, errors = {}, {}

    def call(item):
        try:
            results[item] = batcher.submit(item)
        except Exception as exc:  # noqa: BLE001 - collected for the assertions
            errors[item] = exc

    threads = [threading.Thread(target=call, args=(item,)) for item in items]
    for thread in threads:
        thread.start()
        time.sleep(0.002)  # calls arrive one after another, while the first batch runs
    for thread in threads:
        thread.join(10)
    return results, errors


def test_a_lone_call_runs_at_once_and_concurrent_calls_share_batches():
    model = SlowDoubler()
    batcher = MicroBatcher(model, max_batch=4)
    assert batcher.submit(5) == 10 and model.batches == [[5]]
    results, errors = _submit_all(batcher, range(10))
    assert results == {i: 2 * i for i in range(10)} and not errors
    assert sorted(i for batch in model.batches[1:] for i in batch) == list(range(10))  # each item exactly once
    assert max(len(batch) for batch in model.batches) == 4  # never more than max_batch
    assert len(model.batches) - 1 < 10  # fewer model calls than items
    assert sum(batcher.batch_sizes.values()) == len(model.batches)


def test_a_failing_item_fails_only_its_own_caller():
    model = SlowDoubler()
    batcher = MicroBatcher(model, max_batch=8)
    results, errors = _submit_all(batcher, [1, 13, 2, 3])
    assert results == {1: 2, 2: 4, 3: 6}
    assert list(errors) == [13] and isinstance(errors[13], ValueError)
    assert [13] in model.batches  # the batch that held it ran again item by item


def test_max_batch_must_be_positive():
    with pytest.raises(ValueError, match="max_batch"):
        MicroBatcher(SlowDoubler(), max_batch=0)

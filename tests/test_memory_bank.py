import pickle

import numpy as np

from operators.association import AssociationConfig, TrackAssigner
from operators.memory_bank import ObservationBank
from operators.records import Instances


def test_first_observation_is_pinned_and_recent_slots_evict_oldest():
    bank = ObservationBank(slots=3, min_score=0.5)
    first = np.array([1.0, 0.0, 0.0], np.float32)
    assert bank.write(first, score=0.1)  # the first observation is always kept
    assert not bank.write(np.array([0.0, 1.0, 0.0]), score=0.4)  # doubtful: gated out
    for k in range(5):
        assert bank.write(np.array([0.0, 1.0, float(k)]), score=0.9)
    assert np.array_equal(bank.observations[0], first)
    assert [o[2] for o in bank.observations[1:]] == [3.0, 4.0]
    assert bank.similarity(np.array([2.0, 0.0, 0.0])) == 1.0  # still recognised by the pinned view


def test_bank_size_is_constant_in_stream_length():
    bank = ObservationBank(slots=4)
    sizes = []
    for k in range(1000):
        bank.write(np.random.default_rng(k).random(256).astype(np.float32), score=0.9)
        sizes.append(bank.nbytes())
    assert sizes[10] == sizes[-1] == 4 * 256 * 4
    assert len(pickle.dumps(bank)) < 8 * 1024


def test_track_memory_stays_bounded_over_many_keyframes():
    assigner = TrackAssigner(AssociationConfig(bank_slots=4))
    mask = np.zeros((1, 50, 50), bool)
    mask[0, 10:30, 10:30] = True
    sizes = []
    previous = Instances.empty(50, 50)
    for frame in range(0, 3000, 10):
        emb = np.random.default_rng(frame).random((1, 64)).astype(np.float32)
        detections = Instances.from_masks(mask, [0.9], [0], 50, 50, embeddings=emb)
        previous = assigner.assign_keyframe(detections, previous, frame)
        sizes.append(assigner.nbytes())
    assert previous.track_ids.tolist() == [1]
    assert sizes[5] == sizes[-1] == 4 * 64 * 4

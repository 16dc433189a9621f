import numpy as np

from operators.association import AssociationConfig, TrackAssigner
from operators.records import Instances


def _square(x, y, size=20, shape=(100, 100)):
    mask = np.zeros(shape, bool)
    mask[y : y + size, x : x + size] = True
    return mask


def _detections(squares, prompt_ids=None, embeddings=None, scores=None):
    n = len(squares)
    return Instances.from_masks(
        [_square(x, y) for x, y in squares], scores or [0.9] * n, prompt_ids or [0] * n, 100, 100,
        embeddings=None if embeddings is None else np.asarray(embeddings, np.float32),
    )


def test_ids_follow_objects_across_keyframes_even_when_detection_order_changes():
    assigner = TrackAssigner()
    first = assigner.assign_keyframe(_detections([(10, 10), (60, 60)]), Instances.empty(100, 100), 0)
    assert first.track_ids.tolist() == [1, 2]
    propagated = first  # as if flow kept them in place
    second = assigner.assign_keyframe(_detections([(62, 60), (12, 10)]), propagated, 10)
    assert second.track_ids.tolist() == [2, 1]


def test_prompt_id_gates_matching():
    assigner = TrackAssigner()
    first = assigner.assign_keyframe(_detections([(10, 10)], prompt_ids=[0]), Instances.empty(100, 100), 0)
    second = assigner.assign_keyframe(_detections([(10, 10)], prompt_ids=[1]), first, 10)
    assert second.track_ids[0] != first.track_ids[0]


def test_new_instance_gets_new_id_and_low_scores_are_not_born():
    assigner = TrackAssigner(AssociationConfig(birth_score=0.5))
    first = assigner.assign_keyframe(_detections([(10, 10)]), Instances.empty(100, 100), 0)
    second = assigner.assign_keyframe(_detections([(10, 10), (70, 70), (40, 70)], scores=[0.9, 0.8, 0.2]), first, 10)
    assert second.track_ids.tolist() == [1, 2]


def test_reentry_by_appearance_keeps_id_within_window_only():
    cfg = AssociationConfig(max_absent_frames=30, coast_score=1.1)
    assigner = TrackAssigner(cfg)
    red, blue = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]
    first = assigner.assign_keyframe(_detections([(10, 10), (60, 60)], embeddings=[red, blue]), Instances.empty(100, 100), 0)
    gone = assigner.assign_keyframe(_detections([(60, 60)], embeddings=[blue]), first, 10)
    assert gone.track_ids.tolist() == [2]
    assert assigner.absent(gone, 10) == (1,)
    back = assigner.assign_keyframe(_detections([(80, 10), (60, 60)], embeddings=[red, blue]), gone, 20)
    assert back.track_ids.tolist() == [1, 2]
    late = TrackAssigner(cfg)
    first = late.assign_keyframe(_detections([(10, 10)], embeddings=[red]), Instances.empty(100, 100), 0)
    late.absent(Instances.empty(100, 100), 100)  # past the re-entry window: forgotten
    again = late.assign_keyframe(_detections([(10, 10)], embeddings=[red]), Instances.empty(100, 100), 100)
    assert again.track_ids.tolist() == [2]


def test_confident_propagated_track_missed_by_keyframe_coasts_once():
    assigner = TrackAssigner(AssociationConfig(coast_score=0.5, max_coast_keyframes=1))
    first = assigner.assign_keyframe(_detections([(10, 10), (60, 60)]), Instances.empty(100, 100), 0)
    second = assigner.assign_keyframe(_detections([(10, 10)]), first, 10)
    assert sorted(second.track_ids.tolist()) == [1, 2]
    third = assigner.assign_keyframe(_detections([(10, 10)]), second, 20)
    assert third.track_ids.tolist() == [1]


def test_drifted_track_takes_a_nearby_look_alike_detection_instead_of_a_new_id():
    assigner = TrackAssigner(AssociationConfig(min_reentry_similarity=0.8, max_drift=1.0))
    red = [1.0, 0.0, 0.0]
    first = assigner.assign_keyframe(_detections([(10, 10), (70, 70)], embeddings=[red, red]), Instances.empty(100, 100), 0)
    drifted = _detections([(28, 10), (70, 70)]).with_track_ids(first.track_ids)  # IoU 0.05 with its object
    again = assigner.assign_keyframe(_detections([(10, 10), (70, 70)], embeddings=[red, red]), drifted, 10)
    assert again.track_ids.tolist() == [1, 2] and len(again) == 2
    far = _detections([(75, 10), (70, 70)]).with_track_ids(first.track_ids)  # 3 object sizes away: not the same
    third = TrackAssigner(AssociationConfig(coast_score=1.1))
    third.assign_keyframe(_detections([(10, 10), (70, 70)], embeddings=[red, red]), Instances.empty(100, 100), 0)
    result = third.assign_keyframe(_detections([(10, 10), (70, 70)], embeddings=[red, red]), far, 10)
    assert result.track_ids.tolist() == [3, 2]


def test_an_absent_track_past_its_window_is_not_brought_back_by_a_keyframe():
    assigner = TrackAssigner(AssociationConfig(max_absent_frames=150))
    first = assigner.assign_keyframe(_detections([(10, 10)], embeddings=[[1, 0, 0]]), Instances.empty(100, 100), 0)
    assert first.track_ids.tolist() == [1]
    gone = Instances.empty(100, 100)
    back = assigner.assign_keyframe(_detections([(10, 10)], embeddings=[[1, 0, 0]]), gone, 150)
    assert back.track_ids.tolist() == [1]  # within 150 frames: the same id
    assigner.assign_keyframe(_detections([]), gone, 151)
    late = assigner.assign_keyframe(_detections([(10, 10)], embeddings=[[1, 0, 0]]), gone, 302)
    assert late.track_ids.tolist() == [2]  # 152 frames after it was last seen: a new track, as on propagated frames


def test_a_new_track_keeps_its_first_look_once_and_forgotten_prompts_leave_no_track():
    assigner = TrackAssigner()
    born = assigner.assign_keyframe(_detections([(10, 10), (60, 60)], prompt_ids=[0, 1],
                                                embeddings=[[1, 0, 0], [0, 1, 0]]), Instances.empty(100, 100), 0)
    bank = assigner.tracks[int(born.track_ids[0])].bank
    assert bank.pinned.tolist() == [1, 0, 0] and len(bank.recent) == 0  # pinned, not copied into the recent slots
    assigner.forget_prompts({1})
    assert [t.prompt_id for t in assigner.tracks.values()] == [0]
    assert assigner.absent(born[:1], 1) == ()  # prompt 1's track is not reported absent: it cannot come back


def test_a_keyframe_without_births_keeps_the_tracks_and_drops_new_objects():
    """A re-anchoring keyframe corrects the tracked objects; a newcomer waits for a regular keyframe."""
    assigner = TrackAssigner()
    first = assigner.assign_keyframe(_detections([(10, 10)]), Instances.empty(100, 100), 0)
    reanchored = assigner.assign_keyframe(_detections([(12, 10), (60, 60)]), first, 3, births=False)
    assert reanchored.track_ids.tolist() == [1] and len(assigner.tracks) == 1
    regular = assigner.assign_keyframe(_detections([(12, 10), (60, 60)]), reanchored, 10)
    assert sorted(regular.track_ids.tolist()) == [1, 2]

"""X-SAM behind the pipeline: prompts encoded once, cached segmentation on keyframes, on real Ray too."""

from __future__ import annotations

import json

import pytest

from bench.clips import ClipSpec, make_clip
from operators.keyframes import KeyframeConfig
from operators.segmenters import build_segmenter
from operators.stream import StreamProcessor, local_submit, run_stream
from pipeline.config import JobConfig
from pipeline.job import run_job
from pipeline.sources import open_video

FRAMES = 12


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from xsam.testing_utils import make_tiny_checkpoint

    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(ClipSpec(seed=21, num_frames=FRAMES), tmp_path_factory.mktemp("xsam") / "clip.mp4")


class _Counting:
    """Wraps a predictor method and counts calls, to assert which paths the pipeline takes."""

    def __init__(self, method):
        self.method, self.calls = method, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.method(*args, **kwargs)


def test_prompt_encoded_once_and_cached_segment_on_every_keyframe(checkpoint, clip):
    segmenter = build_segmenter("xsam", checkpoint=str(checkpoint), device="cpu", score_threshold=0.3)
    predictor = segmenter.predictor
    encode, segment = _Counting(predictor.encode_prompts), _Counting(predictor.segment_batch)
    decoder = predictor.model.llm.get_decoder()
    siglip, llm = _Counting(predictor.model.encode_siglip), _Counting(decoder.forward)
    predictor.encode_prompts, predictor.segment_batch = encode, segment
    predictor.model.encode_siglip, decoder.forward = siglip, llm

    processor = StreamProcessor("clip", str(clip.path), [clip.suggested_prompt(clip.kinds[1], "box")],
                                keyframes=KeyframeConfig(every=4))
    records = []
    with open_video(clip.path) as video:
        run_stream(video.frames(), processor, local_submit(segmenter), records.append)

    keyframes = [r.frame_index for r in records if r.kind == "keyframe"]
    assert len(records) == FRAMES and keyframes[:2] == [0, 4] and len(keyframes) >= FRAMES // 4
    assert encode.calls == 1, "the prompt is encoded once for the stream"
    assert segment.calls == len(keyframes), "every keyframe runs the cached path"
    assert processor.memory_nbytes() > 0
    assert siglip.calls == llm.calls > 0  # SigLIP and the LLM run only when (re-)encoding prompts
    assert siglip.calls <= 1 + len(keyframes)


@pytest.mark.slow
def test_archive_job_runs_xsam_on_ray(ray_local, checkpoint, clip, tmp_path):
    box = clip.suggested_prompt(clip.kinds[1], "box").box
    summary = run_job(JobConfig(
        sources=[str(clip.path)], out_dir=tmp_path / "out", prompts=["box:" + ",".join(str(v) for v in box)],
        segmenter="xsam", segmenter_options={"checkpoint": str(checkpoint), "score_threshold": 0.3},
        sinks=["jsonl"], keyframe_every=4, progress=False,
    ))
    assert summary.videos[0].status == "done", summary.to_dict()["failures"]
    lines = [json.loads(line) for line in (tmp_path / "out" / "clip" / "frames.jsonl").read_text().splitlines()]
    assert [line["frame_index"] for line in lines] == list(range(FRAMES))
    assert lines[0]["kind"] == "keyframe" and summary.videos[0].prompt_memory_bytes > 0


def test_live_command_runs_xsam_from_its_checkpoint(checkpoint, clip, tmp_path):
    from pipeline.cli import main

    box = ",".join(str(v) for v in clip.suggested_prompt(clip.kinds[1], "box").box)
    status = main(["live", str(clip.path), "--mode", "archive", "--prompt", f"box:{box}", "--out", str(tmp_path),
                   "--segmenter", "xsam", "--checkpoint", str(checkpoint), "--keyframe-every", "4"])
    summary = json.loads((tmp_path / "live_summary.json").read_text())
    assert status == 0 and [s["status"] for s in summary["streams"]] == ["stopped"], summary
    records = [json.loads(line) for path in tmp_path.glob("*/frames.jsonl") for line in path.read_text().splitlines()]
    assert [r["frame_index"] for r in records] == list(range(FRAMES)) and records[0]["kind"] == "keyframe"

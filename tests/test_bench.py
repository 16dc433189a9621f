"""The benchmark harness (``python -m bench``): JSON shape, positive figures, lossless looping, report blocks.

No timing thresholds: figures depend on the machine. The Ray sections run in the slow test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.__main__ import config_from_args, parse_args
from bench.clips import ClipSpec, make_clip
from bench.report import markdown_blocks, replace_blocks
from bench.sections.breakdown import efficiency_factors
from bench.sections.pipeline import segmenter_ms_per_frame
from bench.sections.segmenter import segmenter_fps
from bench.videos import loop_video
from pipeline.sources import open_video

ROOT = Path(__file__).resolve().parent.parent


def run_bench(tmp_path: Path, *args: str, timeout: int) -> dict:
    out = tmp_path / "out.json"
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled",
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", *args, "--json", str(out), "--work-dir", str(tmp_path / "work"),
         "--cache-dir", str(tmp_path / "cache")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert json.loads(done.stdout) == result  # stdout is the same JSON document
    assert "==" in done.stderr  # and the table went to stderr
    return result


def positive(value) -> bool:
    return isinstance(value, (int, float)) and value > 0 and np.isfinite(value)


def test_cheap_sections_report_positive_figures(tmp_path):
    result = run_bench(tmp_path, "--only", "decode", "segmenter", "breakdown", timeout=180)
    machine = result["machine"]
    assert machine["cores"] >= 1 and machine["cpu_model"] and machine["ram_gb"] > 0
    assert {"torch", "ray", "av", "opencv"} <= set(machine["versions"])
    assert set(result["sections"]) == {"decode", "segmenter", "breakdown"}

    decode = result["sections"]["decode"]
    for mode in ("threads_1", "threads_auto"):
        assert decode[mode]["frames"] == 4 * 60 and positive(decode[mode]["fps"])
    keyframes = decode["keyframes_only"]
    assert 1 <= keyframes["frames"] < 4 * 60 and positive(keyframes["covered_fps"])

    seg = result["sections"]["segmenter"]
    for key in ("encode_prompts_ms", "segment_ms", "refresh_ms", "reanchor_ms", "flow_ms", "warp_ms"):
        assert positive(seg[key]["mean"]) and positive(seg[key]["p50"]), key
    for key in ("keyframe_step_ms", "propagation_step_ms", "segmenter_fps", "operator_fps", "segment_every_frame_fps"):
        assert positive(seg[key]), key
    assert positive(seg["reanchor_step_ms"])
    assert seg["instances_mean"] > 0  # the prompt found its object
    assert seg["segmenter_fps"] == seg["segmenter_fps_by_k"][str(seg["keyframe_every"])]

    breakdown = result["sections"]["breakdown"]
    assert breakdown["frames"] == 4 * 60 and 4 <= breakdown["keyframes"] < 4 * 60
    steps = breakdown["steps_ms"]
    assert all(positive(steps[name]) for name in steps), steps
    # Nested steps sit inside their callers; the callers and the rest make up the whole frame.
    assert steps["warp"] <= steps["finish_keyframe"] + steps["finish_propagated"]
    assert steps["association"] <= steps["finish_keyframe"] and steps["flow_support"] <= steps["finish_propagated"]
    outer = ("decode", "scene_cut_signature", "flow", "segment_refresh", "finish_keyframe", "finish_propagated",
             "record_encoding")
    assert sum(steps[name] for name in outer) + breakdown["rest_ms"] == pytest.approx(breakdown["total_ms"], abs=0.01)
    assert 0 < breakdown["uncounted_ms"] < breakdown["total_ms"]
    assert 0 < breakdown["single_thread_ceiling"] < 1
    assert "efficiency_factors" not in breakdown  # no pipeline run to explain


@pytest.mark.slow
def test_ray_sections_report_positive_figures(tmp_path):
    result = run_bench(tmp_path, "--only", "pipeline", "naive", "memory", "breakdown", timeout=600)
    pipeline = result["sections"]["pipeline"]
    for label, frames in (("streams_1", 60), ("streams_4", 240)):
        run = pipeline[label]
        assert run["frames"] == frames and run["streams"] == int(label.split("_")[1])
        for key in ("fps", "steady_fps", "capacity_fps", "efficiency", "efficiency_steady", "operator_capacity_fps"):
            assert positive(run[key]), (label, key)
        assert all(0 <= j <= 1 for j in run["jf_track"]) and len(run["jf_track"]) == run["streams"]
    naive = result["sections"]["naive"]
    for key in ("naive_fps", "ours_local_fps", "speedup_local", "speedup_ray_1", "speedup_ray_4", "ours_ray_4_fps"):
        assert positive(naive[key]), key
    assert 0 < naive["naive_jf_frame_mean"] <= 1 and 0 < naive["ours_local_jf_track_mean"] <= 1
    assert "jf_delta_ray_4_vs_naive_frame" in naive
    memory = result["sections"]["memory"]
    assert [r["frames"] for r in memory["runs"]] == [200, 600]
    for run in memory["runs"]:
        assert positive(run["peak_rss_mb"]) and run["samples"] > 0
        assert run["peak_rss_by_role_mb"]["driver"] > 0 and any(k.startswith("worker:") for k in run["peak_rss_by_role_mb"])
        assert run["peak_object_store_mb"] < 1  # frames and records never go through Ray's object store
    assert abs(memory["peak_rss_diff_mb"]) < 50  # issue #6's bound: memory flat in video length
    factors = result["sections"]["breakdown"]["efficiency_factors"]
    assert factors["efficiency"] == pipeline["streams_4"]["efficiency"]
    assert factors["single_thread_ceiling"] * factors["parallel_vs_one_thread"] * factors["wall_vs_steady"] == (
        pytest.approx(factors["efficiency"], abs=0.005))


def test_sweep_section_reports_each_size_and_object_count(tmp_path):
    result = run_bench(tmp_path, "--only", "sweep", "--sweep-sizes", "128x96,160x120", "--sweep-frames", "10",
                       timeout=300)
    sweep = result["sections"]["sweep"]
    runs = sweep["runs"]
    assert [(r["size"], r["objects"]) for r in runs] == [("128x96", 1), ("128x96", 4), ("160x120", 1), ("160x120", 4)]
    for run in runs:
        assert run["frames"] == 10
        for key in ("naive_fps", "ours_local_fps", "ours_ray_fps", "speedup_local", "speedup_ray"):
            assert positive(run[key]), (run["size"], key)
        for key in ("naive_jf_frame", "naive_jf_track", "ours_local_jf_track", "ours_ray_jf_track"):
            assert 0 <= run[key] <= 1, (run["size"], key)
        assert 1 <= run["ours_ray_keyframes"] <= 10 and run["ours_ray_keyframe_reasons"]["prompt"] == 1
        assert run["speedup_local"] == pytest.approx(run["ours_local_fps"] / run["naive_fps"], rel=0.01)
        assert run["jf_delta_local"] == pytest.approx(run["ours_local_jf_track"] - run["naive_jf_frame"], abs=1e-4)
        assert run["meets_bar"] == (run["speedup_local"] >= 1 and run["jf_delta_local"] >= -0.01)
    assert sweep["runs_meeting_bar"] == sum(r["meets_bar"] for r in runs)
    job = sweep["ray_job"]  # one job of the four clips: its wall holds their 40 frames and the start-up
    assert positive(job["wall_s"]) and 0 < job["startup_overhead_s"] < job["wall_s"]
    assert job["fps"] == pytest.approx(40 / job["wall_s"], rel=0.01)


def test_sweep_sizes_option_and_its_quick_default():
    assert config_from_args(parse_args(["--quick"])).sweep_sizes == ((320, 240), (640, 480))
    assert config_from_args(parse_args([])).sweep_sizes[-1] == (1920, 1080)
    assert config_from_args(parse_args(["--sweep-sizes", "96x64,128x96"])).sweep_sizes == ((96, 64), (128, 96))
    with pytest.raises(SystemExit):
        parse_args(["--sweep-sizes", "96x64,big"])


def test_live_section_measures_both_runtimes_on_fresh_feeds(tmp_path):
    result = run_bench(tmp_path, "--only", "live", "--live-feeds", "1", "--live-seconds", "2", timeout=300)
    live = result["sections"]["live"]
    assert (live["feeds"], live["size"], live["fps"], live["seconds"], live["busy_processes"]) == (1, "640x480", 30, 2, 0)
    for runtime in ("ray", "in-process"):
        measured = live[runtime]
        [feed] = measured["feeds"]
        assert feed["status"] == "stopped" and 1.9 <= measured["window_s"] < 3 and positive(measured["startup_s"])
        for key in ("fps_in", "fps_out", "p95_ms", "run_p50_ms", "run_p95_ms", "run_max_ms", "keyframes",
                    "our_cpu_cores"):
            assert positive(feed.get(key, measured.get(key))), (runtime, key)
        assert feed["run_p50_ms"] <= feed["run_p95_ms"] <= feed["run_max_ms"] and 0 <= feed["drops"] <= feed["run_drops"]
        assert feed["run_frames_in"] > feed["fps_in"] * measured["window_s"] * 0.9  # the window is part of the run
        assert measured["meets_target"] == (feed["fps_out"] >= 29.7 and feed["drop_rate"] <= 0.01
                                            and feed["p95_ms"] < 200)


def test_live_window_p95_is_histogram_quantile_of_the_buckets():
    from bench.sections.live import histogram_quantile
    from pipeline.live import LatencyHistogram

    histogram = LatencyHistogram()
    for seconds in [0.005] * 50 + [0.03] * 40 + [0.15] * 10:  # p95 inside the (0.1, 0.2] bucket's half: 0.15
        histogram.add(seconds)
    buckets = histogram.figures()["buckets"]
    assert histogram_quantile(0.95, buckets) == pytest.approx(0.15)
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.01)  # the 50th of 50 in (0, 0.01]: its top
    assert histogram_quantile(0.95, [0] * len(buckets)) is None
    histogram.add(60.0)
    assert histogram_quantile(1.0, histogram.figures()["buckets"]) == 10.0  # past the last bound: the top bound


def test_live_options_and_their_quick_defaults():
    quick, full = config_from_args(parse_args(["--quick"])), config_from_args(parse_args([]))
    assert (full.live_feeds, full.live_seconds, full.live_load) == (2, 8.0, 0) and quick.live_seconds < full.live_seconds
    given = config_from_args(parse_args(["--live-feeds", "3", "--live-seconds", "20", "--live-load", "1"]))
    assert (given.live_feeds, given.live_seconds, given.live_load) == (3, 20.0, 1)


def test_loop_video_is_lossless(tmp_path):
    clip = make_clip(ClipSpec(seed=5, width=96, height=64, num_frames=12), tmp_path / "unit.mp4")
    looped = loop_video(clip.path, tmp_path / "looped.mp4", 3)
    with open_video(clip.path, threads=1) as video:
        unit = [f.image for f in video.frames()]
    with open_video(looped, threads=1) as video:
        assert video.info.frame_count == 36
        frames = list(video.frames())
    assert [f.index for f in frames] == list(range(36))
    assert all(b.pts > a.pts for a, b in zip(frames, frames[1:]))
    for i, frame in enumerate(frames):
        np.testing.assert_array_equal(frame.image, unit[i % 12])


def test_segmenter_fps_definition():
    assert segmenter_fps(4.0, 1.0, 1) == pytest.approx(250.0)  # K=1: every frame a keyframe
    assert segmenter_fps(4.0, 1.0, 10) == pytest.approx(1000 / (0.4 + 0.9))


def test_capacity_weighs_each_video_by_its_own_steps_and_keyframes():
    steps = {"keyframe_step_ms": 40.0, "reanchor_step_ms": 8.0, "propagation_step_ms": 5.0, "stream_extras_ms": 1.0}
    cost = {"clips": {"a": steps, "b": {k: 2 * v for k, v in steps.items()}}}
    videos = [{"stream_id": "a", "frames": 100, "keyframes": 10, "keyframe_reasons": {"interval": 10}},
              {"stream_id": "b", "frames": 100, "keyframes": 25, "keyframe_reasons": {"interval": 10, "ill_posed_flow": 15}}]
    # a: 10 keyframes x 40 + 90 x 5 = 850 ms; b: 10 x 80 + 15 re-anchoring x 16 + 75 x 10 = 1790 ms; over 200 frames
    assert segmenter_ms_per_frame(cost, videos, None) == pytest.approx(2640 / 200)
    # fixed K=10: a 10 keyframes, b 10 keyframes: 850 + (800 + 900) = 2550 ms
    assert segmenter_ms_per_frame(cost, videos, 10) == pytest.approx(2550 / 200)
    # operator work: flow + warp and the extras on every frame, keyframes on top
    assert segmenter_ms_per_frame(cost, videos, None, operator=True) == pytest.approx(
        (10 * 40 + 100 * 6 + 10 * 80 + 15 * 16 + 100 * 12) / 200)


def test_efficiency_factors_multiply_to_the_wall_efficiency():
    run = {"efficiency": 0.6, "efficiency_steady": 0.72}
    factors = efficiency_factors({"single_thread_ceiling": 0.8}, run)
    assert factors == {"single_thread_ceiling": 0.8, "parallel_vs_one_thread": 0.9, "wall_vs_steady": 0.833,
                       "efficiency": 0.6}


def test_markdown_blocks_replace_only_their_sections():
    text = "# Benchmarks\n\nprose kept\n\n<!-- bench:decode -->\nold\n<!-- /bench:decode -->\n\ntail kept\n"
    updated = replace_blocks(text, {"decode": "new decode", "memory": "new memory"})
    assert "prose kept" in updated and "tail kept" in updated and "old" not in updated
    assert updated.count("<!-- bench:decode -->") == 1 and "new decode" in updated
    assert updated.rstrip().endswith("<!-- /bench:memory -->")
    assert replace_blocks(updated, {"decode": "new decode", "memory": "new memory"}) == updated

    result = {"machine": {"cores": 2, "cpu_model": "cpu", "ram_gb": 1.0, "python": "3", "versions": {"ray": "x"},
                          "date": "d", "load_avg_start": [0, 0, 0]},
              "sections": {"decode": {"size": "8x8", "threads_1": {"fps": 1.0}, "threads_auto": {"fps": 2.0}}}}
    blocks = markdown_blocks(result, "python -m bench")
    assert set(blocks) == {"machine", "definitions", "decode"} and "| PyAV decode" in blocks["decode"]


def test_annotate_section_times_both_annotators_on_the_same_frames(tmp_path):
    result = run_bench(tmp_path, "--only", "annotate", timeout=180)
    section = result["sections"]["annotate"]
    assert section["frames"] == 60 and section["size"] == "320x240" and section["objects_mean"] >= 1
    for stage in ("masks", "outlines", "labels", "chain"):
        assert positive(section[f"ours_{stage}_ms"]) and positive(section[f"supervision_{stage}_ms"]), stage
    assert positive(section["supervision_chain_converting_ms"]) and positive(section["to_supervision_ms"])

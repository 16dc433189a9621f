"""Several Ray nodes on this machine (ray.cluster_utils.Cluster, loopback): spreading, and losing a node."""

from __future__ import annotations

import threading
import time

import pytest
import ray
from ray.cluster_utils import Cluster

from bench.clips import ClipSpec, make_clip
from pipeline.checkpoint import CHECKPOINT_FILE
from pipeline.config import JobConfig
from pipeline.job import run_job
from pipeline.live import WORKER_RESTARTED
from pipeline.live.cluster import RayLiveRunner
from pipeline.runtime import init_ray
from bench.feeds import StreamServer
from loopback import still_video
from test_live import _jsonl, _spec, _wait

FRAMES = 150


@pytest.fixture(scope="module")
def long_clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("multinode")
    return [make_clip(ClipSpec(seed=30 + i, num_frames=FRAMES), folder / f"long{i}.mp4") for i in range(4)]


def _config(clips, out, address=None):
    """Keyframes take 0.3 s (``SlowSegmenter``), so a video lasts ~5 s and the node removed below still has a
    video in progress: at full speed a 150-frame video could end before the node was gone."""
    box = clips[0].suggested_prompt(clips[0].kinds[1], "box").box
    return JobConfig(sources=[str(c.path) for c in clips], out_dir=out, prompts=["box:" + ",".join(map(str, box))],
                     sinks=["jsonl"], progress=False, parallel=4, address=address, checkpoint_every=25,
                     segmenter="tests.test_pipeline:SlowSegmenter")


def _alive_on(actor_class: str) -> list[str]:
    """Node ids of the live actors of ``actor_class``, sorted."""
    alive = [a for a in ray.state.actors().values() if a["State"] == "ALIVE" and a["ActorClassName"] == actor_class]
    return sorted(a["Address"]["NodeID"] for a in alive)


def _lines(path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.mark.slow
def test_archive_job_spreads_over_nodes_and_finishes_every_video_when_a_node_dies(long_clips, tmp_path):
    ray.shutdown()  # leave any single-node Ray of other tests
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    job = None
    try:
        init_ray(cluster.address)
        driver_node = ray.get_runtime_context().get_node_id()
        result = {}
        job = threading.Thread(target=lambda: result.update(summary=run_job(_config(long_clips, tmp_path / "multi",
                                                                                    cluster.address))), daemon=True)
        job.start()
        first = tmp_path / "multi" / long_clips[0].path.stem / "frames.jsonl"
        deadline = time.time() + 120
        while True:
            stream_nodes = _alive_on("StreamWorker")
            if time.time() > deadline or (len(stream_nodes) == len(long_clips) and _lines(first) >= 60):
                break
            time.sleep(0.2)
        assert len(set(stream_nodes)) >= 2, "stream workers are spread over the nodes"
        doomed = next(n for n in workers if n.node_id != driver_node and n.node_id in stream_nodes)
        cluster.remove_node(doomed)
        job.join(timeout=300)
        summary = result["summary"]
        assert [v.status for v in summary.videos] == ["done"] * 4, summary.to_dict()["failures"]
        assert max(v.attempts for v in summary.videos) == 2, "the videos on the lost node ran again"
    finally:
        if job is not None:
            job.join(timeout=300)  # a job still running after a failed check would restart Ray by using it
        ray.shutdown()
        cluster.shutdown()
    single = run_job(_config(long_clips, tmp_path / "single"))
    assert [v.status for v in single.videos] == ["done"] * 4
    for clip in long_clips:
        a = (tmp_path / "multi" / clip.path.stem / "frames.jsonl").read_text()
        b = (tmp_path / "single" / clip.path.stem / "frames.jsonl").read_text()
        assert a == b, f"{clip.path.stem}: multi-node results differ from a single-node run"
    ray.shutdown()


@pytest.fixture(scope="module")
def still_feed(tmp_path_factory):
    """Frame 0 of a two-blob clip held for 2 s, a keyframe each second for joining readers: the box prompts fit
    whatever frame of the loop a feed joins on (the clip's own objects sway), so track ids change only if a
    feed loses its objects' identities. The clip is returned for its prompt."""
    folder = tmp_path_factory.mktemp("live")
    clip = make_clip(ClipSpec(seed=6, num_frames=2, kinds=("red_blob",), instances_per_kind=2), folder / "blobs.mp4")
    return clip, still_video(clip.path, folder / "still.mp4", frames=50)


def _track_ids(records: list[dict]) -> set[int]:
    return {o["track_id"] for r in records for o in r["objects"]}


@pytest.mark.slow
def test_live_feeds_spread_over_nodes_and_a_lost_nodes_feed_moves_on_with_its_track_ids(still_feed, tmp_path):
    """3 nodes, 3 UDP feeds: one stream actor per node; the feed of a removed node goes on from its snapshot on
    another node, its gap reported as worker_restarted records, every feed's records in order."""
    ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    out = tmp_path / "live"
    runner = None
    clip, still = still_feed
    servers = [StreamServer(still, "udp").start() for _ in range(3)]
    try:
        init_ray(cluster.address)
        runner = RayLiveRunner(["jsonl"], out, address=cluster.address)
        ids = [f"cam{i}" for i in range(3)]
        for stream_id, feed in zip(ids, servers):
            runner.add_stream(_spec(stream_id, feed.url, clip, snapshot_every=0.5))
        lines = lambda stream_id: _lines(out / stream_id / "frames.jsonl")  # noqa: E731
        _wait(lambda: all(lines(s) >= 40 and (out / s / CHECKPOINT_FILE).exists() for s in ids), 90, "40 records each")
        nodes = {s: runner.stream_report(s)["node_id"] for s in ids}
        assert len(set(nodes.values())) == 3, nodes
        doomed = workers[0]
        moved = next(s for s, node in nodes.items() if node == doomed.node_id)
        cluster.remove_node(doomed)
        _wait(lambda: runner.stream_report(moved).get("restarts") == 1
              and runner.stream_report(moved).get("frames_processed", 0) >= 30, 90, f"{moved} restarted and running")
        report = runner.stream_report(moved)
        assert report["node_id"] not in (doomed.node_id, None) and report["status"] == "running", report
        runner.stop()
        runner.wait()
    finally:
        if runner is not None:
            runner.shutdown()
        ray.shutdown()
        cluster.shutdown()
        for feed in servers:
            feed.kill()
    summary = runner.summary()
    assert all(s["status"] == "stopped" for s in summary["streams"]), summary["failed"]
    for stream_id in ids:
        indices = [r["frame_index"] for r in _jsonl(out, stream_id)]
        assert indices == sorted(set(indices)), f"{stream_id}: records out of order or repeated"
    records = _jsonl(out, moved)
    gap = [i for i, r in enumerate(records) if r["reason"] == WORKER_RESTARTED]
    assert gap and gap == list(range(gap[0], gap[-1] + 1)), "one run of worker_restarted records"
    before, after = records[: gap[0]], records[gap[-1] + 1:]
    assert len(after) >= 20 and len(_track_ids(before)) == 2 and _track_ids(after) == _track_ids(before)

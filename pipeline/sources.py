"""Video sources: find local video files and decode them with exact timestamps and clear errors.

Two backends share one probe (PyAV opens the container, finds the video stream and reads what the
container declares) and one error mapping, so a given broken file fails with the same error class
whichever backend decodes it:

* ``PyAVReader`` (default): threaded FFmpeg decode, keyframe seeking for ``start``, ``keyframes_only``.
* ``DecordReader``: decord's random-access reader, for comparison and for callers that already use it.

Frame indices are 0-based in presentation order; ``pts`` are seconds from the container's timestamps
(relative to the stream's start time, as decord reports them), never ``index / fps``.

Live sources (issue #5): ``PyAVReader`` already takes any FFmpeg URL and demuxer ``options`` (for
example ``{"rtsp_transport": "tcp"}``); the local-file checks live in :func:`open_video`. What a live
source still needs is a reconnect policy and frame indexing without the whole-file packet scan that
``start > 0`` and ``keyframes_only`` use here.
"""

from __future__ import annotations

import bisect
import glob
import os
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Literal, Mapping, Sequence

import av
import av.logging
import numpy as np
from av.video.reformatter import VideoReformatter

from operators.errors import UnsupportedCodecError, VideoDecodeError, VideoOpenError

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm")

Backend = Literal["pyav", "decord"]

#: Matroska/WebM files start with an EBML header element followed by the Segment that holds everything.
_EBML_HEADER_ID = b"\x1a\x45\xdf\xa3"
_MATROSKA_SEGMENT_ID = b"\x18\x53\x80\x67"


# --------------------------------------------------------------------------- finding sources


def expand_sources(specs: Sequence[str], recursive: bool = False) -> list[Path]:
    """Turn files, directories and globs into a de-duplicated, ordered list of video files.

    Directory and glob matches are filtered by :data:`VIDEO_EXTENSIONS` (case-insensitive, hidden
    files skipped); a file named explicitly is kept whatever its extension, the decoder decides.
    A spec that yields nothing raises :class:`VideoOpenError` so a typo never silently empties a batch.
    """
    found: dict[Path, Path] = {}
    for spec in specs:
        for path in _expand_spec(spec, recursive):
            found.setdefault(path.resolve(), path)
    return list(found.values())


def _expand_spec(spec: str, recursive: bool) -> list[Path]:
    path = Path(spec)
    if path.is_file():
        return [path]
    if path.is_dir():
        pattern = os.path.join(glob.escape(spec), "**", "*") if recursive else os.path.join(glob.escape(spec), "*")
        videos = _video_files(pattern, recursive)
        if not videos:
            kinds = ", ".join(extension[1:] for extension in VIDEO_EXTENSIONS)
            raise VideoOpenError(spec, f"no video files ({kinds}) in directory")
        return videos
    if glob.has_magic(spec):
        videos = _video_files(spec, recursive)
        if not videos:
            raise VideoOpenError(spec, "glob matched no video files")
        return videos
    raise VideoOpenError(spec, "no such file")


def _video_files(pattern: str, recursive: bool) -> list[Path]:
    matches = (Path(match) for match in glob.glob(pattern, recursive=recursive))
    return sorted(match for match in matches if match.suffix.lower() in VIDEO_EXTENSIONS and match.is_file())


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class VideoInfo:
    """What the container declares about its video stream, read once at open."""

    path: str  # the source as given: a file path today, a URL once live sources land
    width: int
    height: int
    fps: float  # average frame rate; 0.0 if the container declares none
    frame_count: int | None  # declared by the container (MP4, AVI); None where it declares none (MKV)
    duration: float | None  # seconds
    codec: str
    time_base: Fraction


@dataclass(frozen=True, eq=False)
class DecodedFrame:
    """One decoded frame: ``index`` in presentation order, ``pts`` in seconds, RGB ``uint8`` (H, W, 3)."""

    index: int
    pts: float
    image: np.ndarray


# --------------------------------------------------------------------------- probe and errors shared by backends


@dataclass(frozen=True)
class _Declared:
    """What the container and stream headers promise, to tell a cut or damaged file from one that ended."""

    frames: int | None
    bytes: int | None  # where the container says its data ends
    file_bytes: int | None
    reorder_depth: int  # frames the decoder holds back to put B-frames in presentation order

    def is_incomplete(self, packets_read: int | None = None) -> bool:
        """True if the file holds less than declared; pass ``packets_read`` once the whole stream was read."""
        short_of_bytes = self.bytes is not None and self.file_bytes is not None and self.file_bytes < self.bytes
        short_of_frames = packets_read is not None and self.frames is not None and packets_read < self.frames
        return short_of_bytes or short_of_frames

    def truncation_reason(self, frames_decoded: int) -> str:
        if self.frames is not None:
            return f"truncated: container declares {self.frames} frames, decoded {frames_decoded}"
        return f"truncated: container declares {self.bytes} bytes, the file has {self.file_bytes}"


def _check_local_file(path: Path) -> None:
    """Fail early with a plain reason where FFmpeg would only say 'Invalid data'."""
    if not path.exists():
        raise VideoOpenError(str(path), "no such file")
    if path.is_dir():
        raise VideoOpenError(str(path), "is a directory, not a video file (expand_sources lists its videos)")
    if path.stat().st_size == 0:
        raise VideoOpenError(str(path), "file is empty (0 bytes)")


def _enable_ffmpeg_error_log() -> None:
    """Let FFmpeg's errors through PyAV, which mutes its log by default.

    Some damage is only ever logged (Matroska skips a damaged cluster and carries on), and open
    failures only say 'Invalid data' without it. Repeats must come through too: the same damage is
    logged again when a second pass reaches it. Process-wide: errors nobody captures go to the
    ``libav`` Python logger; a level set by the application is left alone.
    """
    if av.logging.get_level() is None:
        av.logging.set_level(av.logging.ERROR)
    av.logging.set_skip_repeated(False)


def _first_error(logs: list[tuple[int, str, str]]) -> str | None:
    return next((message.strip() for level, _, message in logs if level <= av.logging.ERROR), None)


def _open_container(source: str, options: Mapping[str, str]) -> av.container.InputContainer:
    _enable_ffmpeg_error_log()
    with av.logging.Capture() as logs:
        try:
            return av.open(source, options=dict(options))
        except av.FFmpegError as exc:
            if isinstance(exc, OSError):
                raise VideoOpenError(source, f"cannot read: {exc.strerror}") from exc
            detail = _first_error(logs)
            reason = f"{exc.strerror} ({detail})" if detail else exc.strerror
            raise VideoOpenError(source, f"not a readable video container: {reason}") from exc


def _video_stream(container: av.container.InputContainer, source: str, options: Mapping[str, str]) -> av.VideoStream:
    if not container.streams.video:
        found = ", ".join(f"{stream.type} {stream.codec_context.name}" for stream in container.streams if stream.codec_context)
        raise VideoOpenError(source, f"no video stream (found: {found or 'nothing'})")
    stream = container.streams.video[0]
    if stream.codec_context is None:
        raise UnsupportedCodecError(source, _unsupported_codec_reason(source, options))
    return stream


def _probe(container: av.container.InputContainer, stream: av.VideoStream, source: str) -> tuple[VideoInfo, _Declared]:
    context = stream.codec_context
    if stream.duration:
        duration = float(stream.duration * stream.time_base)
    else:
        duration = container.duration / av.time_base if container.duration else None
    info = VideoInfo(
        path=source,
        width=context.width,
        height=context.height,
        fps=float(stream.average_rate or stream.guessed_rate or 0),
        frame_count=stream.frames or None,
        duration=duration,
        codec=context.name,
        time_base=stream.time_base,
    )
    declared = _Declared(
        frames=info.frame_count,
        bytes=_declared_end(source, container, stream),
        file_bytes=os.path.getsize(source) if os.path.isfile(source) else None,
        reorder_depth=context.reorder_depth,
    )
    return info, declared


def _declared_end(source: str, container: av.container.InputContainer, stream: av.VideoStream) -> int | None:
    """Byte offset where the container says its data ends: Matroska's Segment size, else the sample index."""
    if container.format.name.startswith("matroska"):
        return _matroska_segment_end(source)
    entries = stream.index_entries
    return entries[-1].pos + entries[-1].size if len(entries) else None


def _matroska_segment_end(source: str) -> int | None:
    """Read the Segment size from a Matroska header (an EBML ID, then a variable-length size)."""
    if not os.path.isfile(source):
        return None
    with open(source, "rb") as file:
        head = file.read(64)
    offset = 0
    for element_id in (_EBML_HEADER_ID, _MATROSKA_SEGMENT_ID):
        if head[offset : offset + 4] != element_id or offset + 4 >= len(head):
            return None
        length = 9 - head[offset + 4].bit_length()  # the size's leading zero bits give its byte length
        value_bits = 7 * length
        size = int.from_bytes(head[offset + 4 : offset + 4 + length], "big") & ((1 << value_bits) - 1)
        offset += 4 + length
        if element_id == _MATROSKA_SEGMENT_ID:
            unknown_size = size == (1 << value_bits) - 1  # written by live muxers that cannot seek back
            return None if unknown_size else offset + size
        offset += size
    return None


def _unsupported_codec_reason(source: str, options: Mapping[str, str]) -> str:
    """Name the codec and FOURCC that no decoder reads.

    PyAV exposes nothing for such a stream; only FFmpeg's probe warning names it, so the file is
    opened again with warnings captured (switched on for this error path only, then restored).
    """
    level = av.logging.get_level()
    av.logging.set_level(av.logging.WARNING)
    try:
        with av.logging.Capture() as logs:
            av.open(source, options=dict(options)).close()
    finally:
        av.logging.set_level(level)
    for _, _, message in logs:
        found = re.search(r"Video: (\w+)(?: \((\S+) / 0x[0-9A-Fa-f]+\))?", message)
        if found:
            codec, fourcc = found.groups()
            tag = f" (FOURCC '{fourcc}')" if fourcc else ""
            return f"unsupported codec: unknown to FFmpeg{tag}" if codec == "none" else f"unsupported codec: no decoder for {codec}{tag}"
    return "unsupported codec: FFmpeg has no decoder for the video stream"


def _ffmpeg_error_text(exc: Exception) -> str:
    """A readable reason from a PyAV or decord exception, with FFmpeg's error code spelled out."""
    if isinstance(exc, av.FFmpegError):
        return exc.strerror or str(exc)
    # decord: "[12:00:00] /src/file.cc:218: Check failed: avcodec_send_packet(...) >= 0 (-1094995529 vs. 0) ..."
    text = re.sub(r"\[\d\d:\d\d:\d\d\] \S+:\d+: ", "", str(exc)).strip()
    code = re.search(r"-?\d{6,}", text)
    if code:
        try:
            av.error.err_check(-abs(int(code.group())))
        except av.FFmpegError as ffmpeg_error:
            text += f" ({ffmpeg_error.strerror})"
    return text


def _decode_failure(
    source: str, declared: _Declared, frame_index: int, damage: str | None, packets_read: int | None = None
) -> VideoDecodeError:
    """The error for a stream that stopped at ``frame_index``: truncated if the file is short, else corrupt."""
    reason = declared.truncation_reason(frame_index) if declared.is_incomplete(packets_read) else f"corrupt data: {damage}"
    return VideoDecodeError(source, reason, frame_index=frame_index)


def _check_complete(source: str, declared: _Declared, frames_decoded: int, packets_read: int) -> None:
    """At the end of the stream: raise if the file held less than its container declares."""
    if declared.is_incomplete(packets_read):
        raise VideoDecodeError(source, declared.truncation_reason(frames_decoded), frame_index=frames_decoded)


# --------------------------------------------------------------------------- readers


class VideoReader(ABC):
    """Decodes one video; ``frames()`` can be called again (each call starts where it is told)."""

    info: VideoInfo

    @abstractmethod
    def frames(self, start: int = 0) -> Iterator[DecodedFrame]:
        """Yield frames from index ``start`` on; raise :class:`VideoDecodeError` where decoding fails."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class _PacketScan:
    """Every packet's timestamps up to the end or the first damage, read without decoding.

    It gives frames exact indices after a seek (a frame's index is its pts' rank) and tells decord,
    which cannot report damage itself, where the stream breaks.
    """

    presentation_pts: list[int]  # sorted: position = frame index
    keyframes: list[tuple[int, int]]  # (pts, earliest of pts/dts), sorted by pts
    packet_count: int  # including packets an edit list hides, as the container's frame count does
    damage: str | None

    def index_of(self, pts: int) -> int:
        return bisect.bisect_left(self.presentation_pts, pts)

    def seek_target(self, index: int) -> int:
        """A timestamp that makes the demuxer land on the last keyframe at or before frame ``index``.

        Demuxers compare seek targets with pts or dts; the earlier of the keyframe's two suits both.
        """
        target = self.presentation_pts[index]
        position = bisect.bisect_right(self.keyframes, (target, float("inf"))) - 1
        return self.keyframes[position][1] if position >= 0 else self.presentation_pts[0]

    def certain_frames(self, reorder_depth: int) -> int:
        """How many leading frames are known complete when the stream breaks after these packets.

        A frame lost in the break may belong before the last ``reorder_depth`` frames read (B-frames
        are stored after the frames they precede), which is why a decoder holds those back.
        """
        return max(0, len(self.presentation_pts) - reorder_depth)


def _scan_packets(source: str, options: Mapping[str, str], stream_index: int) -> _PacketScan:
    """Demux without decoding: cheap next to decoding up to ``start``."""
    pts: list[int] = []
    keyframes: list[tuple[int, int]] = []
    packet_count = 0
    damage = None
    with av.open(source, options=dict(options)) as container:
        packets = container.demux(container.streams[stream_index])
        while damage is None:
            try:
                with av.logging.Capture() as logs:
                    packet = next(packets, None)
            except av.FFmpegError as exc:
                damage = _ffmpeg_error_text(exc)
                break
            damage = _first_error(logs)
            if packet is None or damage is not None:
                break
            if not packet.size:
                continue
            packet_count += 1
            if packet.pts is None:
                raise VideoDecodeError(source, "packets have no timestamps, frames cannot be indexed", len(pts))
            if packet.is_discard:  # outside the edit list: decoded for reference, never shown
                continue
            pts.append(packet.pts)
            if packet.is_keyframe:
                keyframes.append((packet.pts, packet.pts if packet.dts is None else min(packet.pts, packet.dts)))
    return _PacketScan(sorted(pts), sorted(keyframes), packet_count, damage)


@dataclass
class _DemuxProgress:
    packets_read: int = 0
    damage: str | None = None


class PyAVReader(VideoReader):
    """FFmpeg decode through PyAV with frame threading.

    ``threads`` is FFmpeg's decoder thread count (0: one per core); lower it when several streams
    share few cores. ``keyframes_only`` makes the decoder skip every non-key frame, so only
    keyframes are yielded, each with its true index. ``options`` go to the demuxer (``av.open``).
    """

    def __init__(
        self,
        source: str,
        *,
        threads: int = 0,
        keyframes_only: bool = False,
        options: Mapping[str, str] | None = None,
    ) -> None:
        self._source = source
        self._options = dict(options or {})
        self._container = _open_container(source, self._options)
        try:
            self._stream = _video_stream(self._container, source, self._options)
        except Exception:
            self._container.close()
            raise
        self.info, self._declared = _probe(self._container, self._stream, source)
        context = self._stream.codec_context
        context.thread_type = "AUTO"
        context.thread_count = threads
        if keyframes_only:
            context.skip_frame = "NONKEY"
        self._keyframes_only = keyframes_only
        self._start_pts = self._stream.start_time or 0
        self._scan: _PacketScan | None = None
        self._positioned_at_start = True
        self._to_rgb = VideoReformatter()  # one per reader: it caches the conversion context, twice as fast
        #: Indices of frames FFmpeg decoded with errors concealed (damaged data, patched from neighbours).
        self.corrupt_frames: list[int] = []

    def frames(self, start: int = 0) -> Iterator[DecodedFrame]:
        resuming = start > 0 or not self._positioned_at_start
        scan = self._packet_scan() if resuming or self._keyframes_only else None
        if resuming:
            if start >= len(scan.presentation_pts):
                if scan.damage is not None:
                    raise _decode_failure(self._source, self._declared, start, scan.damage)
                _check_complete(self._source, self._declared, len(scan.presentation_pts), scan.packet_count)
                return
            self._container.seek(scan.seek_target(start), stream=self._stream)
            # FFmpeg may reset the decoder's reorder depth on a seek and then drop B-frames.
            self._stream.codec_context.reorder_depth = self._declared.reorder_depth
        self._positioned_at_start = False
        self.corrupt_frames = []
        progress = _DemuxProgress()
        next_index = start
        for position, frame in enumerate(self._decoded(progress, None if scan is None else scan.packet_count)):
            if frame.pts is None:
                raise VideoDecodeError(self._source, "frame has no timestamp (a raw stream? remux it into MP4 or MKV)", position)
            index = scan.index_of(frame.pts) if scan is not None else position
            if index < start:
                continue
            if frame.is_corrupt:
                self.corrupt_frames.append(index)
            pts = float((frame.pts - self._start_pts) * self._stream.time_base)
            image = self._to_rgb.reformat(frame, format="rgb24").to_ndarray()
            yield DecodedFrame(index, pts, np.ascontiguousarray(image))
            next_index = index + 1
        if progress.damage is not None:
            raise _decode_failure(self._source, self._declared, next_index, progress.damage)
        _check_complete(self._source, self._declared, next_index, scan.packet_count if scan else progress.packets_read)

    def _decoded(self, progress: _DemuxProgress, packet_count: int | None) -> Iterator[av.VideoFrame]:
        """Decoded frames in presentation order, up to the end of the stream or the first damage.

        Damage is an FFmpeg exception or an error FFmpeg only logs. Where the stream breaks, the
        frames the decoder still holds are dropped, not flushed: frames lost in the break may belong
        before them. ``packet_count`` is the stream's, where a scan counted it.
        """
        packets = self._container.demux(self._stream)
        while True:
            try:
                with av.logging.Capture() as logs:
                    packet = next(packets, None)
                progress.damage = _first_error(logs)
                if packet is None or progress.damage is not None:
                    return
                if packet.size:
                    progress.packets_read += 1
                elif self._declared.is_incomplete(progress.packets_read if packet_count is None else packet_count):
                    return  # the end of a cut file: an empty packet would flush the decoder
                frames = packet.decode()
            except av.FFmpegError as exc:
                progress.damage = _ffmpeg_error_text(exc)
                return
            yield from frames

    def _packet_scan(self) -> _PacketScan:
        if self._scan is None:
            self._scan = _scan_packets(self._source, self._options, self._stream.index)
        return self._scan

    def close(self) -> None:
        self._container.close()


class DecordReader(VideoReader):
    """decord's reader behind the same interface; probing and errors are shared with :class:`PyAVReader`.

    decord reads every packet when it opens and reports neither a cut nor damaged container data,
    so a packet scan at open finds where the stream breaks; frames past the last certain one are
    not delivered. A faststart MP4 cut part-way makes decord itself fail at open (frame 0).
    Timestamps are decord's float32 (about 7 significant digits).
    """

    def __init__(self, source: str, *, threads: int = 0, keyframes_only: bool = False) -> None:
        import decord  # imported here: decord has no wheels for some platforms where PyAV works

        self._source = source
        with _open_container(source, {}) as container:
            stream = _video_stream(container, source, {})
            self.info, self._declared = _probe(container, stream, source)
            scan = _scan_packets(source, {}, stream.index)
        self._damage = scan.damage
        self._stream_packets = None if scan.damage else scan.packet_count  # the whole stream's, if it was read
        broken = scan.damage is not None or self._declared.is_incomplete(scan.packet_count)
        self._frame_limit = scan.certain_frames(self._declared.reorder_depth) if broken else None
        self._errors = (decord.DECORDError, RuntimeError)
        try:
            self._reader = decord.VideoReader(source, num_threads=threads)
            self._pts = self._reader.get_frame_timestamp(range(len(self._reader)))[:, 0].astype(float)
            self._keyframes = self._reader.get_key_indices() if keyframes_only else None
        except self._errors as exc:
            raise _decode_failure(source, self._declared, 0, _ffmpeg_error_text(exc)) from exc

    def frames(self, start: int = 0) -> Iterator[DecodedFrame]:
        stop = len(self._reader) if self._frame_limit is None else min(self._frame_limit, len(self._reader))
        indices = range(start, stop) if self._keyframes is None else [i for i in self._keyframes if start <= i < stop]
        next_index = start
        for index in indices:
            try:
                image = self._reader[index].asnumpy()
            except self._errors as exc:
                raise _decode_failure(self._source, self._declared, next_index, _ffmpeg_error_text(exc)) from exc
            yield DecodedFrame(index, float(self._pts[index]), np.ascontiguousarray(image))
            next_index = index + 1
        if self._frame_limit is not None:
            raise _decode_failure(self._source, self._declared, max(start, stop), self._damage, self._stream_packets)
        _check_complete(self._source, self._declared, next_index, len(self._reader))

    def close(self) -> None:
        self._reader = None  # decord has no close(); dropping the reader closes the file


def open_video(
    path: str | Path,
    backend: Backend = "pyav",
    *,
    threads: int = 0,
    keyframes_only: bool = False,
) -> VideoReader:
    """Open a local video file, failing with a :class:`~operators.errors.PipelineError` that names why."""
    path = Path(path)
    _check_local_file(path)
    if backend == "pyav":
        return PyAVReader(str(path), threads=threads, keyframes_only=keyframes_only)
    if backend == "decord":
        return DecordReader(str(path), threads=threads, keyframes_only=keyframes_only)
    raise ValueError(f"unknown backend {backend!r}: use 'pyav' or 'decord'")

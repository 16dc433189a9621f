"""Video sources: find local video files and decode them with exact timestamps and clear errors.

Two backends share one probe (PyAV opens the container, finds the video stream and reads what the
container declares) and one error mapping, so a given broken file fails with the same error class
whichever backend decodes it:

* ``PyAVReader`` (default): threaded FFmpeg decode, keyframe seeking for ``start``, ``keyframes_only``.
* ``DecordReader``: decord's random-access reader, for comparison and for callers that already use it.

Frame indices are 0-based in presentation order; ``pts`` are seconds from the container's timestamps
(relative to the stream's start time, as decord reports them), never ``index / fps``.

A file cut short or damaged yields its intact frames, then :class:`VideoDecodeError` naming the first
frame not delivered. Frames are never shifted: where a stream breaks, the frames a lost B-frame could
precede are withheld.

FFmpeg's log stays off in this process: PyAV's log callback takes the GIL from decoder threads and
can deadlock them (PyAV issue #751), so do not enable ``av.logging`` where videos are decoded. Error
paths that need FFmpeg's words (an open failure's cause, an unknown codec's FOURCC) ask a
subprocess; damage FFmpeg would only log (Matroska skipping a damaged cluster) is found by walking
the Matroska elements instead.

Live sources (issue #5): :class:`LiveReader` reads ``rtsp://`` (TCP transport by default),
``udp://``, ``tcp://``, ``http(s)://`` and ``/dev/videoN`` with an open/read timeout, counts frames
as they are decoded (no packet scan), takes timestamps from the stream and reconnects with bounded
exponential backoff (:class:`ReconnectPolicy`) when the connection drops, reporting each change.
``PyAVReader`` also takes any FFmpeg URL and demuxer ``options``; the local-file checks live in
:func:`open_video`.
"""

from __future__ import annotations

import bisect
import glob
import logging
import os
import re
import subprocess
import sys
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Literal, Mapping, Sequence

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from operators.errors import PipelineError, UnsupportedCodecError, VideoDecodeError, VideoOpenError

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm")
# Fresh decord readers tried on one intact frame before a known break (see DecordReader._read).
DECORD_REOPENS = 8

Backend = Literal["pyav", "decord"]

# Matroska element IDs (with their length-marker bits, as written in the file).
_EBML_HEADER = 0x1A45DFA3
_SEGMENT = 0x18538067
_CLUSTER = 0x1F43B675
_TRACKS, _TRACK_ENTRY, _TRACK_NUMBER = 0x1654AE6B, 0xAE, 0xD7
_SIMPLE_BLOCK, _BLOCK_GROUP, _BLOCK = 0xA3, 0xA0, 0xA1
#: Timestamp, Position, PrevSize, SimpleBlock, BlockGroup, EncryptedBlock, SilentTracks, Void, CRC-32.
_CLUSTER_CHILDREN = {0xE7, 0xA7, 0xAB, _SIMPLE_BLOCK, _BLOCK_GROUP, 0xAF, 0x5854, 0xEC, 0xBF}

#: Opens a file with FFmpeg's warnings on and prints them: run in a subprocess, where no decoder
#: thread can deadlock on the log callback.
_PRINT_FFMPEG_OPEN_LOG = """
import sys, av, av.logging
av.logging.set_level(av.logging.WARNING)
options = dict(argument.split("=", 1) for argument in sys.argv[2:])
with av.logging.Capture() as logs:
    try:
        av.open(sys.argv[1], options=options, metadata_errors="replace").close()
    except av.FFmpegError:
        pass
print("\\n".join(message.strip() for _, _, message in logs))
"""


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
    """What the container promises, to tell a cut or damaged file from one that simply ended."""

    frames: int | None
    bytes: int | None  # where the container says its data ends
    file_bytes: int | None
    reorder_depth: int  # frames the decoder holds back to put B-frames in presentation order
    damaged_at: int | None  # byte offset of damage FFmpeg would skip silently (Matroska)

    def is_incomplete(self, packets_read: int | None = None) -> bool:
        """True if the file holds less than declared; pass ``packets_read`` once the whole stream was read."""
        short_of_bytes = self.bytes is not None and self.file_bytes is not None and self.file_bytes < self.bytes
        short_of_frames = packets_read is not None and self.frames is not None and packets_read < self.frames
        return short_of_bytes or short_of_frames

    def truncation_reason(self, frames_decoded: int) -> str:
        if self.frames is not None:
            return f"truncated: container declares {self.frames} frames, decoded {frames_decoded}"
        return f"truncated: container declares {self.bytes} bytes, the file has {self.file_bytes}"

    def damage_reached(self, packet: av.Packet) -> bool:
        """Whether ``packet`` comes from past the damage, where frames were dropped before it."""
        return self.damaged_at is not None and packet.pos is not None and packet.pos > self.damaged_at

    @property
    def damage_reason(self) -> str:
        return f"damaged Matroska element at byte {self.damaged_at} (FFmpeg drops frames up to the next cluster)"


def _check_local_file(path: Path) -> None:
    """Fail early with a plain reason where FFmpeg would only say 'Invalid data'."""
    if not path.exists():
        raise VideoOpenError(str(path), "no such file")
    if path.is_dir():
        raise VideoOpenError(str(path), "is a directory, not a video file (expand_sources lists its videos)")
    if path.stat().st_size == 0:
        raise VideoOpenError(str(path), "file is empty (0 bytes)")


def _ffmpeg_open_log(source: str, options: Mapping[str, str]) -> list[str]:
    """FFmpeg's warnings and errors on opening ``source``; empty if they could not be had in time."""
    options_arguments = [f"{key}={value}" for key, value in options.items()]
    try:
        done = subprocess.run(
            [sys.executable, "-c", _PRINT_FFMPEG_OPEN_LOG, source, *options_arguments],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return done.stdout.splitlines()


def _av_open(source: str, options: Mapping[str, str]) -> av.container.InputContainer:
    """Open for reading; damaged metadata text must not stop the frames from being read."""
    return av.open(source, options=dict(options), metadata_errors="replace")


def _open_container(source: str, options: Mapping[str, str]) -> av.container.InputContainer:
    try:
        return _av_open(source, options)
    except av.FFmpegError as exc:
        if isinstance(exc, OSError):
            raise VideoOpenError(source, f"cannot read: {exc.strerror}") from exc
        cause = _ffmpeg_open_log(source, options)[-1:]
        reason = f"{exc.strerror} ({cause[0]})" if cause else exc.strerror
        raise VideoOpenError(source, f"not a readable video container: {reason}") from exc


def _video_stream(container: av.container.InputContainer, source: str, options: Mapping[str, str]) -> av.VideoStream:
    if not container.streams.video:
        found = ", ".join(f"{stream.type} {stream.codec_context.name}" for stream in container.streams if stream.codec_context)
        raise VideoOpenError(source, f"no video stream (found: {found or 'nothing'})")
    stream = container.streams.video[0]
    if stream.codec_context is None:
        raise UnsupportedCodecError(source, _unsupported_codec_reason(source, options))
    return stream


def _unsupported_codec_reason(source: str, options: Mapping[str, str]) -> str:
    """Name the codec and FOURCC no decoder reads: PyAV exposes neither, FFmpeg's probe warning does."""
    for message in _ffmpeg_open_log(source, options):
        found = re.search(r"Video: (\w+)(?: \((\S+) / 0x[0-9A-Fa-f]+\))?", message)
        if found:
            codec, fourcc = found.groups()
            tag = f" (FOURCC '{fourcc}')" if fourcc else ""
            return f"unsupported codec: unknown to FFmpeg{tag}" if codec == "none" else f"unsupported codec: no decoder for {codec}{tag}"
    return "unsupported codec: FFmpeg has no decoder for the video stream"


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
    is_local_matroska = container.format.name.startswith("matroska") and os.path.isfile(source)
    if is_local_matroska:
        declared_end, damaged_at = _matroska_check(source)
    else:
        entries = stream.index_entries
        declared_end, damaged_at = (entries[-1].pos + entries[-1].size if len(entries) else None), None
    declared = _Declared(
        frames=info.frame_count,
        bytes=declared_end,
        file_bytes=os.path.getsize(source) if os.path.isfile(source) else None,
        reorder_depth=context.reorder_depth,
        damaged_at=damaged_at,
    )
    return info, declared


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


def _check_complete(source: str, declared: _Declared, frames_decoded: int, packets_read: int | None) -> None:
    """At the end of the stream: raise if the file held less than its container declares."""
    if declared.damaged_at is not None:
        raise _decode_failure(source, declared, frames_decoded, declared.damage_reason, packets_read)
    if declared.is_incomplete(packets_read):
        raise VideoDecodeError(source, declared.truncation_reason(frames_decoded), frame_index=frames_decoded)


# --------------------------------------------------------------------------- Matroska structure


def _ebml_element(file: BinaryIO, position: int) -> tuple[int, int | None, int] | None:
    """The element header at ``position``: (ID, data size or None if unknown, header length); None if invalid.

    IDs and sizes are variable-length integers whose first byte's leading zeros give their length.
    """
    file.seek(position)
    head = file.read(12)
    if not head or head[0] == 0:
        return None
    id_length = 9 - head[0].bit_length()
    if id_length > 4 or id_length >= len(head) or head[id_length] == 0:
        return None
    size_length = 9 - head[id_length].bit_length()
    if id_length + size_length > len(head):
        return None
    element_id = int.from_bytes(head[:id_length], "big")
    value_bits = 7 * size_length
    size = int.from_bytes(head[id_length : id_length + size_length], "big") & ((1 << value_bits) - 1)
    return element_id, None if size == (1 << value_bits) - 1 else size, id_length + size_length


def _matroska_check(source: str) -> tuple[int | None, int | None]:
    """(where the Segment says the file ends, the first damaged cluster element) of a Matroska file.

    FFmpeg's Matroska demuxer skips to the next cluster when it cannot parse an element and only
    logs it, so the frames it drops would shift every later index unnoticed. Walking the element
    headers (not the frame data) finds the same places. A file cut short is not damage here: the
    Segment size already tells that.
    """
    with open(source, "rb") as file:
        file_bytes = os.fstat(file.fileno()).st_size
        header = _ebml_element(file, 0)
        if header is None or header[0] != _EBML_HEADER or header[1] is None:
            return None, None
        segment_at = header[2] + header[1]
        segment = _ebml_element(file, segment_at)
        if segment is None or segment[0] != _SEGMENT:
            return None, None
        position = segment_at + segment[2]
        declared_end = None if segment[1] is None else position + segment[1]
        end = min(declared_end or file_bytes, file_bytes)
        track_numbers: set[int] = set()
        while position < end:
            element = _ebml_element(file, position)
            if element is None:
                return declared_end, position
            element_id, size, header_length = element
            if element_id == _TRACKS and size is not None:
                track_numbers = _track_numbers(file, position + header_length, position + header_length + size)
            if element_id == _CLUSTER:
                position, damaged_at = _walk_cluster(file, position + header_length, size, end, track_numbers)
                if damaged_at is not None:
                    return declared_end, damaged_at
            elif size is None:
                return declared_end, position  # only clusters may leave their size open
            else:
                position += header_length + size
    return declared_end, None


def _walk_cluster(
    file: BinaryIO, position: int, size: int | None, file_end: int, track_numbers: set[int]
) -> tuple[int, int | None]:
    """(where the cluster ends, its first damaged element or None)."""
    end = file_end if size is None else min(position + size, file_end)
    while position < end:
        element = _ebml_element(file, position)
        if element is None:
            return end, position
        element_id, child_size, header_length = element
        if size is None and element_id not in _CLUSTER_CHILDREN:
            return position, None  # a cluster of unknown size ends where the next top-level element starts
        if element_id not in _CLUSTER_CHILDREN or child_size is None:
            return end, position
        child_end = position + header_length + child_size
        if child_end > file_end:
            return end, None  # cut short, not damaged
        if child_end > end:
            return end, position  # overruns its cluster
        if element_id in (_SIMPLE_BLOCK, _BLOCK_GROUP):
            block_at = position + header_length
            if element_id == _BLOCK_GROUP:
                block_at = _find_child(file, block_at, child_end, _BLOCK)
            if block_at is None or _block_track(file, block_at) not in track_numbers:
                return end, position
        position = child_end
    return end, None


def _children(file: BinaryIO, position: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(ID, data offset, data size) of each child element between ``position`` and ``end``."""
    while position < end:
        element = _ebml_element(file, position)
        if element is None or element[1] is None:
            return
        element_id, size, header_length = element
        yield element_id, position + header_length, size
        position += header_length + size


def _find_child(file: BinaryIO, position: int, end: int, wanted_id: int) -> int | None:
    """Data offset of the child element ``wanted_id`` between ``position`` and ``end``."""
    return next((at for element_id, at, _ in _children(file, position, end) if element_id == wanted_id), None)


def _track_numbers(file: BinaryIO, position: int, end: int) -> set[int]:
    """The TrackNumber of every TrackEntry in a Tracks element."""
    numbers = set()
    for entry_id, entry_at, entry_size in _children(file, position, end):
        if entry_id != _TRACK_ENTRY:
            continue
        for child_id, at, size in _children(file, entry_at, entry_at + entry_size):
            if child_id == _TRACK_NUMBER:
                file.seek(at)
                numbers.add(int.from_bytes(file.read(size), "big"))
    return numbers


def _block_track(file: BinaryIO, position: int) -> int | None:
    """The track number a (Simple)Block starts with, as a variable-length integer."""
    file.seek(position)
    head = file.read(8)
    if not head or head[0] == 0:
        return None
    length = 9 - head[0].bit_length()
    return int.from_bytes(head[:length], "big") & ((1 << 7 * length) - 1)


# --------------------------------------------------------------------------- readers


class VideoReader(ABC):
    """Decodes one video. ``frames()`` may be called again, from any ``start``, one iteration at a time.

    ``corrupt_frames``: indices of the last ``frames()`` run's frames that were decoded from damaged data
    and patched by the decoder (error concealment), where the decoder says so.
    """

    info: VideoInfo
    corrupt_frames: list[int]

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

    @property
    def stream_packets(self) -> int | None:
        """The stream's packet count, known if the scan read it to the end."""
        return self.packet_count if self.damage is None else None

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


def _scan_packets(source: str, options: Mapping[str, str], stream_index: int, declared: _Declared) -> _PacketScan:
    """Demux without decoding: cheap next to decoding up to ``start``."""
    pts: list[int] = []
    keyframes: list[tuple[int, int]] = []
    packet_count = 0
    damage = None
    with _av_open(source, options) as container:
        try:
            for packet in container.demux(container.streams[stream_index]):
                if declared.damage_reached(packet):
                    damage = declared.damage_reason
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
        except av.FFmpegError as exc:
            damage = _ffmpeg_error_text(exc)
    if damage is None and declared.damaged_at is not None:
        damage = declared.damage_reason  # damage after the last video packet
    return _PacketScan(sorted(pts), sorted(keyframes), packet_count, damage)


@dataclass
class _DemuxProgress:
    packets_read: int = 0
    damage: str | None = None
    reached_end: bool = False  # the end of the file, possibly inside a packet it cut short

    @property
    def stream_packets(self) -> int | None:
        return self.packets_read if self.reached_end else None


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
        self.corrupt_frames: list[int] = []  # FFmpeg flags each frame it patched from its neighbours

    def frames(self, start: int = 0) -> Iterator[DecodedFrame]:
        resuming = start > 0 or not self._positioned_at_start
        scan = self._packet_scan() if resuming or self._keyframes_only else None
        if scan is not None and resuming:
            if start >= len(scan.presentation_pts):
                if scan.damage is not None:
                    raise _decode_failure(self._source, self._declared, start, scan.damage)
                _check_complete(self._source, self._declared, len(scan.presentation_pts), scan.stream_packets)
                return
            self._container.seek(scan.seek_target(start), stream=self._stream)
            # FFmpeg may reset the decoder's reorder depth on a seek and then drop B-frames.
            self._stream.codec_context.reorder_depth = self._declared.reorder_depth
        self._positioned_at_start = False
        self.corrupt_frames = []
        progress = _DemuxProgress()
        next_index = start
        for position, frame in enumerate(self._decoded(progress, None if scan is None else scan.stream_packets)):
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
        stream_packets = scan.stream_packets if scan is not None else progress.stream_packets
        if progress.damage is not None:
            raise _decode_failure(self._source, self._declared, next_index, progress.damage, stream_packets)
        _check_complete(self._source, self._declared, next_index, stream_packets)

    def _decoded(self, progress: _DemuxProgress, scanned_packets: int | None) -> Iterator[av.VideoFrame]:
        """Decoded frames in presentation order, up to the end of the stream or the first damage.

        Where the stream breaks, the frames the decoder still holds are dropped, not flushed: frames
        lost in the break may belong before them. ``scanned_packets`` is the stream's packet count
        where a scan read it.
        """
        packets = self._container.demux(self._stream)
        while True:
            packet = None
            try:
                packet = next(packets, None)
                if packet is None:
                    progress.reached_end = True
                    return
                if self._declared.damage_reached(packet):
                    progress.damage = self._declared.damage_reason
                    return
                if packet.size:
                    progress.packets_read += 1
                else:  # the demuxer's end: an empty packet flushes the decoder, unless the file was cut
                    progress.reached_end = True
                    stream_packets = progress.packets_read if scanned_packets is None else scanned_packets
                    if self._declared.is_incomplete(stream_packets) or self._declared.damaged_at is not None:
                        return
                frames = packet.decode()
            except av.FFmpegError as exc:
                progress.damage = _ffmpeg_error_text(exc)
                progress.reached_end = packet is not None and self._ends_file(packet)
                return
            yield from frames

    def _ends_file(self, packet: av.Packet) -> bool:
        """Whether ``packet`` runs to the end of the file: a packet that fails there was cut short."""
        file_bytes = self._declared.file_bytes
        return packet.pos is not None and file_bytes is not None and packet.pos + packet.size >= file_bytes

    def _packet_scan(self) -> _PacketScan:
        if self._scan is None:
            self._scan = _scan_packets(self._source, self._options, self._stream.index, self._declared)
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

        self.corrupt_frames: list[int] = []  # decord does not say which frames it concealed
        self._source = source
        with _open_container(source, {}) as container:
            stream = _video_stream(container, source, {})
            self.info, self._declared = _probe(container, stream, source)
            scan = _scan_packets(source, {}, stream.index, self._declared)
        self._damage = scan.damage
        self._stream_packets = scan.stream_packets
        broken = scan.damage is not None or self._declared.is_incomplete(scan.stream_packets)
        self._frame_limit = scan.certain_frames(self._declared.reorder_depth) if broken else None
        self._errors = (decord.DECORDError, RuntimeError)
        self._decord, self._threads = decord, threads
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
                image = self._read(index)
            except self._errors as exc:
                damage = _ffmpeg_error_text(exc)
                raise _decode_failure(self._source, self._declared, next_index, damage, self._stream_packets) from exc
            yield DecodedFrame(index, float(self._pts[index]), np.ascontiguousarray(image))
            next_index = index + 1
        if self._frame_limit is not None:
            raise _decode_failure(self._source, self._declared, max(start, stop), self._damage, self._stream_packets)

    def _read(self, index: int) -> np.ndarray:
        """Frame ``index``; before a known break, re-opened on failure a few times.

        decord's packet thread reads ahead, and the error of a packet past the break surfaces at whichever
        intact frame is being received then (seen at random frames under load), leaving the reader unusable.
        A fresh reader decodes the intact frame.
        """
        retries = DECORD_REOPENS if self._frame_limit is not None else 0
        while True:
            try:
                return self._reader[index].asnumpy()
            except self._errors:
                if retries == 0:
                    raise
                retries -= 1
                self._reader = self._decord.VideoReader(self._source, num_threads=self._threads)

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


# --------------------------------------------------------------------------- live sources (issue #5)

#: URL schemes read as live streams (plus ``/dev/videoN`` capture devices).
LIVE_SCHEMES = ("rtsp://", "rtsps://", "udp://", "tcp://", "rtp://", "srt://", "http://", "https://")

_log = logging.getLogger("pipeline.live")


def is_live_source(source: str) -> bool:
    """Whether ``source`` names a live feed (a network URL or a ``/dev/videoN`` device) rather than a file."""
    return source.lower().startswith(LIVE_SCHEMES) or re.fullmatch(r"/dev/video\d+", source) is not None


@dataclass(frozen=True)
class ReconnectPolicy:
    """Exponential backoff between reconnect attempts: ``initial`` s, times ``factor``, at most ``max_delay`` s.

    ``max_attempts`` consecutive failed attempts (None: keep trying while the reader runs) end the
    stream with :class:`VideoDecodeError`; ``max_attempts=0`` never reconnects: the stream simply
    ends with its connection (a file read as a feed). A successful reconnect resets the count and the delay.
    """

    initial: float = 0.5
    factor: float = 2.0
    max_delay: float = 8.0
    max_attempts: int | None = None

    def delay(self, attempt: int) -> float:
        """The wait before attempt ``attempt`` (1-based)."""
        return min(self.max_delay, self.initial * self.factor ** max(0, attempt - 1))


@dataclass(frozen=True, eq=False)
class LiveFrame:
    """A decoded live frame; ``captured`` is ``time.monotonic()`` when it left the decoder (for latency)."""

    index: int
    pts: float
    image: np.ndarray
    captured: float
    connection: int  # 0 for the first connection, +1 per reconnect


def live_options(source: str, options: Mapping[str, str] | None = None) -> dict[str, str]:
    """Demuxer options a live URL needs by default; ``options`` override them.

    RTSP goes over TCP (UDP transport loses packets on busy networks); UDP sockets get a large
    FIFO and keep going when it overruns, so a slow reader drops packets instead of failing.
    """
    defaults: dict[str, str] = {}
    lower = source.lower()
    if lower.startswith(("rtsp://", "rtsps://")):
        defaults["rtsp_transport"] = "tcp"
    if lower.startswith("udp://"):
        defaults.update(fifo_size="1000000", overrun_nonfatal="1", buffer_size="4194304")
    return {**defaults, **dict(options or {})}


class LiveReader:
    """Reads a live feed through PyAV, reconnecting with backoff when the connection drops.

    * Each connection starts decoding at its first keyframe (a feed joined mid-GOP would otherwise
      give grey, error-concealed frames); packets before it are counted in ``skipped_before_keyframe``.
    * Frame indices count decoded frames from 0 and keep increasing across reconnects; ``pts`` is the
      stream's own timestamp in seconds, relative to the first frame, kept increasing across a
      reconnect (the new connection's timestamps are shifted to follow the last frame's).
    * ``timeout`` (seconds) bounds the open and every read (PyAV's interrupt callback, which works for
      every protocol); a URL that never answers raises :class:`VideoOpenError` after ``timeout``.
    * A connection that drops (read error, end of stream, no data for ``timeout``) is reopened after
      ``reconnect.delay(attempt)``; each change is reported to ``on_status`` (and logged on
      ``pipeline.live``) as a dict: ``{"source", "event", "reason", "attempt", "delay", "frame_index"}``
      with ``event`` one of ``connected``, ``disconnected``, ``reconnected``, ``gave_up``, ``stopped``.
    * :meth:`stop` (any thread) ends :meth:`frames` within ``timeout``.

    FFmpeg's log stays off (see the module docstring): causes come from the exceptions PyAV raises.
    """

    def __init__(
        self,
        source: str,
        *,
        options: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        reconnect: ReconnectPolicy | None = None,
        on_status: "Callable[[dict], None] | None" = None,
        threads: int = 1,
        format: str | None = None,
    ) -> None:
        self.source = source
        self.options = live_options(source, options)
        self.timeout = timeout
        self.reconnect = reconnect or ReconnectPolicy()
        self.on_status = on_status
        self.threads = threads
        self.format = format or ("v4l2" if source.startswith("/dev/video") else None)
        self.reconnects = 0
        self.decode_errors = 0
        self.skipped_before_keyframe = 0  # packets of each connection before its first keyframe, not decoded
        self._stop = threading.Event()
        self._container: av.container.InputContainer | None = None
        self._stream: av.VideoStream | None = None
        self._connection = 0
        self._open()  # the first open fails fast: VideoOpenError, no retry
        self.info, _ = _probe(self._container, self._stream, source)
        self._frames = self._decode()
        self._first: LiveFrame | None = None
        if self.info.width <= 0 or self.info.height <= 0:
            # Joined mid-stream, the probe may not have seen a parameter set: take the size from a frame.
            try:
                self._first = next(self._frames)
            except (StopIteration, PipelineError) as exc:
                self._close_container()
                raise VideoOpenError(source, "cannot open live source: no frame to take its size from") from exc
            height, width = self._first.image.shape[:2]
            self.info = replace(self.info, width=width, height=height)
        self._status("connected", None)

    # -- connection -----------------------------------------------------------------------------------
    def _open(self) -> None:
        try:
            container = av.open(
                self.source, options=dict(self.options), format=self.format, metadata_errors="replace",
                timeout=(self.timeout, self.timeout),
            )
        except av.FFmpegError as exc:
            reason = exc.strerror or str(exc)
            if isinstance(exc, av.ExitError):  # the interrupt callback fired: nothing came in time
                reason = f"no answer within the {self.timeout:g} s timeout ({reason})"
            raise VideoOpenError(self.source, f"cannot open live source: {reason}") from exc
        try:
            stream = _video_stream(container, self.source, self.options)
        except Exception:
            container.close()
            raise
        stream.codec_context.thread_type = "AUTO"
        stream.codec_context.thread_count = self.threads
        self._container, self._stream = container, stream

    def _close_container(self) -> None:
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # noqa: BLE001 - closing a broken connection may fail; it is gone either way
                pass
            self._container = None

    def _status(self, event: str, reason: str | None, **extra: object) -> None:
        status = {"source": self.source, "event": event, "reason": reason, **extra}
        level = logging.INFO if event in ("connected", "reconnected", "stopped", "ended") else logging.WARNING
        _log.log(level, "%s: %s%s", self.source, event, f" ({reason})" if reason else "")
        if self.on_status is not None:
            self.on_status(status)

    def stop(self) -> None:
        """End :meth:`frames` (thread-safe); a blocked read returns within ``timeout``."""
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def _reconnect(self, reason: str, frame_index: int) -> bool:
        """Reopen after backoff; False when stopped. Raises VideoDecodeError once attempts run out."""
        self._close_container()
        if self.reconnect.max_attempts == 0:
            self._status("ended", reason, frame_index=frame_index)
            return False
        self._status("disconnected", reason, frame_index=frame_index)
        attempt = 0
        while not self._stop.is_set():
            attempt += 1
            if self.reconnect.max_attempts is not None and attempt > self.reconnect.max_attempts:
                self._status("gave_up", reason, attempt=attempt - 1, frame_index=frame_index)
                raise VideoDecodeError(
                    self.source, f"connection lost ({reason}); {attempt - 1} reconnect attempts failed", frame_index
                )
            delay = self.reconnect.delay(attempt)
            if self._stop.wait(delay):
                break
            try:
                self._open()
            except (VideoOpenError, UnsupportedCodecError) as exc:
                reason = exc.reason if hasattr(exc, "reason") else str(exc)
                self._status("reconnect_failed", reason, attempt=attempt, delay=delay, frame_index=frame_index)
                continue
            self.reconnects += 1
            self._connection += 1
            self._status("reconnected", None, attempt=attempt, delay=delay, frame_index=frame_index)
            return True
        return False

    # -- frames ---------------------------------------------------------------------------------------
    def frames(self) -> Iterator[LiveFrame]:
        """Yield frames until :meth:`stop` (or until reconnecting gives up); one iteration per reader."""
        if self._first is not None:
            first, self._first = self._first, None
            yield first
        yield from self._frames

    def _decode(self) -> Iterator[LiveFrame]:
        index = 0
        last_pts: float | None = None
        frame_step = 1.0 / self.info.fps if self.info.fps > 0 else 1.0 / 30
        try:
            while not self._stop.is_set():
                offset: float | None = None  # maps this connection's timestamps onto the stream's clock
                reason = "end of stream"
                to_rgb = VideoReformatter()
                keyframe_seen = False
                try:
                    for packet in self._container.demux(self._stream):
                        if self._stop.is_set():
                            break
                        if not keyframe_seen:  # joined mid-GOP: frames before a keyframe would be concealment grey
                            if not packet.is_keyframe:
                                self.skipped_before_keyframe += 1
                                continue
                            keyframe_seen = True
                        try:
                            decoded = packet.decode()
                        except av.FFmpegError:  # a damaged packet (or one before the first keyframe): skip it
                            self.decode_errors += 1
                            continue
                        for frame in decoded:
                            seconds = frame.time if frame.time is not None else time.monotonic()
                            if offset is None:
                                offset = (0.0 if last_pts is None else last_pts + frame_step) - seconds
                            pts = seconds + offset
                            if last_pts is not None and pts <= last_pts:  # a wrap or jump back: keep the order
                                offset += last_pts + frame_step - pts
                                pts = last_pts + frame_step
                            image = to_rgb.reformat(frame, format="rgb24").to_ndarray()
                            yield LiveFrame(index, round(pts, 6), np.ascontiguousarray(image), time.monotonic(),
                                            self._connection)
                            index += 1
                            last_pts = pts
                except av.FFmpegError as exc:
                    reason = exc.strerror or str(exc)
                    if isinstance(exc, av.ExitError):
                        reason = f"no data for {self.timeout:g} s"
                if self._stop.is_set() or not self._reconnect(reason, index):
                    break
        finally:
            self._close_container()
            if self._stop.is_set():
                self._status("stopped", None, frame_index=index)

    def close(self) -> None:
        self.stop()
        self._close_container()

    def __enter__(self) -> LiveReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

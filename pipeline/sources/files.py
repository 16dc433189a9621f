"""File readers: PyAV (default) and decord behind one interface, with exact indices and clear errors.

* ``PyAVReader`` (default): threaded FFmpeg decode, keyframe seeking for ``start``, ``keyframes_only``.
* ``DecordReader``: decord's random-access reader, for comparison and for callers that already use it.

A file cut short or damaged yields its intact frames, then :class:`VideoDecodeError` naming the first
frame not delivered. Frames are never shifted: where a stream breaks, the frames a lost B-frame could
precede are withheld.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal, Mapping

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from operators.errors import VideoDecodeError
from operators.extras import require
from pipeline.sources.discovery import is_frame_folder
from pipeline.sources.frame_folders import DEFAULT_FOLDER_FPS, FrameFolderReader
from pipeline.sources.frames import DecodedFrame, VideoReader
from pipeline.sources.probe import (
    _av_open,
    _check_complete,
    _check_local_file,
    _Declared,
    _decode_failure,
    _ffmpeg_error_text,
    _open_container,
    _probe,
    _video_stream,
)

# Fresh decord readers tried on one intact frame before a known break (see DecordReader._read).
DECORD_REOPENS = 8

Backend = Literal["pyav", "decord"]


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
        decord = require("decord")  # an extra: decord has no wheels for some platforms where PyAV works

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
    folder_fps: float = DEFAULT_FOLDER_FPS,
) -> VideoReader:
    """Open a local video file or frame folder, failing with a :class:`~operators.errors.PipelineError` that
    names why. A frame folder's frames are read whatever the ``backend``, all of them keyframes, ``folder_fps``
    apart."""
    path = Path(path)
    if is_frame_folder(path):
        return FrameFolderReader(path, folder_fps)
    _check_local_file(path)
    if backend == "pyav":
        return PyAVReader(str(path), threads=threads, keyframes_only=keyframes_only)
    if backend == "decord":
        return DecordReader(str(path), threads=threads, keyframes_only=keyframes_only)
    raise ValueError(f"unknown backend {backend!r}: use 'pyav' or 'decord'")

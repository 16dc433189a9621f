"""Probing and error mapping shared by every backend: one open, one probe, one error for one fault.

A given broken file fails with the same error class whichever backend decodes it. Error paths that
need FFmpeg's words (an open failure's cause, an unknown codec's FOURCC) ask a subprocess, where no
decoder thread can deadlock on PyAV's log callback.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import av

from operators.errors import UnsupportedCodecError, VideoDecodeError, VideoOpenError
from pipeline.sources.frames import VideoInfo
from pipeline.sources.matroska import _matroska_check

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

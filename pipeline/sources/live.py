"""Live readers (issue #5): network URLs and capture devices, read with timeouts and reconnects.

:class:`LiveReader` reads ``rtsp://`` (TCP transport by default), ``udp://``, ``tcp://``,
``http(s)://`` and ``/dev/videoN`` with an open/read timeout, counts frames as they are decoded (no
packet scan), takes timestamps from the stream and reconnects with bounded exponential backoff
(:class:`ReconnectPolicy`) when the connection drops, reporting each change.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Callable, Iterator, Mapping

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from operators.backoff import Backoff
from operators.errors import PipelineError, UnsupportedCodecError, VideoDecodeError, VideoOpenError
from pipeline.sources.frames import DecodedFrame, VideoReader
from pipeline.sources.probe import _probe, _video_stream

#: URL schemes read as live streams (plus ``/dev/videoN`` capture devices).
LIVE_SCHEMES = ("rtsp://", "rtsps://", "udp://", "tcp://", "rtp://", "srt://", "http://", "https://")

_log = logging.getLogger("pipeline.live")


class SourceEvent(StrEnum):
    """What a live reader reports to ``on_status`` as its feed changes (a str: JSON and logs show the name)."""

    CONNECTED = "connected"  # the first open succeeded
    DISCONNECTED = "disconnected"  # the connection dropped; reconnecting with backoff
    RECONNECT_FAILED = "reconnect_failed"  # one reconnect attempt failed; another follows
    RECONNECTED = "reconnected"  # frames flow again, indices and pts continuing
    GAVE_UP = "gave_up"  # reconnect attempts ran out: the feed ends with an error
    ENDED = "ended"  # a feed read without reconnects (a file) reached its end
    STOPPED = "stopped"  # stop() ended it

    @classmethod
    def normal(cls) -> frozenset["SourceEvent"]:
        """Events logged as information; the others are warnings."""
        return frozenset((cls.CONNECTED, cls.RECONNECTED, cls.STOPPED, cls.ENDED))


def is_live_source(source: str) -> bool:
    """Whether ``source`` names a live feed (a network URL or a ``/dev/videoN`` device) rather than a file."""
    return source.lower().startswith(LIVE_SCHEMES) or re.fullmatch(r"/dev/video\d+", source) is not None


@dataclass(frozen=True)
class ReconnectPolicy(Backoff):
    """The backoff between a feed's reconnect attempts.

    ``max_attempts`` consecutive failed attempts (None: keep trying while the reader runs) end the
    stream with :class:`VideoDecodeError`; ``max_attempts=0`` never reconnects: the stream simply
    ends with its connection (a file read as a feed). A successful reconnect resets the count and the delay.
    """

    initial: float = 0.5
    max_delay: float = 8.0
    max_attempts: int | None = None


@dataclass(frozen=True, eq=False)
class LiveFrame(DecodedFrame):
    """A decoded live frame; ``captured`` is ``time.monotonic()`` when it left the decoder (for latency)."""

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


class LiveReader(VideoReader):
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
      with ``event`` a :class:`SourceEvent`.
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
        self.corrupt_frames: list[int] = []  # damaged packets are skipped (decode_errors), never concealed
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
        self._status(SourceEvent.CONNECTED, None)

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

    def _status(self, event: SourceEvent, reason: str | None, **extra: object) -> None:
        status = {"source": self.source, "event": event, "reason": reason, **extra}
        level = logging.INFO if event in SourceEvent.normal() else logging.WARNING
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
            self._status(SourceEvent.ENDED, reason, frame_index=frame_index)
            return False
        self._status(SourceEvent.DISCONNECTED, reason, frame_index=frame_index)
        attempt = 0
        while not self._stop.is_set():
            attempt += 1
            if self.reconnect.max_attempts is not None and attempt > self.reconnect.max_attempts:
                self._status(SourceEvent.GAVE_UP, reason, attempt=attempt - 1, frame_index=frame_index)
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
                self._status(SourceEvent.RECONNECT_FAILED, reason, attempt=attempt, delay=delay, frame_index=frame_index)
                continue
            self.reconnects += 1
            self._connection += 1
            self._status(SourceEvent.RECONNECTED, None, attempt=attempt, delay=delay, frame_index=frame_index)
            return True
        return False

    # -- frames ---------------------------------------------------------------------------------------
    def frames(self, start: int = 0) -> Iterator[LiveFrame]:
        """Yield frames until :meth:`stop` (or until reconnecting gives up); one iteration per reader. A feed
        is read from where it is now: ``start`` must be 0."""
        if start:
            raise ValueError(f"{self.source}: a live feed cannot start at frame {start}")
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
                self._status(SourceEvent.STOPPED, None, frame_index=index)

    def close(self) -> None:
        self.stop()
        self._close_container()

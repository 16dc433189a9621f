"""H.264 MP4 writing through PyAV (``cv2.VideoWriter`` has no H.264 encoder in the wheels)."""

from __future__ import annotations

import itertools
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import av
import numpy as np

from operators.output_files import open_output


class H264Writer:
    """Writes RGB ``uint8`` frames to an H.264 MP4 (never through a link); width and height are rounded down to even.

    ``first_frame``: the index of the first frame written, its timestamp in frames. ``joinable``: no
    B-frames, so each file's decode order ends before the next one's begins, and files written with the
    same settings for consecutive frame ranges join into one video (:func:`join_mp4`).
    """

    def __init__(
        self,
        path: str | Path,
        fps: float,
        width: int,
        height: int,
        crf: int = 23,
        gop: int | None = None,
        first_frame: int = 0,
        joinable: bool = False,
    ) -> None:
        self.path = Path(path)
        self.width, self.height = width - width % 2, height - height % 2
        self.first_frame = first_frame
        self._file = open_output(self.path)  # PyAV would open a name through a link: it gets the opened file
        try:
            self._container = av.open(self._file, mode="w", format="mp4")
        except BaseException:
            self._file.close()
            raise
        rate = Fraction(fps).limit_denominator(1001)
        self._stream = self._container.add_stream("libx264", rate=rate)
        self._stream.width, self._stream.height = self.width, self.height
        self._stream.pix_fmt = "yuv420p"
        self._stream.options = {"crf": str(crf), "preset": "veryfast", **({"g": str(gop)} if gop else {}),
                                **({"bf": "0"} if joinable else {})}
        self.frames_written = 0

    def write(self, rgb: np.ndarray) -> None:
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[: self.height, : self.width]), format="rgb24")
        frame.pts = self.first_frame + self.frames_written
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames_written += 1

    def close(self) -> None:
        """Finish the file; one without a frame is removed (it has no header: nothing could read it)."""
        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
        finally:
            empty = self._file.tell() == 0
            self._file.close()
        if empty:
            self.path.unlink()

    def __enter__(self) -> "H264Writer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def join_mp4(parts: Sequence[str | Path], path: str | Path, skip: Sequence[int] = ()) -> int:
    """Copy the packets of ``parts`` (:class:`H264Writer` files of consecutive frame ranges, same settings) into
    one MP4 at ``path``, without re-encoding; returns the frames joined. Parts without frames are left out.

    ``skip``: per part, the frames at its start to leave out (the first frame kept must be a keyframe, as
    the first of a joined part is); missing entries are 0.
    """
    inputs = [av.open(str(part)) for part in parts]
    try:
        sources = [(i, n) for i, n in itertools.zip_longest(inputs, skip[:len(inputs)], fillvalue=0)
                   if i.streams.video and i.streams.video[0].frames > n]
        frames = 0
        with open_output(Path(path)) as file, av.open(file, mode="w", format="mp4") as output:
            if not sources:
                return 0
            stream = output.add_stream_from_template(sources[0][0].streams.video[0])
            for source, skipped in sources:
                packets = (p for p in source.demux(source.streams.video[0]) if p.dts is not None)  # None: the end
                for n, packet in enumerate(packets):
                    if n < skipped:
                        continue
                    if n == skipped and not packet.is_keyframe:
                        raise ValueError(f"{source.name}: frame {n} is not a keyframe; the part cannot start there")
                    packet.stream = stream
                    output.mux(packet)
                    frames += 1
        return frames
    finally:
        for source in inputs:
            source.close()

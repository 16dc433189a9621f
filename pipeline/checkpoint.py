"""What a stream leaves in its output folder to be resumed or skipped: ``checkpoint.npz`` and ``done.json``.

Both are read back from a folder others can write to (a shared volume on a cluster), so both hold data
only and are checked before use: nothing read here can run code, and a file that is unreadable, of
other settings or of the wrong shape is ignored with a warning (the video runs again, from frame 0).

``checkpoint.npz`` is one NumPy archive, loaded with ``allow_pickle=False``: member ``state`` is a
UTF-8 JSON document (``format``, ``version``, the run's ``fingerprint``, the stream's state) in which
``{"$array": NAME}`` stands for the archive's array ``NAME``. The fingerprint is compared before any
array is read; the state is then rebuilt by each piece's ``from_state``, which checks every type,
dtype and shape (:mod:`operators.state`).
"""

from __future__ import annotations

import json
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from operators.output_files import atomic_output, write_output
from operators.segmenters import segmenter_class
from operators.state import StateError, StateReader, check_array
from operators.stream import StreamProcessor

DONE_FILE = "done.json"
#: Frames between a stream's checkpoints (0: none): a killed stream redoes at most this many.
CHECKPOINT_EVERY = 300
CHECKPOINT_FILE = "checkpoint.npz"
#: Earlier versions' checkpoints: pickles, which can run code when loaded. Never read; removed when the video is done.
LEGACY_CHECKPOINT_FILE = "checkpoint.pkl"
CHECKPOINT_FORMAT = "xsam-pipeline/stream-checkpoint"
CHECKPOINT_VERSION = 1
_ARRAY = "$array"
#: What reading an archive, its JSON or its arrays raises on a damaged or crafted file: pickled members are
#: refused with a ValueError (``allow_pickle=False``); an array header claiming more than memory holds makes
#: NumPy's allocation fail before anything is read (MemoryError).
_UNREADABLE = (OSError, ValueError, KeyError, EOFError, RecursionError, MemoryError, zipfile.BadZipFile, zlib.error)


def write_done(stream_dir: Path, fingerprint: dict[str, Any], report: dict[str, Any]) -> None:
    """Mark the stream finished with these settings; its checkpoints are no longer needed."""
    document = json.dumps({"fingerprint": fingerprint, "report": report}, indent=1).encode()
    write_output(stream_dir / DONE_FILE, document)
    for name in (CHECKPOINT_FILE, LEGACY_CHECKPOINT_FILE):
        (stream_dir / name).unlink(missing_ok=True)


def read_done(stream_dir: Path, fingerprint: dict[str, Any], warn: Callable[[str], None]) -> dict | None:
    """The report of the stream's finished run if it ran with the same settings, else None; ``warn`` is told
    why a ``done.json`` that is there cannot be used (the video is then processed again)."""
    path = stream_dir / DONE_FILE
    try:
        done = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecursionError) as exc:
        warn(f"{path}: unreadable ({_reason(exc)}); the video is processed again")
        return None
    if not isinstance(done, dict) or not isinstance(done.get("fingerprint"), dict):
        warn(f"{path}: not a finished video's record (a JSON object with its settings' fingerprint); "
             "the video is processed again")
        return None
    if done["fingerprint"] != fingerprint:
        return None  # finished with other settings: this run's settings need another run
    if not isinstance(done.get("report"), dict):
        warn(f"{path}: has no report of the finished run; the video is processed again")
        return None
    return done["report"]


@dataclass
class Resume:
    """Where a checkpoint lets a stream start: its processor, the frame before and the next frame's index."""

    processor: StreamProcessor
    previous_image: np.ndarray

    @property
    def next_index(self) -> int:
        return self.processor.next_index


class StreamCheckpoints:
    """One stream's ``checkpoint.npz``: saved at frame boundaries, read back (checked) to resume.

    ``memory_type``: the segmenter's :class:`~operators.segmenters.base.PromptMemory` class, which rebuilds
    saved memories; a segmenter without one is not checkpointed (``warn`` says so once).
    """

    def __init__(self, stream_dir: Path, fingerprint: dict[str, Any], memory_type: type | None,
                 warn: Callable[[str], None]) -> None:
        self.path = stream_dir / CHECKPOINT_FILE
        self.fingerprint, self.memory_type, self.warn = fingerprint, memory_type, warn
        self.restorable = memory_type is not None and hasattr(memory_type, "from_state")
        self.saving = True  # until a memory turns out not to be savable

    @classmethod
    def of_segmenter(cls, stream_dir: Path, fingerprint: dict[str, Any], segmenter: str,
                     warn: Callable[[str], None]) -> "StreamCheckpoints":
        return cls(stream_dir, fingerprint, getattr(segmenter_class(segmenter), "memory_type", None), warn)

    def save(self, processor: StreamProcessor, previous_image: np.ndarray) -> None:
        """Save ``processor`` at a frame boundary (every record before its ``next_index`` is written)."""
        if not self.saving:
            return
        lacking = [type(m).__name__ for m in processor.memories if not hasattr(m, "to_state")]
        if lacking or not self.restorable:
            self.saving = False
            what = (f"prompt memory {lacking[0]} has no to_state" if lacking else
                    "the segmenter declares no memory_type with a from_state")
            self.warn(f"{what} (see PromptMemory): this video is not checkpointed, a re-run starts it again")
            return
        arrays: dict[str, np.ndarray] = {}
        document = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "fingerprint": self.fingerprint,
                    "previous_image": previous_image, "processor": processor.to_state()}
        text = json.dumps(_pack(document, arrays)).encode()
        with atomic_output(self.path) as file:
            np.savez_compressed(file, state=np.frombuffer(text, np.uint8), **arrays)

    def load(self, frame_size: tuple[int, int], stream_id: str, source: str, **settings: Any) -> Resume | None:
        """The saved stream, for ``frame_size`` (H, W) frames; ``settings``: :meth:`StreamProcessor.from_state`'s.

        None, with a warning naming the file and the reason, if there is none that fits.
        """
        legacy = self.path.with_name(LEGACY_CHECKPOINT_FILE)
        if legacy.exists():
            self.warn(f"{legacy}: not read (checkpoints of earlier versions were pickles, which can run code)")
        if not self.restorable or not self.path.exists():
            return None
        try:
            state = self._read()
            if state is None:
                self.warn(f"{self.path}: written with other settings; the video starts from frame 0")
                return None
            previous = check_array(state.value("previous_image"), np.uint8, (*frame_size, 3), "previous_image")
            processor = StreamProcessor.from_state(state.value("processor"), self.memory_type, frame_size,
                                                   stream_id, source, **settings)
        except (*_UNREADABLE, StateError) as exc:
            self.warn(f"{self.path}: not resumed from it ({_reason(exc)}); the video starts from frame 0")
            return None
        except Exception as exc:  # noqa: BLE001 - a segmenter's own from_state, given untrusted data, may raise any
            self.warn(f"{self.path}: its prompt memory was refused ({_reason(exc)}); the video starts from frame 0")
            return None
        return Resume(processor, previous)

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)

    def _read(self) -> StateReader | None:
        """The checkpoint's state with its arrays in place, or None if it was written with other settings."""
        with np.load(self.path, allow_pickle=False) as archive:
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise ValueError("not a NumPy archive (.npz)")
            text = check_array(archive["state"], np.uint8, (None,), "state").tobytes().decode("utf-8")
            header = StateReader(json.loads(text), "checkpoint")
            if header.value("format") != CHECKPOINT_FORMAT or header.value("version") != CHECKPOINT_VERSION:
                raise StateError(f"format {header.value('format')!r:.60} version {header.value('version')!r:.20}, "
                                 f"expected {CHECKPOINT_FORMAT!r} version {CHECKPOINT_VERSION}")
            if header.value("fingerprint") != self.fingerprint:
                return None
            return StateReader(_unpack(header.state, archive), "checkpoint")


def _pack(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    """``value`` as JSON, each array replaced by a reference to its entry in ``arrays``."""
    if isinstance(value, np.generic):  # a NumPy scalar: its Python number
        return value.item()
    if isinstance(value, np.ndarray):
        name = f"a{len(arrays)}"
        arrays[name] = value
        return {_ARRAY: name}
    if isinstance(value, dict):
        return {key: _pack(item, arrays) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_pack(item, arrays) for item in value]
    return value


def _unpack(value: Any, archive: np.lib.npyio.NpzFile) -> Any:
    """Inverse of :func:`_pack`: references replaced by the archive's arrays (pickled ones refused)."""
    if isinstance(value, dict):
        if set(value) == {_ARRAY}:
            name = value[_ARRAY]
            if not isinstance(name, str) or name not in archive.files:
                raise StateError(f"the archive has no array {name!r:.60}")
            return archive[name]
        return {key: _unpack(item, archive) for key, item in value.items()}
    if isinstance(value, list):
        return [_unpack(item, archive) for item in value]
    return value


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, ValueError) and "allow_pickle" in text:  # NumPy's refusal, worded for the one who planted it
        return "it holds pickled data, which is never loaded: unpickling can run code"
    return text if len(text) <= 200 else text[:200] + "..."

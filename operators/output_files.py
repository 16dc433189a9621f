"""Writing inside an output folder that others can write to as well.

Output folders are shared (NFS/EFS on a cluster), so a file or folder the pipeline is about to write may be
a symbolic link someone planted there, pointing at a file elsewhere. Everything the pipeline writes under an
output folder goes through here, so no write ever follows a link out of the folder: a folder that is a link
is refused, a file written in place (appended to, or encoded as it goes) is opened with ``O_NOFOLLOW`` and
refused where it is a link, and a whole document is written to a new file that is then renamed over the old
one (a rename replaces a link, never writes through it; a crash mid-write leaves the old file whole). Each
refusal is an :class:`~operators.errors.OutputError` naming the path.
"""

from __future__ import annotations

import errno
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, BinaryIO, Iterator

from operators.errors import OutputError

LINK_REASON = "is a symbolic link; refusing to write through it (it could lead out of the output folder)"

#: ``open_output``'s modes: the file's own flags, each with ``O_NOFOLLOW``.
_FLAGS = {
    "wb": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
    "a+b": os.O_RDWR | os.O_CREAT | os.O_APPEND,
}


@contextmanager
def output_errors(path: str | Path) -> Iterator[None]:
    """Turn an ``OSError`` raised while writing ``path`` into an :class:`OutputError` naming it and the OS reason."""
    try:
        yield
    except OSError as exc:
        raise OutputError(str(path), f"cannot write: {exc.strerror or exc}") from exc


def check_not_linked(path: Path) -> None:
    """Refuse ``path`` where it is a symbolic link (a missing path is fine: it will be created)."""
    if path.is_symlink():
        raise OutputError(str(path), LINK_REASON)


def open_output(path: Path, mode: str = "wb") -> BinaryIO:
    """Open ``path`` for writing (``"wb"``) or reading and appending (``"a+b"``), never through a link."""
    try:
        descriptor = os.open(path, _FLAGS[mode] | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OutputError(str(path), LINK_REASON) from None
        raise OutputError(str(path), f"cannot write: {exc.strerror or exc}") from exc
    return os.fdopen(descriptor, mode)


@contextmanager
def atomic_output(path: Path, mode: str = "wb") -> Iterator[IO]:
    """A file (``"wb"``, or ``"w"`` for UTF-8 text) that becomes ``path`` once the block ends without an error."""
    with output_errors(path):
        handle, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
        os.fchmod(handle, 0o644)  # as open() would make it: others on the cluster read results
    try:
        with output_errors(path):
            with os.fdopen(handle, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as file:
                yield file
            os.replace(partial, path)
    finally:
        if os.path.lexists(partial):
            os.unlink(partial)


def write_output(path: Path, data: bytes | str) -> None:
    """``data`` (text as UTF-8) as the new file ``path`` (:func:`atomic_output`)."""
    with atomic_output(path) as file:
        file.write(data.encode() if isinstance(data, str) else data)


def prepare_out_dir(out_dir: str | Path) -> Path:
    """Create ``out_dir`` and prove it writable now, so a bad path fails before any frame is decoded.

    ``out_dir`` itself may be a link: the operator chose it."""
    path = Path(out_dir)
    with output_errors(path):
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    return path


def stream_dir(out_dir: Path, stream_id: str, *subdirs: str) -> Path:
    """Create and return ``out_dir/<stream_id>/<subdirs...>``, none of them a link.

    The stream id must be a single plain path component, so one stream can never
    write into another's folder or outside ``out_dir``.
    """
    if stream_id in ("", ".", "..") or any(c in stream_id for c in "/\\\0"):
        raise OutputError(str(out_dir), f"stream id {stream_id!r} is not usable as a folder name")
    with output_errors(out_dir):
        out_dir.mkdir(parents=True, exist_ok=True)  # it may be a link: the operator chose it
    path = out_dir
    for name in (stream_id, *subdirs):
        path = path / name
        check_not_linked(path)
        with output_errors(path):
            path.mkdir(exist_ok=True)
        check_not_linked(path)  # a link planted between the check and mkdir
    return path

"""The Matroska damage check: walk the element headers to find what FFmpeg would skip silently.

FFmpeg's Matroska demuxer skips a damaged cluster and only logs it (and its log stays off in this
process, see :mod:`pipeline.sources`), so the damage is found here from the file's structure.
"""

from __future__ import annotations

import os
from typing import BinaryIO, Iterator

# Matroska element IDs (with their length-marker bits, as written in the file).
_EBML_HEADER = 0x1A45DFA3
_SEGMENT = 0x18538067
_CLUSTER = 0x1F43B675
_TRACKS, _TRACK_ENTRY, _TRACK_NUMBER = 0x1654AE6B, 0xAE, 0xD7
_SIMPLE_BLOCK, _BLOCK_GROUP, _BLOCK = 0xA3, 0xA0, 0xA1
#: Timestamp, Position, PrevSize, SimpleBlock, BlockGroup, EncryptedBlock, SilentTracks, Void, CRC-32.
_CLUSTER_CHILDREN = {0xE7, 0xA7, 0xAB, _SIMPLE_BLOCK, _BLOCK_GROUP, 0xAF, 0x5854, 0xEC, 0xBF}


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

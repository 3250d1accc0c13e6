"""A packed binary form for a run of consecutive log entries, shared by the WAL and the wire.

Encoding each entry as its own CBOR array costs about a microsecond per entry
each way, and an entry is encoded for every peer and for the disk. Packed,
the per-entry work is a few C-level passes over columns:

    u64 first_index | u32 count | u32 runs
    runs  x (u64 term | u32 length of the run)    terms never decrease, so runs are few
    count x u8 kind
    count x u32 data length
    the data of every entry, concatenated

All integers little-endian.
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from itertools import accumulate, chain, groupby, pairwise, repeat
from operator import itemgetter
from typing import Any

from raft_trio.core.messages import Entry

_HEADER = struct.Struct("<QII")
_RUN = struct.Struct("<QI")
_BIG_ENDIAN = sys.byteorder == "big"
_MAX_U32 = 0xFFFFFFFF

_term_of = itemgetter(1)
_kind_of = itemgetter(2)
_data_of = itemgetter(3)
# tuple.__new__ builds the NamedTuple without its Python-level __new__.
_new_entry: Callable[[Iterable[Any]], Entry] = partial(tuple.__new__, Entry)


class PackError(ValueError):
    """Bytes that are not a packed entry batch."""


def _u32_array(values: Iterable[int]) -> bytes:
    arr = array("I", values)
    if _BIG_ENDIAN:  # pragma: no cover - every machine we run on is little-endian
        arr.byteswap()
    return arr.tobytes()


def pack_entries(entries: Sequence[Entry]) -> bytes:
    """Pack consecutive entries (ascending, contiguous indexes)."""
    count = len(entries)
    if count == 0:
        return _HEADER.pack(0, 0, 0)
    first = entries[0].index
    if entries[-1].index != first + count - 1:
        raise ValueError(f"entries {first}..{entries[-1].index} are not {count} consecutive ones")
    runs = [(term, sum(1 for _ in group)) for term, group in groupby(map(_term_of, entries))]
    datas = list(map(_data_of, entries))
    parts = [
        _HEADER.pack(first, count, len(runs)),
        b"".join(_RUN.pack(term, length) for term, length in runs),
        bytes(map(_kind_of, entries)),
        _u32_array(map(len, datas)),
    ]
    parts.extend(datas)
    return b"".join(parts)


def unpack_entries(blob: bytes) -> list[Entry]:
    """Inverse of pack_entries; raises PackError on anything malformed."""
    size = len(blob)
    if size < _HEADER.size:
        raise PackError(f"packed entries too short: {size} bytes")
    first, count, nruns = _HEADER.unpack_from(blob, 0)
    if count == 0:
        if size != _HEADER.size or nruns:
            raise PackError("empty entry batch with trailing bytes")
        return []
    offset = _HEADER.size
    runs_end = offset + nruns * _RUN.size
    kinds_end = runs_end + count
    lengths_end = kinds_end + 4 * count
    if first < 1 or nruns < 1 or nruns > count or lengths_end > size:
        raise PackError(f"bad packed entries header: first {first}, {count} entries, {nruns} runs")
    runs = list(_RUN.iter_unpack(blob[offset:runs_end]))
    if sum(length for _, length in runs) != count:
        raise PackError("term runs do not add up to the entry count")
    terms = chain.from_iterable(map(repeat, map(itemgetter(0), runs), map(itemgetter(1), runs)))
    kinds = blob[runs_end:kinds_end]
    lengths = array("I")
    lengths.frombytes(blob[kinds_end:lengths_end])
    if _BIG_ENDIAN:  # pragma: no cover
        lengths.byteswap()
    offsets = list(accumulate(lengths, initial=lengths_end))
    if offsets[-1] != size:
        raise PackError(f"entry data lengths cover {offsets[-1]} bytes, the batch has {size}")
    view = memoryview(blob)
    datas = [bytes(view[a:b]) for a, b in pairwise(offsets)]
    indexes = range(first, first + count)
    return list(map(_new_entry, zip(indexes, terms, kinds, datas, strict=True)))


def packed_range(data: bytes, offset: int = 0) -> tuple[int, int]:
    """(first index, count) of the packed batch at `offset` in `data`, from its
    header; the caller has checked that the header is there."""
    first, count, _ = _HEADER.unpack_from(data, offset)
    return first, count


def packed_span(blob: bytes) -> tuple[int, int, int]:
    """(first index, count, last entry's term) of a packed batch, from its header."""
    size = len(blob)
    if size < _HEADER.size:
        raise PackError(f"packed entries too short: {size} bytes")
    first, count, nruns = _HEADER.unpack_from(blob, 0)
    if count < 1 or nruns < 1 or size < _HEADER.size + nruns * _RUN.size:
        raise PackError(f"not a non-empty packed batch: {count} entries, {nruns} runs")
    last_term, _ = _RUN.unpack_from(blob, _HEADER.size + (nruns - 1) * _RUN.size)
    return first, count, last_term


class PackCache:
    """Recently packed runs of entries, so a run is packed once for every peer
    that gets it, and a follower writes a batch to its WAL in the very bytes
    it arrived in.

    A run is known by its first index and its last entry's index and term:
    two runs that agree on those hold the same entries (the Log Matching
    property), so a run packed from one log serves any log holding that entry.
    Bounded by count and by bytes: a catching-up follower gets batches of up
    to 8 MiB.
    """

    def __init__(self, capacity: int = 64, max_bytes: int = 16 * 1024 * 1024) -> None:
        self._capacity = capacity
        self._max_bytes = max_bytes
        self._bytes = 0
        # Oldest first, for eviction.
        self._runs: dict[tuple[int, int, int], bytes] = {}
        # first index -> [(last index, last term)] of the runs starting there.
        self._by_first: dict[int, list[tuple[int, int]]] = {}

    def __len__(self) -> int:
        return len(self._runs)

    def remember(self, entries: Sequence[Entry], packed: bytes) -> None:
        """Note that `packed` is pack_entries(entries) (entries non-empty)."""
        last = entries[-1]
        key = (entries[0].index, last.index, last.term)
        if key in self._runs or len(packed) > self._max_bytes:
            return
        while self._runs and (len(self._runs) >= self._capacity
                              or self._bytes + len(packed) > self._max_bytes):
            old = next(iter(self._runs))
            self._bytes -= len(self._runs.pop(old))
            ends = self._by_first[old[0]]
            ends.remove(old[1:])
            if not ends:
                del self._by_first[old[0]]
        self._runs[key] = packed
        self._bytes += len(packed)
        self._by_first.setdefault(key[0], []).append(key[1:])

    def pack(self, entries: Sequence[Entry]) -> bytes:
        """pack_entries(entries) (non-empty), from the cache when that run was packed."""
        last = entries[-1]
        packed = self._runs.get((entries[0].index, last.index, last.term))
        if packed is None:
            packed = pack_entries(entries)
            self.remember(entries, packed)
        return packed

    def pieces(self, entries: Sequence[Entry]) -> list[bytes]:
        """Cached packed runs that together hold a prefix of `entries`, in order,
        taking the longest run at each point; packs nothing (the caller packs
        what they leave)."""
        out: list[bytes] = []
        if not entries:
            return out
        base = entries[0].index
        n = len(entries)
        i = 0
        while i < n:
            start = entries[i].index
            best = 0
            for last, term in self._by_first.get(start, ()):
                at = last - base
                if best < last and at < n and entries[at].term == term:
                    best = last
            if not best:
                break
            out.append(self._runs[(start, best, entries[best - base].term)])
            i = best - base + 1
        return out

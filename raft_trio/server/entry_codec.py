"""The bytes of COMMAND and SESSION entries: built once on the leader, decoded in runs.

Every entry that carries data holds exactly one CBOR item, made by its own
encode_command call (a SESSION entry's by joining the encodings of the items
of one array), so a run of entries can be decoded as one spliced CBOR array;
and the entries of one session request differ only in their position, so
their commands can be sliced out and decoded together. Both halve what
decoding entry by entry costs on the applier's hot path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import repeat
from operator import itemgetter
from typing import Any

import cbor2

from raft_trio.core import Entry, EntryKind
from raft_trio.errors import CommandError, SessionExpired, StaleRequest
from raft_trio.sessions import SESSION_EXPIRED, STALE

kind_of = itemgetter(2)
data_of = itemgetter(3)


class Undecodable:
    """Stands in for a command whose bytes are not CBOR; applying it yields `error`."""

    __slots__ = ("error",)

    def __init__(self, error: list[str]):
        self.error = error


_CBOR_NULL = b"\xf6"


def _cbor_array_header(length: int) -> bytes:
    if length < 24:
        return bytes([0x80 | length])
    if length < 1 << 8:
        return bytes([0x98, length])
    if length < 1 << 16:
        return b"\x99" + length.to_bytes(2, "big")
    if length < 1 << 32:
        return b"\x9a" + length.to_bytes(4, "big")
    return b"\x9b" + length.to_bytes(8, "big")


# Kinds whose data is one CBOR item (the others' is not CBOR at all).
_DATA_KINDS = frozenset({EntryKind.COMMAND, EntryKind.SESSION, EntryKind.SESSION_EXPIRY})
ONLY_COMMANDS = {EntryKind.COMMAND}
ONLY_SESSIONS = {EntryKind.SESSION}
command_of = itemgetter(4)


def decode_entries(entries: Sequence[Entry], kinds: set[int]) -> tuple[list[Any], bool]:
    """The data of `entries` decoded from CBOR (None for kinds that carry none), and
    whether every entry that carries data held well-formed CBOR. `kinds` are the
    kinds present.

    One CBOR array is spliced together from the entries' bytes and decoded in
    a single call, which costs less than half of decoding each entry alone;
    if any entry is not valid CBOR, fall back to one at a time so that only
    that entry fails. Splicing relies on every such entry holding exactly one
    CBOR item, which holds because each is made by its own encode_command call
    (a SESSION entry's by joining the encodings of the items of one array).
    """
    if kinds <= _DATA_KINDS:
        parts = list(map(data_of, entries))
    else:
        parts = [e.data if e.kind in _DATA_KINDS else _CBOR_NULL for e in entries]
    try:
        decoded: list[Any] = cbor2.loads(_cbor_array_header(len(parts)) + b"".join(parts))
        if len(decoded) == len(parts):
            return decoded, True
    except (cbor2.CBORDecodeError, ValueError, TypeError, RecursionError):
        pass
    decoded = []
    clean = True
    for part in parts:
        try:
            decoded.append(cbor2.loads(part))
        except (cbor2.CBORDecodeError, ValueError, TypeError, RecursionError) as exc:
            # Every member sees the same bytes, so every member answers the same.
            decoded.append(Undecodable(["error", f"undecodable command: {exc}"]))
            clean = False
    return decoded, clean


def decode_commands(entries: Sequence[Entry]) -> tuple[list[Any], bool]:
    """The data of `entries` decoded as decode_entries does, and whether they
    were all well-formed commands (COMMAND entries)."""
    kinds = set(map(kind_of, entries))
    decoded, clean = decode_entries(entries, kinds)
    return decoded, clean and kinds == ONLY_COMMANDS


# Where the CBOR encoding of an unsigned int grows: positions below each bound
# (and at or above the one before) take the same number of bytes.
_UINT_WIDTH_BOUNDS = (24, 1 << 8, 1 << 16, 1 << 32, 1 << 64)

_SessionRun = tuple[int, int, int, int, int]  # start, client, seq, pos, stamp
_MAX_SPLIT_POSITION = 1 << 16


def split_sessions(datas: list[bytes]) -> tuple[list[_SessionRun], list[Any]] | None:
    """The runs of SESSION entries' data (entries of one request with consecutive
    positions) and every entry's command, decoding only the commands; None if an
    entry is not byte for byte as session_datas makes them (then the caller
    decodes them whole).

    The session fields of a run differ only in the position, so their bytes are
    known once the first entry is decoded: the run's end is found by checking
    those bytes at a few entries (as in session_run_end), and the commands are
    sliced out and decoded together in one call. Decoding every entry's
    five-item array instead costs about twice as much.
    """
    dumps = cbor2.dumps
    loads = cbor2.loads
    n = len(datas)
    runs: list[_SessionRun] = []
    pieces: list[bytes] = []
    i = 0
    try:
        while i < n:
            item = loads(datas[i])
            if (type(item) is not list or len(item) != 5
                    or not all(type(v) is int for v in item[:4]) or item[1] < 1 or item[2] < 0):
                return None
            client, seq, pos, stamp = item[0], item[1], item[2], item[3]
            if pos > _MAX_SPLIT_POSITION:
                return None  # not worth a table of encoded positions this long
            prefix = b"\x85" + dumps(client) + dumps(seq)
            tail = dumps(stamp)
            offset = pos - i
            positions = _positions(pos + n - i)
            same = _header_matcher(datas, prefix, positions, offset, tail)
            if not same(i):
                return None
            end = _prefix_end(same, i, n)
            runs.append((i, client, seq, pos, stamp))
            fixed = len(prefix) + len(tail)
            j = i
            while j < end:
                p = offset + j
                bound = next(b for b in _UINT_WIDTH_BOUNDS if p < b)
                stop = min(end, j + bound - p)
                cut = fixed + len(positions[p])
                # One slice object for them all, not one per entry.
                pieces += map(itemgetter(slice(cut, None)), datas[j:stop])
                j = stop
            i = end
        commands: list[Any] = loads(_cbor_array_header(n) + b"".join(pieces))
    except (cbor2.CBORDecodeError, ValueError, TypeError, RecursionError):
        return None
    if len(commands) != n:
        return None
    return runs, commands


def session_run_end(entries: Sequence[Entry], items: list[Any], start: int) -> int:
    """The end of the run of SESSION entries from `start` that carry consecutive
    positions of one request, or `start` if that entry is malformed.

    A request's entries in a log written by this server sit together, positions
    ascending from 0, and no two requests of a client hold the same position
    at the same distance from `start`; so the entries that match (client, seq,
    position) form one prefix of what follows, and a binary search finds its
    end. That saves a comparison per entry on the hot path.
    """
    first = items[start]
    if (type(first) is not list or len(first) != 5
            or not all(type(v) is int for v in first[:4]) or first[1] < 1 or first[2] < 0):
        return start
    client, seq, pos = first[0], first[1], first[2]
    session_kind = EntryKind.SESSION

    def same(j: int) -> bool:
        item = items[j]
        return (entries[j].kind == session_kind and type(item) is list and len(item) == 5
                and item[2] == pos + j - start and item[0] == client and item[1] == seq)

    return _prefix_end(same, start, len(items))


def _prefix_end(matches: Callable[[int], bool], start: int, stop: int) -> int:
    """The first index from `start` up to `stop` where `matches` fails (or `stop`),
    given that `matches(start)` holds and the indexes it holds for form a prefix."""
    if matches(stop - 1):
        return stop
    lo, hi = start, stop - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if matches(mid):
            lo = mid
        else:
            hi = mid
    return hi


def _header_matcher(datas: list[bytes], prefix: bytes, positions: list[bytes], offset: int,
                    tail: bytes) -> Callable[[int], bool]:
    """Whether entry j's data starts with the session fields of a run whose
    entry j has position offset + j."""

    def same(j: int) -> bool:
        return datas[j].startswith(prefix + positions[offset + j] + tail)

    return same


_MAX_U64 = (1 << 64) - 1


def check_session(session: Any) -> tuple[int, int]:
    if (not isinstance(session, tuple | list) or len(session) != 2
            or not all(type(v) is int for v in session)
            or not 0 <= session[0] <= _MAX_U64 or not 1 <= session[1] <= _MAX_U64):
        raise CommandError(f"a session is [client id, request number], both unsigned 64-bit "
                           f"ints, the number from 1: not {session!r:.60}")
    return session[0], session[1]


# CBOR of the positions in a request, encoded once for all requests.
_POSITIONS: list[bytes] = []


def _positions(count: int) -> list[bytes]:
    """The CBOR encodings of 0..count-1 (and perhaps more)."""
    if len(_POSITIONS) < count:
        _POSITIONS.extend(map(cbor2.dumps, range(len(_POSITIONS), count)))
    return _POSITIONS


def session_datas(client: int, seq: int, stamp: int, commands: list[bytes]) -> list[bytes]:
    """The data of the SESSION entries of a request whose commands are encoded as
    `commands`: each the one CBOR item [client, seq, pos, stamp, command], put
    together from the encoded pieces (one join each, about half of what adding
    them up costs) rather than encoding the command again."""
    dumps = cbor2.dumps
    return list(map(b"".join, zip(repeat(b"\x85" + dumps(client) + dumps(seq)),
                                  _positions(len(commands)), repeat(dumps(stamp)), commands)))


def raise_refusal(results: list[Any], session: tuple[int, int, int]) -> None:
    """Raise the error for a session request whose results say it was refused."""
    if results.count(None) == len(results):
        return  # the common case, checked at C speed
    client, seq, _ = session
    if SESSION_EXPIRED in results:
        raise SessionExpired(
            f"the cluster holds no session for client {client} (it expired, or was never "
            f"made): request {seq} was not applied now, and whether an earlier try of it "
            f"applied is unknown"
        )
    if STALE in results:
        raise StaleRequest(f"request {seq} of client {client} is older than the latest one the "
                           f"cluster has seen from it: not applied")

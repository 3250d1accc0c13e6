"""A linearizability checker for histories of the key-value register (set/get/delete/cas).

A history is a collection of `Operation`s as clients observed them: when each was
invoked, when it completed (or that its completion is unknown, after a timeout) and
what it returned. `check` decides whether some total order of the operations, one
that respects real time (an operation that completed before another was invoked comes
first) and in which every result is the one a single register per key would give,
explains it; if not, it names a key and a small window of that key's operations that
is not linearizable on its own.

Every operation touches one key, and linearizability is compositional (a history is
linearizable iff each key's sub-history is), so keys are checked one by one, each with
the search of Wing & Gong as improved by Lowe (with memoization of visited
configurations), iteratively since histories are long, and with reductions of its own
for the register (see `_search`).

Pure Python on purpose: this module must not depend on trio or on anything outside
the standard library, so that it can check histories recorded anywhere.
"""

from __future__ import annotations

import json
import math
import os
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, Final

__all__ = ["CheckResult", "Operation", "check", "load_history", "save_history"]


@dataclass(frozen=True, slots=True)
class Operation:
    """One client operation on one key, as the client observed it.

    `input`: set -> the value (str); get and delete -> None; cas -> [expected, new]
    (expected None means "absent"). `output`: set -> None; get -> the value or None;
    delete -> whether the key existed; cas -> whether it swapped. `ret` None means the
    completion is unknown (a timeout): the operation may have taken effect at any time
    after `call`, or never, and `output` is then ignored.
    """

    client: int
    op: str
    key: str
    input: Any
    output: Any
    call: float
    ret: float | None


@dataclass(frozen=True)
class CheckResult:
    """The verdict of `check`.

    On a violation, `key` is the first key (in sorted order) whose sub-history is not
    linearizable and `window` a small set of its operations (in call order) that is
    not linearizable by itself: from the key's initial value, or, when
    `window_from_unknown_state`, from whatever value the key had. Operations of the
    window whose `ret` is None include ones that completed in the history but after the
    window's end; the window is a valid history to pass to `check` again.
    """

    linearizable: bool
    key: str | None
    window: tuple[Operation, ...]
    window_from_unknown_state: bool
    keys_checked: int
    operations: int

    def describe(self) -> str:
        if self.linearizable:
            return f"linearizable: {self.operations} operations on {self.keys_checked} keys"
        start = (
            "from an unknown value of the key"
            if self.window_from_unknown_state
            else "from the key's initial value"
        )
        lines = [
            f"NOT linearizable: key {self.key!r} "
            f"({self.operations} operations, {self.keys_checked} keys checked)",
            f"smallest failing window: {len(self.window)} operations, {start}:",
        ]
        for o in self.window:
            ret = "?" if o.ret is None else f"{o.ret:.6f}"
            output = "?" if o.ret is None else repr(o.output)
            if o.op == "cas":
                arg = f"{o.input[0]!r}, {o.input[1]!r}"
            else:
                arg = "" if o.input is None else repr(o.input)
            lines.append(f"  [{o.call:.6f} .. {ret}] client {o.client}: {o.op}({arg}) -> {output}")
        return "\n".join(lines)


def check(history: Iterable[Operation], *, initial: Mapping[str, str] | None = None) -> CheckResult:
    """Check `history` for linearizability; keys absent from `initial` start absent.

    Raises ValueError on an operation with an unknown name or a malformed input,
    output (of a completed operation) or time.
    """
    ops = list(history)
    by_key: dict[str, list[Operation]] = {}
    for o in ops:
        _validate(o)
        by_key.setdefault(o.key, []).append(o)
    start_values = dict(initial or {})
    for k, v in start_values.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise ValueError(f"initial values must map str to str, got {k!r}: {v!r}")
    checked = 0
    for key in sorted(by_key):
        checked += 1
        found = _violation(by_key[key], start_values.get(key))
        if found is not None:
            return CheckResult(False, key, found[0], found[1], checked, len(ops))
    return CheckResult(True, None, (), False, checked, len(ops))


def save_history(history: Iterable[Operation], path: str | os.PathLike[str]) -> None:
    """Write `history` as JSON lines, one object with the fields of `Operation` a line."""
    names = [f.name for f in fields(Operation)]
    with open(path, "w", encoding="utf-8") as f:
        for o in history:
            f.write(json.dumps({n: getattr(o, n) for n in names}) + "\n")


def load_history(path: str | os.PathLike[str]) -> list[Operation]:
    """Read a history written by `save_history`; blank lines are skipped.

    Raises ValueError naming the line on anything that is not a well-formed operation.
    """
    history: list[Operation] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                history.append(_from_json(line))
            except ValueError as e:
                raise ValueError(f"{os.fspath(path)}: line {lineno}: {e}") from None
    return history


_FIELDS: Final = frozenset(f.name for f in fields(Operation))


def _from_json(line: str) -> Operation:
    try:
        d = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"not JSON ({e})") from None
    if not isinstance(d, dict):
        raise ValueError("not a JSON object")
    if d.keys() != _FIELDS:
        missing = sorted(_FIELDS - d.keys())
        extra = sorted(d.keys() - _FIELDS)
        raise ValueError(f"wrong fields (missing {missing}, unexpected {extra})")
    client = d["client"]
    if not isinstance(client, int) or isinstance(client, bool):
        raise ValueError(f"client must be an integer, got {client!r}")
    call, ret = d["call"], d["ret"]
    if not _is_number(call) or not (ret is None or _is_number(ret)):
        raise ValueError(f"call and ret must be numbers (ret may be null): {call!r}, {ret!r}")
    o = Operation(
        client=client,
        op=d["op"],
        key=d["key"],
        input=d["input"],
        output=d["output"],
        call=float(call),
        ret=None if ret is None else float(ret),
    )
    _validate(o)
    return o


def _is_number(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _validate(o: Operation) -> None:
    where = f"operation {o!r:.200}"
    if o.op not in _KIND:
        raise ValueError(f"unknown operation name {o.op!r} in {where}")
    if not isinstance(o.key, str):
        raise ValueError(f"key must be a str in {where}")
    if not _is_number(o.call) or not math.isfinite(o.call):
        raise ValueError(f"call must be a finite number in {where}")
    if o.ret is not None and (not _is_number(o.ret) or not math.isfinite(o.ret) or o.ret < o.call):
        raise ValueError(f"ret must be None or a finite number >= call in {where}")
    if o.op == "set":
        if not isinstance(o.input, str):
            raise ValueError(f"set input must be the value (a str) in {where}")
    elif o.op == "cas":
        if (
            not isinstance(o.input, list | tuple)
            or len(o.input) != 2
            or not (o.input[0] is None or isinstance(o.input[0], str))
            or not isinstance(o.input[1], str)
        ):
            raise ValueError(f"cas input must be [expected (str or None), new (str)] in {where}")
    elif o.input is not None:
        raise ValueError(f"{o.op} input must be None in {where}")
    if o.ret is None:
        return
    if o.op == "get" and not (o.output is None or isinstance(o.output, str)):
        raise ValueError(f"get output must be a str or None in {where}")
    # A bool is required, not merely something equal to one: 1 == True would hide a bug.
    if o.op in ("delete", "cas") and not isinstance(o.output, bool):
        raise ValueError(f"{o.op} output must be a bool in {where}")


# The model: one register per key. Its state is the value, None when absent, _UNREAD
# for any value that the history never asks about (see _linearizable), or _UNKNOWN when
# checking a window that starts where the value is not known.


class _Unknown:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<unknown>"


class _Unread:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<unread>"


class _Fail:
    __slots__ = ()


_UNKNOWN: Final = _Unknown()
_UNREAD: Final = _Unread()
_FAIL: Final = _Fail()

_State = str | None | _Unknown | _Unread

_SET, _GET, _DELETE, _CAS = range(4)
_KIND: Final = {"set": _SET, "get": _GET, "delete": _DELETE, "cas": _CAS}


def _step(kind: int, arg: Any, known: bool, output: Any, state: _State) -> _State | _Fail:
    """The state after the operation, or _FAIL if its (known) output contradicts `state`.

    From _UNKNOWN the model is permissive: it accepts whatever any concrete value would
    accept, and its next state stands for at least every value that could follow. So a
    window that fails from _UNKNOWN fails from every concrete value.
    """
    if kind == _SET:
        return arg  # type: ignore[no-any-return]
    if kind == _GET:
        if state is _UNKNOWN:
            return output  # type: ignore[no-any-return]
        return state if output == state else _FAIL
    if kind == _DELETE:
        if known and state is not _UNKNOWN and output != (state is not None):
            return _FAIL
        return None
    expected, new = arg
    if state is _UNKNOWN:
        # A refused cas only says the value is not `expected`; staying unknown is
        # coarser, which keeps the model permissive.
        return new if known and output else _UNKNOWN
    swapped = state == expected
    if known and output != swapped:
        return _FAIL
    return new if swapped else state


def _linearizable(ops: Sequence[Operation], initial: _State) -> bool:
    return _search(ops, initial)[0] is True


def _search(
    ops: Sequence[Operation], initial: _State, patience: int | None = None
) -> tuple[bool | None, float, float]:
    """WGL search over the operations of one key, starting from `initial`.

    Returns the verdict, the frontier and a hint. The frontier is the latest time such
    that some configuration had linearized every operation that returned before it:
    every prefix (see below) ending before it is linearizable. The hint, at least the
    frontier, is the latest time some configuration was sure to fail by: the return of
    an operation it had left unable ever to succeed. With `patience`, the verdict is
    None once that many configurations were visited with the frontier standing still.

    Configurations are (set of linearized operations, model state). The calls and
    returns of completed operations sit in time order in a doubly linked list (at equal
    times calls first: equal times mean concurrent); an operation may be linearized
    next if it was called before the first remaining return. An operation of unknown
    completion returns at +infinity: it never has to be linearized, so it is kept out
    of the list, and once every completed operation is linearized the rest can go last
    in any order (the model accepts any output for them) or not at all: success.

    Besides the cache of visited configurations, the search drops dead configurations
    (from which nothing can be linearized) and skips moves: each rule below skips one
    only when, if some linearization from the configuration exists, a shortest one
    starts otherwise (or, for the blind-write rule, the parent's does). By induction on
    the length of a shortest linearization, the search still finds one if any exists.
    """
    # An unknown get has no effect and constrains nothing. Bits are numbered in call order.
    ops = sorted((o for o in ops if not (o.op == "get" and o.ret is None)), key=lambda o: o.call)
    n = len(ops)
    kind = [_KIND[o.op] for o in ops]
    # Values that no completed get returns and no cas expects are all alike to the model
    # (present, and equal to nothing asked about): one token for all of them merges
    # configurations that differ only in which of them was written last.
    asked = {o.output for o in ops if o.op == "get"} | {o.input[0] for o in ops if o.op == "cas"}

    def token(value: _State) -> _State:
        return value if value is None or value in asked else _UNREAD

    initial = token(initial) if isinstance(initial, str) else initial
    arg: list[Any] = [
        token(o.input)
        if o.op == "set"
        else (o.input[0], token(o.input[1]))
        if o.op == "cas"
        else o.input
        for o in ops
    ]
    output = [o.output for o in ops]
    known = [o.ret is not None for o in ops]
    # The value each completed operation needs to succeed, if one (a get, a cas that
    # swapped, a delete that found nothing), and the value each operation may leave. A
    # configuration where some value is still needed but is not the value and nothing
    # left can make it is dead: that operation can never be linearized. This cuts off
    # the many orders a search would otherwise try before reaching its return.
    needs: list[_State | _Fail] = [_FAIL] * n
    makes: list[_State | _Fail] = [_FAIL] * n
    for i in range(n):
        succeeds = known[i] and output[i]
        if kind[i] == _SET:
            makes[i] = arg[i]
        elif kind[i] == _GET:
            needs[i] = output[i]
        elif kind[i] == _DELETE:
            needs[i] = None if known[i] and not output[i] else _FAIL
            makes[i] = None if succeeds or not known[i] else _FAIL
        else:
            needs[i] = arg[i][0] if succeeds else _FAIL
            makes[i] = arg[i][1] if succeeds or not known[i] else _FAIL
    wanted = Counter(v for v in needs if v is not _FAIL)
    sources = Counter(v for v in makes if v is not _FAIL)
    orphans = {v for v in wanted if not sources[v]}

    def count(i: int, delta: int) -> None:
        for counter, value in ((wanted, needs[i]), (sources, makes[i])):
            if value is not _FAIL:
                counter[value] += delta
                if wanted[value] and not sources[value]:
                    orphans.add(value)
                else:
                    orphans.discard(value)

    def dead(state: _State) -> bool:
        return (
            bool(orphans) and state is not _UNKNOWN and (len(orphans) > 1 or state not in orphans)
        )

    returns = [math.inf if o.ret is None else o.ret for o in ops]
    needed_by: dict[_State | _Fail, list[int]] = {}
    for i in sorted(range(n), key=returns.__getitem__):
        if needs[i] is not _FAIL:
            needed_by.setdefault(needs[i], []).append(i)

    def doomed(state: _State, base: int, bits: int) -> float:
        """When the first operation that can no longer succeed returns."""
        return min(
            next(
                returns[i]
                for i in needed_by[v]
                if bitpos[i] >= base and not bits >> (bitpos[i] - base) & 1
            )
            for v in orphans
            if v != state
        )

    unknown_ops = [i for i in range(n) if not known[i]]
    unknown_calls = [ops[i].call for i in unknown_ops]
    bitpos = [0] * n
    counts = [0, 0]
    for i in range(n):
        bitpos[i] = counts[known[i]]
        counts[known[i]] += 1
    remaining = counts[True]
    if remaining == 0:
        return True, math.inf, math.inf
    events = sorted(
        [(o.call, 0, i) for i, o in enumerate(ops) if o.ret is not None]
        + [(o.ret, 1, i) for i, o in enumerate(ops) if o.ret is not None]
    )
    tail = len(events) + 1
    nxt = [*range(1, tail + 1), 0]
    prv = [0, *range(tail)]
    is_return = [False] * (tail + 1)
    event_op = [-1] * (tail + 1)
    event_time = [math.inf] * (tail + 1)
    call_node = [0] * n
    return_node = [0] * n
    for node, (at, is_ret, i) in enumerate(events, 1):
        is_return[node] = bool(is_ret)
        event_op[node] = i
        event_time[node] = at
        if is_ret:
            return_node[i] = node
        else:
            call_node[i] = node

    def candidates(state: _State) -> tuple[list[int], float, bool]:
        """The completed operations that may go next, the time before which unknown
        ones must have been called to go next too, and whether to stop at these."""
        found: list[int] = []
        forced = -1
        node = nxt[0]
        while node != tail and not is_return[node]:
            i = event_op[node]
            # A completed get, or a delete or cas that reports no change, never
            # changes the state where it succeeds; if it succeeds here, it can go
            # first in a linearization from here that has it later (nothing between
            # sees a difference), so it is tried alone. Not branching on reads keeps
            # the search narrow.
            if forced < 0:
                if kind[i] != _SET and _step(kind[i], arg[i], True, output[i], state) == state:
                    forced = i
                else:
                    found.append(i)
            node = nxt[node]
        if forced >= 0:
            return [forced], event_time[node], True
        return found, event_time[node], False

    def unlink(node: int) -> None:
        nxt[prv[node]] = nxt[node]
        prv[nxt[node]] = prv[node]

    def relink(node: int) -> None:
        nxt[prv[node]] = node
        prv[nxt[node]] = node

    # Whether a shortest linearization may have to start with an unknown operation u:
    # only for the sake of a next operation x that behaves differently after u. If x
    # reaches the same state with or without u before it, u can be left out; if x is
    # completed and keeps the state both ways, x can go first. Sets (and unknown
    # deletes) reach the same state either way; an unknown operation that keeps the
    # state would be left out of a shortest linearization. For an unknown set from a
    # known value that comes down to the summary below, computed once per configuration.
    summary_of = -1
    demanded: set[str | None] = set()
    any_value = False

    def needed(u: int, state: _State, after_u: _State, cands: list[int], config: int) -> bool:
        nonlocal summary_of, demanded, any_value
        if after_u == state:
            return False
        if kind[u] == _SET and state is not _UNKNOWN:
            if summary_of != config:
                summary_of, demanded, any_value = config, set(), False
                for x in cands:
                    if kind[x] == _GET and known[x]:
                        demanded.add(output[x])
                    elif kind[x] == _DELETE and known[x]:
                        any_value = any_value or (output[x] and state is None)
                    elif kind[x] == _CAS:
                        if output[x] or not known[x]:
                            demanded.add(arg[x][0])
                        else:
                            any_value = any_value or arg[x][0] == state
            return any_value or after_u in demanded
        for x in cands:
            if x == u or (kind[x] == _SET if known[x] else kind[x] != _CAS):
                continue
            after = _step(kind[x], arg[x], known[x], output[x], after_u)
            if isinstance(after, _Fail) or (after == after_u and not known[x]):
                continue
            direct = _step(kind[x], arg[x], known[x], output[x], state)
            if after == direct or (after == after_u and direct == state):
                continue
            return True
        return False

    # The cache maps (completed operations linearized, state) to the sets of unknown
    # operations linearized with them in visited configurations. A configuration is
    # pruned if one with the same completed set and state and a subset of its unknown
    # operations was visited: the smaller one can do whatever the larger one can (and
    # leave the extra unknown operations out, as they constrain no one's real-time
    # order), in as few moves; visited configurations failed or are on the current path.
    #
    # The completed set is (base, bits): the first `base` completed operations in call
    # order are all linearized, and bit j of `bits` stands for the one at base + j. Only
    # operations called before some unlinearized one returns can be linearized, so
    # `bits` stays about as wide as the concurrency, not as long as the history.
    cache: dict[tuple[int, int, _State], list[int]] = {(0, 0, initial): [0]}
    Frame = tuple[list[int], int, bool, float, int, _State, int, int, int, bool, int]
    stack: list[Frame] = []
    state = initial
    base = bits = done_unknown = 0
    cands, limit, complete = candidates(state)
    pos = 0
    after_blind = False
    config = configs = 0
    frontier, progress = limit, 0
    hint = frontier
    if dead(state):
        return False, frontier, max(hint, doomed(state, base, bits))
    while True:
        if pos == len(cands) and not complete:
            # Unknown operations only after every completed one was tried: a linearizable
            # history with unknown operations is then usually found without placing any.
            complete = True
            more = [
                u
                for u in unknown_ops[: bisect_right(unknown_calls, limit)]
                if not done_unknown >> bitpos[u] & 1
            ]
            if more:
                cands = cands + more
        if pos == len(cands):
            if not stack:
                return False, frontier, hint
            (
                cands,
                pos,
                complete,
                limit,
                i,
                state,
                base,
                bits,
                done_unknown,
                after_blind,
                config,
            ) = stack.pop()
            if known[i]:
                relink(return_node[i])
                relink(call_node[i])
                remaining += 1
            count(i, 1)
            continue
        i = cands[pos]
        pos += 1
        # An unknown set or delete right after another only hides it: leaving the first
        # out gives the same state in fewer moves.
        if after_blind and not known[i] and kind[i] != _CAS:
            continue
        new_state = _step(kind[i], arg[i], known[i], output[i], state)
        if isinstance(new_state, _Fail):
            continue
        new_base, new_bits, new_unknown = base, bits, done_unknown
        if known[i]:
            new_bits |= 1 << (bitpos[i] - base)
            if new_bits & 1:
                plus = new_bits + 1
                shift = (plus & -plus).bit_length() - 1  # the trailing ones
                new_base += shift
                new_bits >>= shift
        else:
            if not needed(i, state, new_state, cands, config):
                continue
            new_unknown |= 1 << bitpos[i]
        seen = cache.setdefault((new_base, new_bits, new_state), [])
        if any(not s & ~new_unknown for s in seen):
            continue
        seen.append(new_unknown)
        stack.append(
            (cands, pos, complete, limit, i, state, base, bits, done_unknown, after_blind, config)
        )
        if known[i]:
            unlink(call_node[i])
            unlink(return_node[i])
            remaining -= 1
            if remaining == 0:
                return True, math.inf, math.inf
        count(i, -1)
        state, base, bits, done_unknown = new_state, new_base, new_bits, new_unknown
        after_blind = not known[i] and kind[i] != _CAS
        configs += 1
        config = configs
        cands, limit, complete = candidates(state)
        pos = 0
        if dead(state):
            cands, complete = [], True
            hint = max(hint, doomed(state, base, bits))
        if limit > frontier:
            frontier, progress = limit, configs
            hint = max(hint, frontier)
        elif patience is not None and configs - progress > patience:
            return None, frontier, hint


# Windows. Every window reported is not linearizable by itself, and is linearizable if
# the key's history is, so its failure proves the history's. They come from:
#
# Prefixes. prefix(T) holds the operations called at or before T; those completing
# after T become unknown-completion. If prefix(T') is linearizable for T' > T (or the
# whole history is), so is prefix(T): take a linearization of prefix(T') and cut it
# before the first operation called after T. An operation it leaves out was ordered
# after one called after T, so it did not complete before that call, hence completed
# after T (or never): it is unknown in prefix(T) and may be left out. The rest keep
# their order, and their outputs only lost constraints. So failure is monotone in T.
# The same cut of a configuration's linearization shows that prefixes ending before a
# search's frontier are linearizable.
#
# Cuts. The window from time `a` (of a prefix) is the operations called at or after
# `a`, plus those called before `a` that had not returned before it (unknown
# completion, or returning at or after `a`), these as unknown-completion ones; it
# starts from an unknown value. In a linearization of the prefix, an operation that
# returned before `a` precedes every operation called at or after `a`; what follows the
# last of them is the window minus operations that are unknown in it (so may be left
# out), in an order respecting the window's real time (which only lost constraints),
# from the value reached there. So if the prefix is linearizable, so is the window from
# that value, hence from the permissive unknown value. At a quiescent `a` (every
# completed operation called before `a` returned before it) the window keeps every
# completed operation after `a` as it was, and the window from a later quiescent cut is
# that of an earlier one's window, so failure is monotone over quiescent cuts.
# Elsewhere the window is coarser (operations in flight lose their results) and failure
# is not monotone, but windows there can be much smaller when clients are rarely all
# idle at once.
#
# A search that fails, or stops making headway, has usually run into a violation just
# before its hint (or its frontier): the windows of that prefix from its latest cuts
# are tried first, which is quick since they are small. Failing that (after a search
# to the end if the first one gave up), the smallest failing prefix
# (from the frontier on, galloping forward: a failing check explores every
# configuration of its prefix, so those are kept short, then bisecting), and the
# latest failing cut of it: the latest cuts one by one, then the quiescent ones before
# them by galloping back and bisecting; with none, the prefix itself.
_CUTS_SCANNED: Final = 64
# Configurations visited without the frontier moving before looking for a window there
# (not Final: the tests lower it to take every path).
_PATIENCE = 20_000

_Window = tuple[tuple[Operation, ...], bool]


def _violation(ops: Sequence[Operation], initial: _State) -> _Window | None:
    """None if the history of one key is linearizable, else a small failing window and
    whether it starts from an unknown value."""
    ops = sorted((o for o in ops if not (o.op == "get" and o.ret is None)), key=lambda o: o.call)
    verdict, frontier, hint = _search(ops, initial, _PATIENCE)
    if verdict:
        return None
    for end in sorted({hint, frontier}, reverse=True):
        window = _latest_failing_cut(_prefix(ops, end), scan_only=True)
        if window is not None:
            return window
    if verdict is None:
        verdict, frontier, _ = _search(ops, initial)
        if verdict:
            return None
    # Any time will do for T; ending at return times too (not only at calls) lets the
    # prefix end right as the offending operation returns, with nothing called after.
    times = sorted({t for o in ops for t in (o.call, o.ret) if t is not None and t >= frontier})
    # Index len(times) stands for the whole history, known to fail.
    end = _first_true(
        len(times) + 1,
        lambda j: j == len(times) or not _linearizable(_prefix(ops, times[j]), initial),
    )
    failing = list(ops) if end == len(times) else _prefix(ops, times[end])
    window = _latest_failing_cut(failing, scan_only=False)
    return (tuple(failing), False) if window is None else window


def _unknown_after(t: float, o: Operation) -> Operation | None:
    """`o` with its completion unknown if it did not return before `t`; None for a get,
    which is then meaningless."""
    if o.ret is not None and o.ret < t:
        return o
    return None if o.op == "get" else replace(o, ret=None)


def _prefix(ops: Sequence[Operation], t: float) -> list[Operation]:
    kept = (o if o.ret is not None and o.ret <= t else _unknown_after(t, o) for o in ops)
    return [o for o in kept if o is not None and o.call <= t]


def _latest_failing_cut(failing: list[Operation], *, scan_only: bool) -> _Window | None:
    """The window of the latest failing cut of `failing` (in call order), if any."""
    # Among cuts calling the same operations after them, the latest leaves fewest
    # operations in flight, so cuts are at calls.
    cuts = [k for k, o in enumerate(failing) if k == 0 or o.call > failing[k - 1].call]
    scanned = cuts[-_CUTS_SCANNED:]

    def window(k: int) -> list[Operation]:
        a = failing[k].call
        before = (_unknown_after(a, o) for o in failing[:k])
        return [o for o in before if o is not None and o.ret is None] + failing[k:]

    def fails_from(k: int) -> bool:
        return not _linearizable(window(k), _UNKNOWN)

    k = next((k for k in reversed(scanned) if fails_from(k)), -1)
    if k < 0 and not scan_only:
        quiescent = []
        latest_return = -math.inf
        for j, o in enumerate(failing):
            if j < scanned[0] and (j == 0 or o.call > max(latest_return, failing[j - 1].call)):
                quiescent.append(j)
            if o.ret is not None:
                latest_return = max(latest_return, o.ret)
        c = _latest_true(len(quiescent), lambda c: fails_from(quiescent[c]))
        k = -1 if c < 0 else quiescent[c]
    if k < 0:
        return None
    return tuple(sorted(window(k), key=lambda o: o.call)), True


def _first_true(n: int, pred: Callable[[int], bool]) -> int:
    """The smallest j in [0, n) with pred(j), for pred false up to some point only and
    pred(n - 1) true. Gallops forward from 0, so pred is called on few large j."""
    lo, step = 0, 1
    while True:
        probe = min(lo + step - 1, n - 1)
        if pred(probe):
            break
        lo = probe + 1
        step *= 2
    hi = probe
    while lo < hi:
        mid = (lo + hi) // 2
        if pred(mid):
            hi = mid
        else:
            lo = mid + 1
    return hi


def _latest_true(n: int, pred: Callable[[int], bool]) -> int:
    """The largest c in [0, n) with pred(c), or -1, for pred true up to some point only.
    Gallops back from the end, since the windows of late cuts are small and cheap."""
    known_false = n
    step = 1
    while known_false > 0:
        c = max(known_false - step, 0)
        if pred(c):
            break
        known_false = c
        step *= 2
    else:
        return -1
    known_true = c
    while known_false - known_true > 1:
        mid = (known_true + known_false) // 2
        if pred(mid):
            known_true = mid
        else:
            known_false = mid
    return known_true

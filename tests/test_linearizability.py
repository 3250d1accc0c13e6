"""The linearizability checker of `raft_trio.testing.linearizability`.

Hand-written histories with known verdicts, a brute-force checker to compare against
on small random histories, and histories generated from a simulated linearizable
register (which also serve as a benchmark: run this file as a script).
"""

from __future__ import annotations

import functools
import heapq
import math
import random
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from raft_trio.testing import linearizability
from raft_trio.testing.linearizability import (
    CheckResult,
    Operation,
    check,
    load_history,
    save_history,
)

# -- building histories -----------------------------------------------------------------


def set_(key: str, value: str, call: float, ret: float | None, client: int = 0) -> Operation:
    return Operation(client, "set", key, value, None, call, ret)


def get(key: str, value: str | None, call: float, ret: float | None, client: int = 0) -> Operation:
    return Operation(client, "get", key, None, value, call, ret)


def delete(key: str, existed: bool, call: float, ret: float | None, client: int = 0) -> Operation:
    return Operation(client, "delete", key, None, existed, call, ret)


def cas(
    key: str,
    expected: str | None,
    new: str,
    swapped: bool,
    call: float,
    ret: float | None,
    client: int = 0,
) -> Operation:
    return Operation(client, "cas", key, [expected, new], swapped, call, ret)


def simulate(
    seed: int,
    n_ops: int,
    *,
    clients: int = 10,
    keys: int = 5,
    unknown: int = 0,
    gets: float = 0.35,
    cases: float = 0.15,
    deletes: float = 0.05,
    initial: Mapping[str, str] | None = None,
    grid: float = 0.0,
) -> list[Operation]:
    """A linearizable history, in call order, from a hidden register.

    Each client runs one operation at a time; the register applies an operation at a
    random point between its call and its return, in the order of those points. About
    `unknown` writes get an unknown completion; half of them take effect (at their
    point), half never do. Written values are unique. With `grid`, times are widened to
    multiples of it (calls down, returns up), which makes equal times frequent.
    """
    rng = random.Random(seed)
    names = [f"k{i}" for i in range(keys)]
    state = dict(initial or {})
    written = list(state.values())
    p_unknown = unknown / max(1.0, n_ops * (1 - gets))
    points: list[tuple[float, int, float]] = []
    for client in range(clients):
        call = rng.uniform(0, 1)
        heapq.heappush(points, (call + rng.uniform(0, 1), client, call))
    history: list[Operation] = []
    while len(history) < n_ops:
        point, client, call = heapq.heappop(points)
        key = rng.choice(names)
        current = state.get(key)
        fresh = f"v{len(history)}"
        r = rng.random()
        op: str
        inp: Any
        out: Any
        if r < gets:
            op, inp, out, new = "get", None, current, current
        elif r < gets + cases:
            expected = current if rng.random() < 0.5 else rng.choice([None, *written[-5:]])
            swapped = current == expected
            op, inp, out, new = "cas", [expected, fresh], swapped, fresh if swapped else current
        elif r < gets + cases + deletes:
            op, inp, out, new = "delete", None, current is not None, None
        else:
            op, inp, out, new = "set", fresh, None, fresh
        ret: float | None = point + rng.uniform(0, 1)
        if op != "get" and rng.random() < p_unknown:
            ret, out = None, None
            if rng.random() < 0.5:
                new = current
        if new is None:
            state.pop(key, None)
        else:
            state[key] = new
        written.append(fresh)
        history.append(Operation(client, op, key, inp, out, call, ret))
        # After a timeout the client carries on, as a real one would.
        next_call = (point + 2.0 if ret is None else ret) + rng.uniform(0, 0.3)
        heapq.heappush(points, (next_call + rng.uniform(0, 1), client, next_call))
    if grid:
        history = [
            replace(
                o,
                call=math.floor(o.call / grid) * grid,
                ret=None if o.ret is None else math.ceil(o.ret / grid) * grid,
            )
            for o in history
        ]
    history.sort(key=lambda o: o.call)
    return history


def stale_read(history: Sequence[Operation]) -> tuple[list[Operation], Operation] | None:
    """The history with one get made to return a value overwritten before it was called.

    The value's write returned before another completed write was called, which returned
    before the get was called; values are unique, so no linearization explains it.
    """
    by_key: dict[str, list[Operation]] = {}
    for o in history:
        by_key.setdefault(o.key, []).append(o)
    for i, g in enumerate(history):
        if g.op != "get" or g.ret is None:
            continue
        sets = [o for o in by_key[g.key] if o.op == "set" and o.ret is not None]
        for w2 in sets:
            if w2.ret is not None and w2.ret < g.call:
                for w1 in sets:
                    if w1.ret is not None and w1.ret < w2.call and w1.input != g.output:
                        bad = replace(g, output=w1.input)
                        return [*history[:i], bad, *history[i + 1 :]], bad
    return None


# -- an independent brute-force checker -------------------------------------------------


def brute_force(history: Sequence[Operation], initial: Mapping[str, str | None]) -> bool:
    """Try every order consistent with real time; unknown operations may be left out."""
    ops = list(history)
    ends = [math.inf if o.ret is None else o.ret for o in ops]
    required = frozenset(i for i, o in enumerate(ops) if o.ret is not None)

    @functools.cache
    def search(done: frozenset[int], state: tuple[tuple[str, str | None], ...]) -> bool:
        if required <= done:
            return True
        values = dict(state)
        for i, o in enumerate(ops):
            if i in done or any(j not in done and ends[j] < o.call for j in range(len(ops))):
                continue
            current = values.get(o.key)
            new = current
            result: Any = None
            if o.op == "set":
                new = o.input
            elif o.op == "get":
                result = current
            elif o.op == "delete":
                result, new = current is not None, None
            else:
                expected, replacement = o.input
                result = current == expected
                new = replacement if result else current
            if o.ret is not None and o.op != "set" and result != o.output:
                continue
            values_after = {**values, o.key: new}
            if search(done | {i}, tuple(sorted(values_after.items()))):
                return True
        return False

    return search(frozenset(), tuple(sorted(initial.items())))


def fails_from_any_value(window: Sequence[Operation]) -> bool:
    """Brute force: `window` (of one key) fails whatever value the key started with."""
    key = window[0].key
    seen: set[str | None] = {None, "a value written nowhere"}
    for o in window:
        for x in (o.input if o.op == "cas" else [o.input], [o.output]):
            seen.update(v for v in x if isinstance(v, str))
    return not any(brute_force(window, {key: v}) for v in seen)


# -- checking violations ----------------------------------------------------------------


def same_op(window_op: Operation, op: Operation) -> bool:
    return window_op in (op, replace(op, ret=None))


def assert_violation(
    history: Sequence[Operation],
    *,
    key: str = "x",
    initial: Mapping[str, str] | None = None,
    max_window: int,
    offending: Sequence[Operation] = (),
) -> CheckResult:
    result = check(history, initial=initial)
    assert not result.linearizable
    assert result.key == key
    assert result.operations == len(history)
    assert 0 < len(result.window) <= max_window, result.describe()
    for o in offending:
        assert any(same_op(w, o) for w in result.window), result.describe()
    assert all(any(same_op(w, o) for o in history) for w in result.window)
    assert [w.call for w in result.window] == sorted(w.call for w in result.window)
    start = None if result.window_from_unknown_state else initial
    assert not check(result.window, initial=start).linearizable
    if len(result.window) <= 8:  # the brute force is exponential
        if result.window_from_unknown_state:
            assert fails_from_any_value(result.window)
        else:
            assert not brute_force(result.window, dict(initial or {}))
    text = result.describe()
    assert "NOT linearizable" in text and repr(key) in text
    assert len(text.splitlines()) == 2 + len(result.window)
    return result


def assert_linearizable(history: Sequence[Operation], **kw: Any) -> None:
    result = check(history, **kw)
    assert result.linearizable, result.describe()
    assert result.window == () and result.key is None
    assert result.describe().startswith("linearizable")


# -- histories with known verdicts ------------------------------------------------------


def test_empty_history() -> None:
    result = check([])
    assert result.linearizable and result.keys_checked == 0 and result.operations == 0


def test_sequential() -> None:
    assert_linearizable(
        [
            get("x", None, 0, 1),
            set_("x", "a", 2, 3),
            get("x", "a", 4, 5),
            delete("x", True, 6, 7),
            get("x", None, 8, 9),
            delete("x", False, 10, 11),
            cas("x", None, "b", True, 12, 13),
            cas("x", "a", "c", False, 14, 15),
            get("x", "b", 16, 17),
        ]
    )


@pytest.mark.parametrize("seen", ["a", "b"])
def test_overlapping_writes_may_be_read_either_way(seen: str) -> None:
    assert_linearizable(
        [
            set_("x", "a", 0, 10, client=0),
            set_("x", "b", 1, 11, client=1),
            get("x", seen, 12, 13, client=2),
            get("x", seen, 14, 15, client=0),
        ]
    )


@pytest.mark.parametrize("seen", ["a", "b"])
def test_read_during_a_write_sees_old_or_new(seen: str) -> None:
    assert_linearizable(
        [
            set_("x", "a", 0, 1, client=0),
            set_("x", "b", 2, 10, client=0),
            get("x", seen, 3, 4, client=1),
            get("x", "b", 11, 12, client=1),
        ]
    )


def test_concurrent_cas_one_wins() -> None:
    assert_linearizable(
        [
            set_("x", "a", 0, 1),
            cas("x", "a", "b", False, 2, 5, client=1),
            cas("x", "a", "c", True, 3, 6, client=2),
            get("x", "c", 7, 8),
        ]
    )


def test_unknown_write_that_took_effect() -> None:
    assert_linearizable([set_("x", "a", 0, 1), set_("x", "b", 2, None), get("x", "b", 3, 4)])


def test_unknown_write_that_did_not_take_effect() -> None:
    assert_linearizable([set_("x", "a", 0, 1), set_("x", "b", 2, None), get("x", "a", 3, 4)])


def test_unknown_write_taking_effect_late() -> None:
    assert_linearizable(
        [
            set_("x", "a", 0, 1),
            set_("x", "b", 2, None, client=1),
            get("x", "a", 3, 4),
            cas("x", "a", "c", True, 5, 6),
            get("x", "b", 100, 101),
        ]
    )


def test_unknown_delete_and_cas() -> None:
    history = [
        set_("x", "a", 0, 1),
        delete("x", True, 2, None, client=1),
        cas("x", None, "b", True, 3, None, client=2),
    ]
    for seen in ("a", None, "b"):
        assert_linearizable([*history, get("x", seen, 10, 11)])


def test_unknown_get_is_ignored() -> None:
    assert_linearizable([set_("x", "a", 0, 1), get("x", "never written", 2, None)])


def test_initial_values() -> None:
    history = [get("x", "a", 0, 1), delete("x", True, 2, 3), get("y", None, 0, 1)]
    assert_linearizable(history, initial={"x": "a"})
    assert not check(history).linearizable


def test_equal_times_are_concurrent() -> None:
    assert_linearizable([set_("x", "a", 0, 1, client=0), get("x", None, 1, 2, client=1)])


def test_keys_are_independent() -> None:
    assert_linearizable(
        [
            set_("x", "a", 0, 10, client=0),
            set_("y", "b", 1, 2, client=1),
            get("y", "b", 3, 4, client=1),
            get("x", None, 5, 6, client=2),
            get("x", "a", 11, 12, client=2),
        ]
    )


def test_stale_read_after_a_completed_write() -> None:
    bad = get("x", "a", 4, 5)
    assert_violation(
        [set_("x", "a", 0, 1), set_("x", "b", 2, 3), bad],
        max_window=2,
        offending=[bad, set_("x", "b", 2, 3)],
    )


def test_read_of_a_value_never_written() -> None:
    bad = get("x", "zz", 2, 3)
    assert_violation([set_("x", "a", 0, 1), bad], max_window=2, offending=[bad])


def test_read_contradicting_the_initial_value() -> None:
    bad = get("x", None, 0, 1)
    result = assert_violation(
        [bad, set_("x", "b", 2, 3)], initial={"x": "a"}, max_window=1, offending=[bad]
    )
    assert not result.window_from_unknown_state


def test_lost_cas() -> None:
    first, second = cas("x", "a", "b", True, 2, 5, client=1), cas("x", "a", "c", True, 3, 6)
    assert_violation([set_("x", "a", 0, 1), first, second], max_window=3, offending=[first, second])


def test_cas_refused_when_it_should_swap() -> None:
    bad = cas("x", "a", "b", False, 2, 3)
    assert_violation([set_("x", "a", 0, 1), bad], max_window=2, offending=[bad])


def test_delete_twice() -> None:
    bad = delete("x", True, 4, 5)
    assert_violation(
        [set_("x", "a", 0, 1), delete("x", True, 2, 3), bad], max_window=2, offending=[bad]
    )


def test_new_value_then_old_one() -> None:
    new, old = get("x", "b", 3, 4, client=1), get("x", "a", 5, 6, client=1)
    assert_violation(
        [set_("x", "a", 0, 1), set_("x", "b", 2, 10), new, old],
        max_window=3,
        offending=[new, old],
    )


def test_unknown_write_seen_then_unseen() -> None:
    new, old = get("x", "b", 3, 4, client=1), get("x", "a", 5, 6, client=1)
    result = assert_violation(
        [set_("x", "a", 0, 1), set_("x", "b", 2, None), new, old],
        max_window=3,
        offending=[new, old],
    )
    assert "?" in result.describe()


def test_violation_at_equal_time_boundary() -> None:
    bad = get("x", None, 1.5, 2)
    assert_violation([set_("x", "a", 0, 1), bad], max_window=2, offending=[bad])


def test_describe() -> None:
    history = [set_("x", "a", 0, 1, client=1), set_("x", "b", 1.5, None, client=2)]
    history += [get("x", "zz", 2, 3.25, client=3), cas("x", "a", "c", True, 2.5, 4)]
    result = check(history)
    assert result.describe().splitlines() == [
        "NOT linearizable: key 'x' (4 operations, 1 keys checked)",
        "smallest failing window: 4 operations, from an unknown value of the key:",
        "  [0.000000 .. 1.000000] client 1: set('a') -> None",
        "  [1.500000 .. ?] client 2: set('b') -> ?",
        "  [2.000000 .. 3.250000] client 3: get() -> 'zz'",
        # Called before the read returned, so in the window, but it returned after.
        "  [2.500000 .. ?] client 0: cas('a', 'c') -> ?",
    ]
    assert check(history[:2]).describe() == "linearizable: 2 operations on 1 keys"


def test_first_failing_key_in_sorted_order() -> None:
    history = [
        set_("b", "1", 0, 1),
        get("b", "2", 2, 3),
        set_("a", "1", 0, 1),
        get("a", "2", 2, 3),
        set_("c", "1", 0, 1),
    ]
    result = assert_violation(history, key="a", max_window=2)
    assert result.keys_checked == 1


def test_violation_only_the_initial_value_reveals() -> None:
    # Refused cas operations say nothing about the value, so only the start shows the
    # final read wrong: the window is the whole history, from the initial value.
    history = [cas("x", "zz", "q", False, 2 * t, 2 * t + 1) for t in range(80)]
    bad = get("x", None, 200, 201)
    result = assert_violation(
        [*history, bad], initial={"x": "a"}, max_window=81, offending=[bad, history[0]]
    )
    assert not result.window_from_unknown_state
    assert_linearizable([*history, get("x", "a", 200, 201)], initial={"x": "a"})


def test_window_after_a_long_linearizable_run() -> None:
    history = simulate(3, 600, clients=3, keys=1, unknown=4)
    broken = stale_read(history[-100:])
    assert broken is not None
    tail, bad = broken
    history = history[:-100] + tail
    result = assert_violation(history, key="k0", max_window=25, offending=[bad])
    assert result.window_from_unknown_state


# -- malformed input ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "op",
    [
        Operation(0, "incr", "x", None, None, 0, 1),
        Operation(0, "set", "x", 5, None, 0, 1),
        Operation(0, "set", "x", None, None, 0, 1),
        Operation(0, "get", "x", "a", None, 0, 1),
        Operation(0, "cas", "x", ["a"], True, 0, 1),
        Operation(0, "cas", "x", ["a", None], True, 0, 1),
        Operation(0, "cas", "x", "ab", True, 0, 1),
        Operation(0, "delete", "x", None, "yes", 0, 1),
        Operation(0, "set", "x", "a", None, 2, 1),
        Operation(0, "set", "x", "a", None, math.nan, 1),
    ],
)
def test_malformed_operations_are_refused(op: Operation) -> None:
    with pytest.raises(ValueError):
        check([set_("x", "a", 0, 1), op])


# -- saving and loading -----------------------------------------------------------------


def test_save_load_round_trip(tmp_path: Path) -> None:
    history = simulate(5, 300, clients=4, keys=2, unknown=10)
    assert any(o.ret is None for o in history) and any(o.op == "cas" for o in history)
    path = tmp_path / "history.jsonl"
    save_history(history, path)
    assert len(path.read_text().splitlines()) == len(history)
    assert load_history(path) == history
    assert load_history(str(path)) == history


@pytest.mark.parametrize(
    "bad_line",
    [
        "{not json",
        "[1, 2]",
        '{"client": 0, "op": "set", "key": "x", "input": "a", "output": null, "call": 0}',
        '{"client": 0, "op": "nop", "key": "x", "input": null, "output": null,'
        ' "call": 0, "ret": 1}',
        '{"client": 0, "op": "set", "key": "x", "input": "a", "output": null,'
        ' "call": "0", "ret": 1}',
    ],
)
def test_load_names_the_malformed_line(tmp_path: Path, bad_line: str) -> None:
    path = tmp_path / "history.jsonl"
    save_history([set_("x", "a", 0, 1)], path)
    path.write_text(path.read_text() + "\n" + bad_line + "\n")
    with pytest.raises(ValueError, match="line 3"):
        load_history(path)


# -- properties -------------------------------------------------------------------------

VALUES = ["a", "b", "c"]


@st.composite
def small_histories(draw: st.DrawFn) -> tuple[list[Operation], dict[str, str]]:
    keys = ["x", "y"][: draw(st.integers(1, 2))]
    initial = draw(st.dictionaries(st.sampled_from(keys), st.sampled_from(VALUES), max_size=2))
    shapes: list[tuple[str, str, Any, int, int | None]] = []
    for _ in range(draw(st.integers(1, 7))):
        op = draw(st.sampled_from(["set", "get", "delete", "cas"]))
        key = draw(st.sampled_from(keys))
        inp: Any = None
        if op == "set":
            inp = draw(st.sampled_from(VALUES))
        elif op == "cas":
            inp = [draw(st.sampled_from([None, *VALUES])), draw(st.sampled_from(VALUES))]
        call = draw(st.integers(0, 8))
        ret = None if draw(st.integers(0, 4)) == 0 else call + draw(st.integers(0, 4))
        shapes.append((op, key, inp, call, ret))
    # Outputs from running the operations in some order, real time or not: that gives
    # a good share of both verdicts. Then perhaps a few wrong outputs.
    n = len(shapes)
    state: dict[str, str | None] = dict(initial)
    outputs: list[Any] = [None] * n
    for i in draw(st.permutations(range(n))):
        op, key, inp, _, _ = shapes[i]
        current = state.get(key)
        if op == "set":
            state[key] = inp
        elif op == "get":
            outputs[i] = current
        elif op == "delete":
            outputs[i], state[key] = current is not None, None
        else:
            outputs[i] = current == inp[0]
            state[key] = inp[1] if outputs[i] else current
    for i in draw(st.lists(st.integers(0, n - 1), max_size=2)):
        if shapes[i][0] == "get":
            outputs[i] = draw(st.sampled_from([None, *VALUES]))
        elif shapes[i][0] != "set":
            outputs[i] = not outputs[i]
    history = [
        Operation(i, op, key, inp, outputs[i], float(call), None if ret is None else float(ret))
        for i, (op, key, inp, call, ret) in enumerate(shapes)
    ]
    return history, initial


@settings(max_examples=400, deadline=None)
@given(small_histories())
def test_agrees_with_brute_force(case: tuple[list[Operation], dict[str, str]]) -> None:
    history, initial = case
    expected = brute_force(history, initial)
    result = check(history, initial=initial)
    assert result.linearizable == expected, result.describe()
    if not expected:
        start = None if result.window_from_unknown_state else initial
        assert not check(result.window, initial=start).linearizable
        assert all(w.key == result.key for w in result.window)
        if result.window_from_unknown_state:
            assert fails_from_any_value(result.window)
        else:
            assert not brute_force(result.window, initial)


@st.composite
def one_key_histories(draw: st.DrawFn) -> tuple[list[Operation], str | None]:
    """Up to 8 operations on one key, half of them of unknown completion, any outputs."""
    history = []
    for client in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["set", "set", "get", "get", "delete", "cas"]))
        inp: Any = None
        output: Any = None
        if op == "set":
            inp = draw(st.sampled_from(VALUES))
        elif op == "cas":
            inp = [draw(st.sampled_from([None, "a", "b"])), draw(st.sampled_from(VALUES))]
        if op == "get":
            output = draw(st.sampled_from([None, *VALUES]))
        elif op != "set":
            output = draw(st.booleans())
        call = draw(st.integers(0, 6))
        ret = None if draw(st.booleans()) else float(call + draw(st.integers(0, 3)))
        history.append(Operation(client, op, "x", inp, output, float(call), ret))
    return history, draw(st.sampled_from([None, "a", "c"]))


@settings(max_examples=300, deadline=None)
@given(one_key_histories())
def test_unknown_completions_agree_with_brute_force(
    case: tuple[list[Operation], str | None],
) -> None:
    history, start = case
    initial = {} if start is None else {"x": start}
    expected = brute_force(history, initial)
    result = check(history, initial=initial)
    assert result.linearizable == expected, result.describe()
    if not expected:
        if result.window_from_unknown_state:
            assert fails_from_any_value(result.window)
        else:
            assert not brute_force(result.window, initial)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32),
    n_ops=st.integers(1, 300),
    clients=st.integers(1, 8),
    keys=st.integers(1, 3),
    unknown=st.integers(0, 6),
    grid=st.sampled_from([0.0, 0.5, 1.0]),
)
# Once took 30 s: a wrong early choice, then every order of 20 concurrent operations.
@example(seed=3574464663, n_ops=265, clients=8, keys=1, unknown=4, grid=1.0)
def test_simulated_histories_are_linearizable(
    seed: int, n_ops: int, clients: int, keys: int, unknown: int, grid: float
) -> None:
    initial = {"k0": "initial"}
    history = simulate(
        seed, n_ops, clients=clients, keys=keys, unknown=unknown, initial=initial, grid=grid
    )
    assert_linearizable(history, initial=initial)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32),
    n_ops=st.integers(2, 120),
    clients=st.integers(1, 6),
    keys=st.integers(1, 2),
    unknown=st.integers(0, 4),
    grid=st.sampled_from([0.0, 1.0]),
    data=st.data(),
)
def test_reported_window_fails_on_its_own(
    seed: int, n_ops: int, clients: int, keys: int, unknown: int, grid: float, data: st.DataObject
) -> None:
    history = simulate(seed, n_ops, clients=clients, keys=keys, unknown=unknown, grid=grid)
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(history) - 1))
        o = history[i]
        if o.op == "get":
            output = data.draw(st.sampled_from([None, "v0", f"v{i // 2}", "bogus"]))
        elif o.op in ("cas", "delete"):
            output = not o.output
        else:
            continue
        history[i] = replace(o, output=output)
    result = check(history)
    if result.linearizable:
        return
    window = result.window
    assert window and all(any(same_op(w, o) for o in history) for w in window)
    assert not check(window).linearizable
    if len(window) <= 7:
        if result.window_from_unknown_state:
            assert fails_from_any_value(window)
        else:
            assert not brute_force(window, {})


def test_medium_history_and_one_corrupted_read() -> None:
    history = simulate(11, 3000, clients=10, keys=3, unknown=12)
    assert_linearizable(history)
    i = next(i for i in range(2000, len(history)) if history[i].op == "get" and history[i].ret)
    bad = replace(history[i], output="bogus")
    broken = [*history[:i], bad, *history[i + 1 :]]
    assert_violation(broken, key=bad.key, max_window=60, offending=[bad])


@pytest.mark.parametrize("patience", [0, 3])
def test_giving_up_on_a_stuck_search_changes_no_verdict(
    monkeypatch: pytest.MonkeyPatch, patience: int
) -> None:
    # The first search gives up when its frontier stops moving, to look for a window
    # there; with no patience at all, every path of that fallback is taken.
    monkeypatch.setattr(linearizability, "_PATIENCE", patience)
    history = simulate(21, 800, clients=8, keys=2, unknown=8, grid=0.5)
    assert_linearizable(history)
    found = stale_read(history[500:])
    assert found is not None
    tail, bad = found
    assert_violation(history[:500] + tail, key=bad.key, max_window=80, offending=[bad])
    history = [cas("x", "zz", "q", False, 2 * t, 2 * t + 1) for t in range(80)]
    assert_violation([*history, get("x", None, 200, 201)], initial={"x": "a"}, max_window=81)


def test_medium_history_with_a_stale_read() -> None:
    history = simulate(12, 3000, clients=10, keys=3, unknown=12)
    found = stale_read(history[2000:])
    assert found is not None
    tail, bad = found
    assert_violation(history[:2000] + tail, key=bad.key, max_window=60, offending=[bad])


# -- benchmark ----------------------------------------------------------------------------


def main() -> None:
    n_ops = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    for keys in (5, 1):
        history = simulate(1, n_ops, clients=10, keys=keys, unknown=40)
        unknown = sum(o.ret is None for o in history)
        start = time.perf_counter()
        result = check(history)
        elapsed = time.perf_counter() - start
        print(
            f"{n_ops} ops, 10 clients, {keys} keys, {unknown} unknown: "
            f"{result.describe().splitlines()[0]} in {elapsed:.2f} s"
        )
        found = stale_read(history[-len(history) // 4 :])
        if found is not None:
            tail, _ = found
            broken = history[: -len(history) // 4] + tail
            start = time.perf_counter()
            result = check(broken)
            elapsed = time.perf_counter() - start
            print(f"  with a stale read: {len(result.window)}-op window in {elapsed:.2f} s")


if __name__ == "__main__":
    main()

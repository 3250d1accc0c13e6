"""raft_trio.fs.Namespace against a small model of a POSIX tree (tests/fs_model.py).

Random sequences of namespace operations (mkdir with and without parents,
whole writes and pending ones step by step, overwrites, deletes, every case of
rename, chmod, truncate, aborts, malformed commands, runs through
apply_batch) are applied to both; after every step every result and errno
must agree and every path of the small universe must answer stat, readdir
(whole and page by page), chunks and du the same, as must the allocation and
writes queries and the canonical listing. At random points the namespace is
snapshotted and replaced by its restored copy, and captures are taken and
written later, after more commands, to show they keep the state of their
moment.
"""

from __future__ import annotations

import io
from itertools import product
from typing import Any

from fs_model import ERR, MDir, Model, keyed, parent_of
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)

from raft_trio.fs import Namespace

NAMES = ["a", "b"]
UNIVERSE = ["/", *("/" + "/".join(p) for n in (1, 2, 3) for p in product(NAMES, repeat=n))]
CHUNK_SIZE = 8

paths = st.sampled_from(UNIVERSE)
modes = st.sampled_from([0o755, 0o644, 0o700, 0])
node_ids = st.lists(st.sampled_from([0, 1, 2, "x", "y"]), min_size=1, max_size=3, unique=True)
bad_paths = st.sampled_from(["", "a", "/a/", "//", "/a//b", "/./a", "/a/..", "/a/.", "/a\0b", 7,
                             None, ["/a"], "/" + "x" * 256, "/" + "/".join(["d"] * 2100)])
# Commands of every shape that is not a valid one (after the op name, any values).
malformed = st.one_of(
    st.none(), st.integers(), st.text(max_size=5), st.just([]),
    st.dictionaries(st.text(), st.integers()),
    st.lists(st.one_of(st.none(), st.integers(), st.text(max_size=3), st.booleans(),
                       st.floats(allow_nan=False), st.lists(st.integers(), max_size=2)),
             max_size=9),
    st.tuples(st.sampled_from(["mkdir", "create", "allocate_chunk", "commit_chunk",
                               "complete_file", "abort_write", "delete", "rename", "chmod",
                               "truncate", "stat", "nope"]),
              st.lists(st.one_of(st.none(), st.integers(-2, 2**65), st.text(max_size=4),
                                 st.booleans(), st.floats(allow_nan=False), paths, bad_paths,
                                 st.lists(st.integers(-1, 3), max_size=3)),
                       max_size=8)).map(lambda t: [t[0], *t[1]]),
)


def shape(result: Any) -> Any:
    """A result with an fs-error's message dropped (the model has no messages)."""
    if isinstance(result, list) and len(result) == 3 and result[0] == ERR:
        assert isinstance(result[1], str) and isinstance(result[2], str) and result[2]
        return [ERR, result[1]]
    return result


def is_error(result: Any) -> bool:
    return isinstance(result, list) and result[:1] == [ERR]


QUERIES = ("stat", "chunks", "du")


class NamespaceMachine(RuleBasedStateMachine):
    writes = Bundle("writes")

    def __init__(self) -> None:
        super().__init__()
        self.ns = Namespace()
        self.model = Model()
        self.now = 0
        self.next_id = 1000
        self.captures: list[tuple[Any, dict[tuple[str, Any], list[Any]]]] = []

    def tick(self) -> int:
        self.now += 1
        return self.now

    def fresh_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def both(self, command: list[Any]) -> Any:
        got = self.ns.apply(command)
        want = self.model.apply(command)
        assert shape(got) == want, f"{command}: got {got}, want {want}"
        event(f"{command[0]}: {want[1] if is_error(want) else 'ok'}")
        return got

    # ------------------------------------------------------------- commands

    def pick(self, data: st.DataObject, fresh: bool = False) -> str:
        """A path: mostly one that exists (or, if `fresh`, a new name in an existing directory),
        sometimes any of the universe, so that most commands find something to act on."""
        kind = data.draw(st.integers(0, 9))
        if kind < 2:
            return data.draw(paths)
        if kind < 5 or fresh:
            dirs = sorted(p for p, n in self.model.nodes.items() if isinstance(n, MDir))
            parent = data.draw(st.sampled_from(dirs))
            return parent.rstrip("/") + "/" + data.draw(st.sampled_from(NAMES))
        existing = sorted(self.model.nodes)
        return data.draw(st.sampled_from(existing[1:] or existing))

    @rule(data=st.data(), parents=st.booleans(), mode=modes)
    def mkdir(self, data: st.DataObject, parents: bool, mode: int) -> None:
        path = self.pick(data, fresh=data.draw(st.booleans()))
        if parents and data.draw(st.booleans()):
            path = path.rstrip("/") + "/" + data.draw(st.sampled_from(NAMES))
        self.both(["mkdir", path, parents, mode, self.tick()])

    @rule(data=st.data(), exclusive=st.booleans(), replication=st.integers(1, 3),
          lengths=st.lists(st.integers(1, CHUNK_SIZE), max_size=3), nodes=node_ids)
    def write_file(self, data: st.DataObject, exclusive: bool, replication: int,
                   lengths: list[int], nodes: list[Any]) -> None:
        path = self.pick(data, fresh=data.draw(st.booleans()))
        write_id = self.fresh_id()
        got = self.both(["create", path, write_id, exclusive, 0o640, replication, CHUNK_SIZE,
                         self.tick()])
        if got is not None:
            return
        for index, length in enumerate(lengths):
            chunk_id = self.fresh_id()
            self.both(["allocate_chunk", write_id, index, chunk_id, nodes[:replication],
                       self.tick()])
            self.both(["commit_chunk", write_id, index, chunk_id, length, f"crc32:{chunk_id:08x}",
                       self.tick()])
        if is_error(self.both(["complete_file", write_id, sum(lengths), self.tick()])):
            self.both(["abort_write", write_id])

    @rule(target=writes, data=st.data(), exclusive=st.booleans(),
          replication=st.integers(1, 3))
    def start_write(self, data: st.DataObject, exclusive: bool, replication: int) -> int:
        path = self.pick(data, fresh=data.draw(st.booleans()))
        write_id = self.fresh_id()
        self.both(["create", path, write_id, exclusive, 0o600, replication, CHUNK_SIZE,
                   self.tick()])
        return write_id

    @rule(write_id=writes | st.just(999), index=st.integers(0, 3), nodes=node_ids,
          reuse=st.booleans())
    def allocate(self, write_id: int, index: int, nodes: list[Any], reuse: bool) -> None:
        chunk_id = self.fresh_id()
        pending = [s[0] for w in self.model.writes.values() for s in w.slots]
        if reuse and pending:
            chunk_id = pending[len(pending) // 2]
        self.both(["allocate_chunk", write_id, index, chunk_id, nodes, self.tick()])

    @rule(write_id=writes | st.just(999), index=st.integers(0, 3),
          length=st.integers(1, CHUNK_SIZE + 1), wrong=st.booleans())
    def commit(self, write_id: int, index: int, length: int, wrong: bool) -> None:
        w = self.model.writes.get(write_id)
        chunk_id = 5 if w is None or index >= len(w.slots) else w.slots[index][0] + wrong
        self.both(["commit_chunk", write_id, index, chunk_id, length, "crc32:0000abcd",
                   self.tick()])

    @rule(write_id=writes | st.just(999), delta=st.sampled_from([0, 0, 0, 1, -1]))
    def complete(self, write_id: int, delta: int) -> None:
        w = self.model.writes.get(write_id)
        size = sum(s[2] or 0 for s in w.slots) if w else 0
        self.both(["complete_file", write_id, max(0, size + delta), self.tick()])

    @rule(write_id=writes | st.just(999))
    def abort(self, write_id: int) -> None:
        self.both(["abort_write", write_id])

    @rule(data=st.data(), recursive=st.booleans())
    def delete(self, data: st.DataObject, recursive: bool) -> None:
        self.both(["delete", self.pick(data), recursive, self.tick()])

    @rule(data=st.data())
    def rename(self, data: st.DataObject) -> None:
        src = self.pick(data)
        how = data.draw(st.sampled_from(["any", "new", "inside", "parent"]))
        if how == "new":
            dst = self.pick(data, fresh=True)
        elif how == "inside":
            dst = src.rstrip("/") + "/" + data.draw(st.sampled_from(NAMES))
        elif how == "parent":
            dst = parent_of(src)
        else:
            dst = self.pick(data)
        nodes = self.model.nodes
        kinds = [type(nodes.get(p)).__name__ for p in (src, dst)]
        result = self.both(["rename", src, dst, self.tick()])
        event(f"rename {how} {kinds[0]} onto {kinds[1]}: {'ok' if result is None else result[1]}")

    @rule(data=st.data(), mode=modes)
    def chmod(self, data: st.DataObject, mode: int) -> None:
        self.both(["chmod", self.pick(data), mode, self.tick()])

    @rule(data=st.data(), shrink=st.integers(-1, 2 * CHUNK_SIZE))
    def truncate(self, data: st.DataObject, shrink: int) -> None:
        path = self.pick(data)
        node = self.model.nodes.get(path)
        size = getattr(node, "size", 3)
        self.both(["truncate", path, max(0, size - shrink), self.tick()])

    @rule(op=st.sampled_from(["mkdir", "create", "delete", "rename", "rename2", "chmod",
                              "truncate", "stat", "readdir", "chunks", "du"]),
          path=bad_paths)
    def bad_path(self, op: str, path: Any) -> None:
        before = self.ns.page(0, 10**6)
        now = self.tick()
        command = {
            "mkdir": ["mkdir", path, True, 0o755, now],
            "create": ["create", path, self.fresh_id(), False, 0o644, 1, CHUNK_SIZE, now],
            "delete": ["delete", path, True, now],
            "rename": ["rename", path, "/a", now],
            "rename2": ["rename", "/a", path, now],
            "chmod": ["chmod", path, 0o700, now],
            "truncate": ["truncate", path, 0, now],
            "stat": ["stat", path],
            "readdir": ["readdir", path, "", 10],
            "chunks": ["chunks", path],
            "du": ["du", path],
        }[op]
        result = self.ns.query(command) if op in ("stat", "readdir", "chunks", "du") \
            else self.ns.apply(command)
        assert shape(result) in ([ERR, "EINVAL"], [ERR, "ENAMETOOLONG"]), (command, result)
        assert self.ns.page(0, 10**6) == before

    @rule(command=malformed)
    def malformed_command(self, command: Any) -> None:
        before = self.ns.page(0, 10**6)
        result = self.ns.apply(command)
        query = self.ns.query(command)
        if shape(result) != [ERR, "EINVAL"] or shape(query) != [ERR, "EINVAL"]:
            # Valid by chance: then the model must agree with it.
            want = self.model.apply(command)
            assert shape(result) == want, (command, result, want)
            return
        assert self.ns.page(0, 10**6) == before

    @rule(data=st.data(), count=st.integers(1, 8))
    def batch(self, data: st.DataObject, count: int) -> None:
        """A run of commands through apply_batch gives what the model gives one by one."""
        commands = []
        for _ in range(count):
            kind = data.draw(st.sampled_from(["mkdir", "delete", "rename", "chmod", "create",
                                              "malformed"]))
            now = self.tick()
            if kind == "mkdir":
                commands.append(["mkdir", data.draw(paths), data.draw(st.booleans()), 0o711, now])
            elif kind == "delete":
                commands.append(["delete", data.draw(paths), data.draw(st.booleans()), now])
            elif kind == "rename":
                commands.append(["rename", data.draw(paths), data.draw(paths), now])
            elif kind == "chmod":
                commands.append(["chmod", data.draw(paths), 0o701, now])
            elif kind == "create":
                write_id = self.fresh_id()
                commands += [["create", data.draw(paths), write_id, False, 0o600, 1, CHUNK_SIZE,
                              now], ["complete_file", write_id, 0, now]]
            else:
                commands.append(["nope", data.draw(paths)])
        got = self.ns.apply_batch(commands)
        want = [self.model.apply(c) for c in commands]
        assert [shape(g) for g in got] == want

    # ------------------------------------------------------------- snapshots

    @rule()
    def snapshot_and_restore(self) -> None:
        out = io.BytesIO()
        self.ns.snapshot(out)
        restored = Namespace()
        restored.restore(io.BytesIO(out.getvalue()))
        assert restored.page(0, 10**6) == self.ns.page(0, 10**6)
        for path in UNIVERSE:
            for query in ([q, path] for q in QUERIES):
                assert restored.query(query) == self.ns.query(query)
            assert restored.query(["readdir", path, "", 1000]) == \
                self.ns.query(["readdir", path, "", 1000])
        self.ns = restored  # and go on with the restored one

    @rule()
    def capture(self) -> None:
        self.captures.append((self.ns.capture_snapshot(), self.model.listing()))

    @precondition(lambda self: self.captures)
    @rule(which=st.integers(0, 3))
    def write_capture(self, which: int) -> None:
        write_state, listing = self.captures.pop(which % len(self.captures))
        out = io.BytesIO()
        write_state(out)
        restored = Namespace()
        restored.restore(io.BytesIO(out.getvalue()))
        assert keyed(restored.page(0, 10**6)) == listing

    # ------------------------------------------------------------- checks

    @invariant()
    def same_answers(self) -> None:
        ns, model = self.ns, self.model
        for path in UNIVERSE:
            for query in ([q, path] for q in QUERIES):
                assert shape(ns.query(query)) == model.query(query), query
            whole = ns.query(["readdir", path, "", 1000])
            assert shape(whole) == model.query(["readdir", path, "", 1000]), path
            if not is_error(whole):
                paged, after = [], ""
                while page := ns.query(["readdir", path, after, 2]):
                    paged += page
                    after = page[-1][0]
                assert paged == whole
        for chunk_id in range(1000, self.next_id + 2):
            assert ns.query(["allocation", chunk_id]) == model.query(["allocation", chunk_id])
        assert ns.query(["writes", -1, 1000]) == model.query(["writes", -1, 1000])
        listed = ns.page(0, 10**6)
        assert keyed(listed) == model.listing()
        paged = []
        while page := ns.page(len(paged), 3):
            paged += page
        assert paged == listed


NamespaceMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=60, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestNamespaceAgainstModel = NamespaceMachine.TestCase

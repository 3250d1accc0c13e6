"""A whole raft-trio file system in one program: three metadata members, three data
nodes, and a client writing, reading, listing and renaming.

    python examples/filesystem.py

In production each member and each data node is its own process on its own
machine (`raft-trio serve --state-machine fs`, `raft-trio datanode`); here they
share one Trio nursery.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import trio

import raft_trio.fs
from raft_trio.fs.members import metadata_member, serve_datanode

META = {1: "127.0.0.1:7201", 2: "127.0.0.1:7202", 3: "127.0.0.1:7203"}
DATA = {1: "127.0.0.1:7211", 2: "127.0.0.1:7212", 3: "127.0.0.1:7213"}


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        async with trio.open_nursery() as nursery:
            for i in META:
                await nursery.start(metadata_member(i, META, root / f"meta-{i}").serve)
            for i, address in DATA.items():
                await nursery.start(partial(serve_datanode, i, address, root / f"data-{i}",
                                            list(META.values()), heartbeat=0.2))

            async with raft_trio.fs.connect(list(META.values())) as fs:
                await fs.wait_for_datanodes(3)  # until all three have reported
                await fs.mkdir("/photos/2026", parents=True)
                picture = bytes(range(256)) * 40_000  # 10 MB: three chunks of 4 MiB
                stat = await fs.write_file("/photos/2026/cat.raw", picture)
                print(f"wrote {stat['size']} bytes in {stat['chunks']} chunks, "
                      f"{stat['replicas']} replicas each")
                assert await fs.read_file("/photos/2026/cat.raw") == picture
                print("read it back from the data nodes")

                async def lines() -> AsyncIterator[bytes]:
                    for n in range(3):
                        yield f"line {n}\n".encode()

                await fs.write_file("/notes.txt", lines())  # from an async iterable
                await fs.rename("/photos/2026/cat.raw", "/photos/cat.raw")
                print("/photos:", await fs.listdir("/photos"))
                print("/notes.txt:", (await fs.read_file("/notes.txt")).decode().split("\n")[:3])
                try:
                    await fs.delete("/photos")
                except OSError as exc:
                    print("delete /photos:", exc.strerror)
                await fs.delete("/photos", recursive=True)
                print("/:", await fs.listdir("/"))

            nursery.cancel_scope.cancel()
    print("everything stopped")


if __name__ == "__main__":
    trio.run(main)

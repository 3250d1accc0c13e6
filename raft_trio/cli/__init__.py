"""The `raft-trio` command line: serve, kv, status, members, snapshot, stress, chaos.

One module per command group; app.py puts them together and holds main(), the
entry point (`raft_trio.cli:main`).
"""

from raft_trio.cli.app import app, main

__all__ = ["app", "main"]

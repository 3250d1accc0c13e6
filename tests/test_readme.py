"""The README's promises that can be run: its embedding snippet and its two commands."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from stress.cluster import free_ports

README = Path(__file__).resolve().parent.parent / "README.md"


def _python_block_after(heading: str) -> str:
    text = README.read_text()
    section = text[text.index(heading):]
    match = re.search(r"```python\n(.*?)```", section, flags=re.S)
    assert match is not None, f"no python block after {heading!r}"
    return match.group(1)


def test_the_embedding_snippet_runs_as_written(tmp_path: Path) -> None:
    snippet = _python_block_after("## Embedding in a Trio program")
    assert "127.0.0.1:7001" in snippet
    # The one change: a free port, so that the test never collides with anything.
    (port,) = free_ports(1)
    script = tmp_path / "snippet.py"
    script.write_text(snippet.replace("127.0.0.1:7001", f"127.0.0.1:{port}"))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines() == ["hello", "1 True"], proc.stdout


def test_the_first_screen_gives_the_two_commands() -> None:
    first_screen = "\n".join(README.read_text().splitlines()[:40])
    assert "$ make stress" in first_screen
    assert "$ make test" in first_screen

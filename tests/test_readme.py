"""Every top-level ```python block of README.md runs as written, each in a fresh interpreter in an
empty directory (blocks indented inside a list item, such as the torchrun example, need a launcher
and are not run)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[1] / "README.md"


def blocks() -> list[tuple[str, str]]:
    """(section heading and block number, code) of every unindented python block."""
    out, heading, count = [], "top", {}
    lines = README.read_text().splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        if line == "```python":
            j = lines.index("```", i + 1)
            count[heading] = count.get(heading, 0) + 1
            out.append((f"{heading} #{count[heading]}", "\n".join(lines[i + 1 : j])))
            i = j
        i += 1
    return out


def test_the_readme_has_python_blocks():
    names = [name for name, _ in blocks()]
    assert any(n.startswith("Your model") for n in names) and len(names) >= 4


@pytest.mark.parametrize("name, code", blocks(), ids=[re.sub(r"\W+", "-", n) for n, _ in blocks()])
def test_readme_block_runs(name, code, tmp_path):
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True
    )
    assert run.returncode == 0, f"README block {name!r} failed:\n{run.stderr[-3000:]}"

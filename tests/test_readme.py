"""Every top-level ```python block of README.md and of the docs' pages runs as written, each in a
fresh interpreter in an empty directory (blocks indented inside a list item, such as the torchrun
example, need a launcher and are not run)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def blocks() -> list[tuple[str, str]]:
    """(page, section heading and block number, code) of every unindented python block."""
    out = []
    for page in PAGES:
        heading, count = "top", {}
        lines = page.read_text().splitlines()
        i = 0
        while i < len(lines):
            line = lines[i]
            if line.startswith("#"):
                heading = line.lstrip("#").strip()
            if line == "```python":
                j = lines.index("```", i + 1)
                count[heading] = count.get(heading, 0) + 1
                name = f"{page.relative_to(ROOT)}: {heading} #{count[heading]}"
                out.append((name, "\n".join(lines[i + 1 : j])))
                i = j
            i += 1
    return out


def test_the_pages_have_python_blocks():
    names = [name for name, _ in blocks()]
    assert any(n.startswith("README.md: A short example") for n in names)
    assert any(n.startswith("docs/guide/your-model.md") for n in names) and len(names) >= 5


@pytest.mark.parametrize("name, code", blocks(), ids=[re.sub(r"\W+", "-", n) for n, _ in blocks()])
def test_readme_block_runs(name, code, tmp_path):
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, f"block {name!r} failed:\n{run.stderr[-3000:]}"

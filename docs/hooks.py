"""mkdocs hook: the pages show the figures the example scripts write to ``figures/`` (tracked
at the repository's top level, where the README shows them too) without a copy in ``docs/``."""

from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]


def on_files(files, config):
    for png in sorted((ROOT / "figures").rglob("*.png")):
        rel = png.relative_to(ROOT).as_posix()
        files.append(File(rel, src_dir=str(ROOT), dest_dir=config["site_dir"],
                          use_directory_urls=config["use_directory_urls"]))  # fmt: skip
    return files

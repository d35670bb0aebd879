"""The README stays a short front page and the docs stay true to the code.

The command-line reference is generated from the typer app by docs/hooks/reference.py; these
tests check what that page and the hand-written pages promise without building the site
(CI builds it with `mkdocs build --strict`; the last test does too where mkdocs is installed).
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FIRST_SCREEN = 50  # lines: what a reader sees before scrolling
# Flags the docs name that belong to other tools (benchmark scripts, pip, mkdocs), not the CLI.
OTHER_TOOLS_FLAGS = {"--help", "--stage", "--part", "--remeasure", "--strict"}
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def _reference() -> ModuleType:
    """docs/hooks/reference.py, the mkdocs hook that renders the generated pages."""
    spec = importlib.util.spec_from_file_location("docs_reference",
                                                  ROOT / "docs" / "hooks" / "reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cli() -> tuple[list[str], set[str], set[str]]:
    """The registered commands, every flag any of them takes, and the flags `--help` shows."""
    import typer

    from layergraft.cli import app

    root = typer.main.get_command(app)
    ctx = root.context_class(root, info_name="layergraft")
    names = root.list_commands(ctx)
    params = [param for name in names for param in root.get_command(ctx, name).params]
    flags = {flag for param in params for flag in (*param.opts, *param.secondary_opts)
             if flag.startswith("--")}
    shown = {flag for param in params if not param.hidden
             for flag in (*param.opts, *param.secondary_opts) if flag.startswith("--")}
    return names, flags, shown


def _pages() -> list[Path]:
    return [README, *sorted((ROOT / "docs").rglob("*.md"))]


def test_readme_is_a_short_front_page() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) < 150
    screen = "\n".join(lines[:FIRST_SCREEN])
    for command in ("./run demo", "./run test", "layergraft finetune", "layergraft compress",
                    "layergraft export", "layergraft bench"):
        assert command in screen, command
    # the table that proves it: graft against the best drop, 6-layer and 12-layer teachers
    assert "| graft | best drop |" in screen
    assert "6 layers" in screen and "12 layers" in screen


def test_relative_links_of_readme_and_docs_exist() -> None:
    generated = {"reference/cli.md", "reference/python.md", *_reference().benchmark_files()}
    for page in _pages():
        for target in LINK.findall(page.read_text(encoding="utf-8")):
            if "://" in target:
                continue
            resolved = (page.parent / target).resolve()
            in_site = resolved.relative_to(ROOT / "docs").as_posix() if resolved.is_relative_to(
                ROOT / "docs") else None
            assert resolved.exists() or in_site in generated, f"{page.name}: {target}"


def test_cli_reference_covers_every_command_and_option() -> None:
    page = _reference().cli_reference()
    names, flags, shown = _cli()
    assert len(names) >= 10
    for name in names:
        assert f"## `layergraft {name}`" in page, name
    assert shown <= set(FLAG.findall(page)) <= flags | {"--help"}


def test_docs_name_only_real_options() -> None:
    _, flags, _ = _cli()
    for page in _pages():
        unknown = set(FLAG.findall(page.read_text(encoding="utf-8"))) - flags - OTHER_TOOLS_FLAGS
        assert not unknown, f"{page.name} names options no command takes: {sorted(unknown)}"


def test_site_builds_strict(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "reference" / "cli" / "index.html").is_file()

"""mkdocs hook: pages generated at build time from the code, so they cannot drift from it.

- `reference/cli.md`: every command of the typer app (`layergraft.cli.app`) with its usage,
  arguments and options, from the same objects `layergraft COMMAND --help` prints;
- `reference/python.md`: the signature and docstring of every public function in `layergraft`;
- `BENCHMARKS.md`: the repository's generated results page, with the files it links to (its
  figures), so the site shows the numbers the README quotes without a second copy.

`tests/test_docs.py` imports `cli_reference` to check it without building the site.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = "BENCHMARKS.md"
_CODE_SPAN = re.compile(r"(`[^`]*`)")
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s#]+)[^)]*\)")


def _escape(text: str) -> str:
    """Markdown-safe help text: `<str>`, `*` and `_` stay literal, code spans stay code."""
    parts = _CODE_SPAN.split(text)
    for i in range(0, len(parts), 2):
        parts[i] = (parts[i].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
                    .replace("*", r"\*").replace("_", r"\_"))
    return "".join(parts)


def _commands(group: Any, ctx: Any, prefix: str) -> list[tuple[str, Any, Any]]:
    """(full name, command, context) of every visible command, sub-groups flattened."""
    found = []
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        sub = command.context_class(command, info_name=name, parent=ctx)
        if hasattr(command, "list_commands"):
            found += _commands(command, sub, f"{prefix} {name}")
        else:
            found.append((f"{prefix} {name}", command, sub))
    return found


def _params(command: Any, ctx: Any, kind: str) -> list[str]:
    """One bullet per visible argument or option of `kind`, as `--help` words it."""
    lines = []
    for param in command.params:
        record = None if param.hidden else param.get_help_record(ctx)
        if record and param.param_type_name == kind:
            lines.append(f"- `{record[0]}`: {_escape(record[1])}")
    return lines


def cli_reference() -> str:
    """The command-line reference page, rendered from the typer app."""
    import typer

    from layergraft.cli import app

    root = typer.main.get_command(app)
    ctx = root.context_class(root, info_name="layergraft")
    commands = _commands(root, ctx, "layergraft")
    out = ["# Command line", "",
           "Generated from the typer app (`layergraft.cli.app`) each time the site is built: "
           "the same usage, arguments, options and defaults as `layergraft COMMAND --help`.", "",
           _escape(root.help or ""), "", "| command | what it does |", "| --- | --- |"]
    for name, command, _ in commands:
        anchor = name.split(" ", 1)[1].replace(" ", "-")
        summary = (command.help or "").strip().split("\n\n")[0].replace("\n", " ")
        out.append(f"| [`{name}`](#{anchor}) | {_escape(summary).replace('|', '&#124;')} |")
    for name, command, sub in commands:
        anchor = name.split(" ", 1)[1].replace(" ", "-")
        out += ["", f"## `{name}` {{#{anchor}}}", "", _escape(inspect.cleandoc(command.help or "")),
                "", "```text", command.get_usage(sub), "```"]
        for kind, title in (("argument", "Arguments"), ("option", "Options")):
            lines = _params(command, sub, kind)
            if lines:
                out += ["", f"**{title}**", "", *lines]
    return "\n".join(out) + "\n"


class _Source(str):
    """An annotation kept as its source text (the package uses postponed annotations)."""

    def __repr__(self) -> str:
        return str(self)


def _signature(name: str, function: Any) -> str:
    """`def name(...)`, one parameter a line, annotations as written in the code."""
    signature = inspect.signature(function)
    params = []
    for p in signature.parameters.values():
        if p.kind is p.KEYWORD_ONLY and not any(x.startswith("*") for x in params):
            params.append("*")
        annotated = p.replace(annotation=_Source(p.annotation)) if isinstance(
            p.annotation, str) else p
        params.append(str(annotated))
    returns = signature.return_annotation
    arrow = "" if returns is inspect.Signature.empty else f" -> {returns}"
    return f"def {name}(\n" + "".join(f"    {p},\n" for p in params) + f"){arrow}"


def python_reference() -> str:
    """The Python API page: each public function's signature and docstring."""
    import layergraft

    out = ["# Python reference", "",
           "Generated from the code each time the site is built. Every command `layergraft X` "
           "is the function `layergraft.X`; see [the Python API](../python.md) for examples."]
    for name in layergraft.__all__:
        function = getattr(layergraft, name)
        out += ["", f"## `layergraft.{name}` {{#{name}}}", "", "```python",
                _signature(name, function), "```", "",
                _escape(inspect.cleandoc(function.__doc__ or ""))]
    return "\n".join(out) + "\n"


def benchmark_files() -> list[str]:
    """BENCHMARKS.md and the repository files it links to (its figures), as site paths."""
    text = (ROOT / BENCHMARKS).read_text(encoding="utf-8")
    linked = {m for m in _LINK.findall(text) if "://" not in m and (ROOT / m).is_file()}
    return [BENCHMARKS, *sorted(linked)]


def on_files(files: Any, config: Any) -> Any:
    """Add the generated pages and the benchmark results to the site's files."""
    from mkdocs.structure.files import File

    for uri, content in (("reference/cli.md", cli_reference()),
                         ("reference/python.md", python_reference())):
        files.append(File.generated(config, uri, content=content))
    for uri in benchmark_files():
        files.append(File.generated(config, uri, abs_src_path=str(ROOT / uri)))
    return files

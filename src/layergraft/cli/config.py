"""`--config FILE`: a command's flags from a TOML file, so that a comparison grid (and the
table it makes) is a file under version control.

The file is flat `key = value`. Its keys are the command's flags without the dashes
(`max_sources` or `max-sources`; `ood = false` for `--no-ood`) and `teacher` for the model
argument; a comma-list flag takes a TOML array (`layers = [3, 2]`) or the same string as on
the command line. The values become the flags' defaults (click's default map), so a flag
given on the command line overrides the file, and each value is checked and converted as
the flag's would be. Paths are relative to the current folder, as on the command line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from layergraft.errors import LayergraftError

# Flags about this call rather than the grid: never read from a file.
NOT_IN_FILES = ("config", "dry_run", "replace_stale")


def read_config(ctx: typer.Context, path: Path | None) -> Path | None:
    """The --config callback (eager, so it runs before the other flags are read): check the
    file and make its values the command's defaults."""
    if path is None:
        return None
    params = {key_of(p): p for p in ctx.command.params if p.name not in NOT_IN_FILES}
    values: dict[str, object] = {}
    for key, value in _load_toml(path).items():
        param = params.get(key.replace("-", "_"))
        if param is None:
            raise LayergraftError(f"{path}: unknown key '{key}'; the keys are "
                                  f"{', '.join(params)}")
        if param.name in values:
            raise LayergraftError(f"{path}: '{key}' is given twice")
        values[param.name] = _flag_value(ctx, path, key, param, value)
    ctx.default_map = {**(ctx.default_map or {}), **values}
    return path


ConfigOpt = Annotated[Path | None, typer.Option(
    "--config", is_eager=True, callback=read_config,
    help="TOML file of this command's flags (keys: the flags without dashes, and teacher); "
    "flags on the command line override it.")]


def key_of(param) -> str:
    """A flag's key in a file: its long name without dashes (`--max-sources` ->
    `max_sources`), or the name of an argument."""
    if param.param_type_name == "option":
        long = [opt for opt in param.opts if opt.startswith("--")]
        if long:
            return long[0][2:].replace("-", "_")
    return str(param.name)


def _flag_value(ctx: typer.Context, path: Path, key: str, param, value):
    """The file's value for `param`, checked as the flag's value would be."""
    if isinstance(value, dict):
        raise LayergraftError(f"{path}: '{key}' is a table; write its keys as plain "
                              "key = value lines")
    if isinstance(value, list) and not param.multiple:
        value = ",".join(str(item) for item in value)
    if param.multiple and not isinstance(value, list):
        value = [value]  # a repeatable flag (compare's --layers) given once, as on the CLI
    try:
        param.process_value(ctx, value)
    except typer.BadParameter as error:
        raise LayergraftError(f"{path}: {key} = {value!r}: {error.message}") from None
    return value


def _load_toml(path: Path) -> dict:
    import tomllib
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except OSError as error:
        raise LayergraftError(f"cannot read --config {path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise LayergraftError(f"{path} is not valid TOML: {error}") from None

"""The `layergraft` command line: `app` (the core commands, `cli.app`), the deployment and asset
commands (`cli.tools`), the options they share (`cli.options`) and `--config` grids
(`cli.config`). Nothing below `cli` imports it."""

from layergraft.cli.app import app, main

__all__ = ["app", "main"]

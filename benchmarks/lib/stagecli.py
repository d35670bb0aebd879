"""The command line that the staged benchmarks (embeddings.py, mpnet.py) share."""

from __future__ import annotations

import argparse
from collections.abc import Iterable


def stage_parser(doc: str, stages: Iterable[str]) -> argparse.ArgumentParser:
    """`--stage NAME` (repeatable, one of `stages`) and `--dry-run`, with `doc` as the help."""
    parser = argparse.ArgumentParser(description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", action="append", choices=list(stages))
    parser.add_argument("--dry-run", action="store_true",
                        help="Print the plan and what is done; run nothing.")
    return parser


def plan_line(name: str, pending: str | None, done: bool, width: int = 40) -> str:
    """One planned run in a dry run: done, to do, or pending and why."""
    state = "pending: " + pending if pending else ("done" if done else "to do")
    return f"  {name:{width}} {state}"

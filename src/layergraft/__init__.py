"""layergraft: make fine-tuned transformer encoders smaller by grafting adjacent layers.

Every command `layergraft X` is `layergraft.X(...)` in Python (`layergraft.api`), imported on
first use so that `import layergraft` stays fast. The package by role, lowest layer first;
each subpackage's docstring says what it holds and what it may import, and no layer imports
one above it:

    errors, utils   the user-facing error; atomic writes, versions, parameter counts, cache
    data/           tasks as data, local files, offline sets, tokenisation, metrics
    surgery/        architecture specs, plans, methods, recipes -> weights, manifest, refit
    scoring/        importance, similarity, the analysis that records them, its plots
    models          loading and saving classifiers
    training/       Trainer glue, distillation, the shared budget, data parallelism
    deploy/         ONNX export (fp32, int8, fused graphs) and its check against PyTorch
    report/         result rows -> statistics, tables, figures, Markdown / HTML
    pipeline/       the commands' work: workflows, finetune, evaluation, compress, compare,
                    bench, demo
    api, cli        the public functions, and the command line over them
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"
__all__ = ["analyze", "graft", "finetune", "evaluate", "compress", "compare", "bench", "export",
           "load"]


def __getattr__(name: str):
    if name in __all__:
        return getattr(importlib.import_module("layergraft.api"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})

"""The options several `layergraft` commands share, each declared once.

Option types (`Annotated` aliases) for single flags, and option groups added to a command by
decorator: the column options of a local data file (`task_source`), the analysis settings
(`analysis_options`), the graft options (`graft_options`), and everything a `compress` run
takes beyond its cell of the grid (`compress_options`: the student's training and
distillation, graft options, analysis, refit, plan, out-of-domain scoring and speed), which
`compress` and `compare` share. Nothing heavy is imported until a command runs.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from layergraft.errors import LayergraftError

if TYPE_CHECKING:
    from layergraft.training.distill import DistillConfig

# The `layergraft` command: `layergraft.cli.app` and `layergraft.cli.tools` add its subcommands.
app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Compress fine-tuned BERT-family encoders by grafting adjacent layers, then distilling.",
)

ModelArg = Annotated[str, typer.Argument(
    help="Model folder, hub name, or a built-in offline model: 'minilm' (all-MiniLM-L6-v2) or "
    "'mpnet' (all-mpnet-base-v2, after `layergraft assets mpnet`).")]
TaskOpt = Annotated[str, typer.Option(
    "--task", help="Task name (movie-sentiment, movie-rating, sst2, ...) or a CSV/TSV/JSONL "
    "file or folder.")]
OptionalTaskOpt = Annotated[str | None, typer.Option(
    "--task", help="Task name or data file; needed by methods that measure the model.")]
OutOpt = Annotated[Path, typer.Option("--out", help="Output folder.")]
OverwriteOpt = Annotated[bool, typer.Option(
    "--overwrite", help="Replace a model already saved in --out.")]
JsonOpt = Annotated[Path | None, typer.Option("--json", help="Also write JSON here.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed.")]
BudgetOpt = Annotated[str, typer.Option(
    "--budget", help="Training budget shared by every method and strategy, e.g. '3 epochs' "
    "or '500 steps'.")]
UntrainedHeadOpt = Annotated[bool, typer.Option(
    "--untrained-head", help="Go on with a model whose classification head was never trained "
    "(a base encoder such as 'minilm'): its task scores mean nothing; train a head with "
    "`layergraft finetune` first.")]
GroupByLengthOpt = Annotated[bool, typer.Option(
    "--group-by-length", help="Batch examples of similar length: less padding, faster "
    "training on CPU (changes which examples share a batch).")]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", help="Training batch size.")]
PairsOpt = Annotated[str | None, typer.Option(
    "--pairs", help="Explicit spans that merge, e.g. 0-1,2-3 (a fixed plan instead of the "
    "method's own).")]
QuantizeOpt = Annotated[str | None, typer.Option(
    "--quantize", help="Also write quantised graphs: int8 (ONNX Runtime dynamic int8, "
    "model.int8.onnx), int8-static (QDQ int8 weights and activations calibrated on --task's "
    "training texts, model.int8-static.onnx), or both: int8,int8-static.")]
OptimizeOpt = Annotated[bool, typer.Option(
    "--optimize", help="Also write every graph fused by ONNX Runtime's transformer optimizer "
    "(attention, skip-LayerNorm, GELU; model.opt.onnx, model.opt.int8.onnx, ...), checked "
    "against PyTorch like model.onnx.")]
RefitOpt = Annotated[int, typer.Option(
    "--refit", help="Then refit the new layers' FFN output projections to the input model by "
    "least squares on this many task examples (0: off).")]
# compress --speedup: the shape chosen by speed measured here (`layergraft.pipeline.speedup`).
SpeedupOpt = Annotated[float | None, typer.Option(
    "--speedup", help="Instead of --layers: the depth and FFN width that run this many times "
    "the teacher's throughput on this machine (batch 32, the task's dev lengths, 1 thread), "
    "timed once per shape; up to three are probed, the best trained and returned.")]
SpeedupBackendOpt = Annotated[str, typer.Option(
    "--speedup-backend", help="What --speedup times the student on (the teacher on "
    "torch-fp32): a bench backend, e.g. torch-fp32, torch-int8, onnx-int8, onnx-opt-int8.")]

# --objective embedding: sentence-transformers models (compress, evaluate, compare).
ObjectiveOpt = Annotated[str, typer.Option(
    "--objective", help="task (a classifier on a labelled --task), embedding (a "
    "sentence-transformers model, on the teacher's embeddings of --texts or the task's "
    "training texts) or lm (a decoder LLM such as smollm2, on --texts, default movie-text).")]
TextsOpt = Annotated[Path | None, typer.Option(
    "--texts", help="With --objective embedding: unlabeled text, one sentence a line, or a "
    "CSV/TSV/JSONL file's text column. With --objective lm: a FILE|DIR of plain text "
    "(documents apart by blank lines) or JSONL 'text', split by document (default: the "
    "built-in movie-text).")]
LM_HELP = {  # the options of --objective lm alone
    "harness": "With --objective lm: also score teacher and student zero-shot with lm-eval "
               "on the local sentiment task (about 95 s a model on SmolLM2).",
    "windows": "With --objective lm: at most this many perplexity windows (1,024 tokens "
               "where the text allows) per held-out text."}
HarnessOpt = Annotated[bool, typer.Option("--harness", help=LM_HELP["harness"])]
EvalWindowsOpt = Annotated[int, typer.Option("--eval-windows", help=LM_HELP["windows"])]
ENCODER_METHODS = "graft,random,average,drop-top,drop-bottom,drop-alternate,drop-similar"
LM_METHODS = "graft,shortgpt,angular,sleb,drop-last,laco,streamline,random"


def default_methods(objective: str) -> str:
    """`compare`'s methods unless told: the decoder baselines beside graft for `lm`."""
    return LM_METHODS if objective == "lm" else ENCODER_METHODS


METHODS_HELP = (f"Comma-separated methods (default: {ENCODER_METHODS}; with --objective lm "
                f"{LM_METHODS}).")
EvalTasksOpt = Annotated[str, typer.Option(
    "--eval-task", help="With --objective embedding: tasks of the frozen-embedding probes "
    "(train -> test; the first's out-of-domain sets, else dev + test, are the neighbour "
    "corpus), comma-separated, or 'none'.")]
EVAL_TASKS = "movie-sentiment,movie-rating"


def eval_tasks(value: str) -> list[str]:
    """--eval-task's list ('none': no task)."""
    return [] if value.strip() == "none" else split_list(value)


def split_list(value: str, cast=str, flag: str = "this option") -> list:
    """'3, 2' -> [3, 2]; a part that `cast` refuses is a one-line error naming `flag`."""
    try:
        return [cast(part.strip()) for part in value.split(",") if part.strip()]
    except ValueError:
        raise LayergraftError(f"{flag} takes a comma-separated list of {cast.__name__} values, "
                              f"not '{value}'") from None


def _options(**annotated: tuple[object, object]) -> list[inspect.Parameter]:
    """Keyword-only command parameters from name=(Annotated option type, default)."""
    return [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                              default=default) for name, (annotation, default) in annotated.items()]


def _option_group(options: Sequence[inspect.Parameter], combine: Callable[[dict, dict], None],
                  fills: Sequence[str] = ()) -> Callable[[Callable], Callable]:
    """A decorator that adds the shared `options` to a command's flags. Before the call,
    `combine(shared, arguments)` folds their values into the command's own arguments; the
    command's parameters named in `fills` are set there and are not flags themselves."""
    def decorate(command: Callable) -> Callable:
        signature = inspect.signature(command, eval_str=True)
        own = [p for p in signature.parameters.values() if p.name not in fills]

        @functools.wraps(command)
        def wrapper(**arguments):
            combine({p.name: arguments.pop(p.name) for p in options}, arguments)
            return command(**arguments)

        wrapper.__signature__ = signature.replace(parameters=[*own, *options])
        return wrapper

    return decorate


def _build_task_source(columns: dict, arguments: dict) -> None:
    """--task and the column options as one TaskSource (None without --task). A lone data file
    is always split with seed 0, so every command (and every training seed) sees the same
    train/dev/test rows."""
    from layergraft.data.tasks import TaskSource

    task = arguments["task"]
    arguments["task"] = TaskSource(task, **columns) if task is not None else None


# Every command with --task: its `task` argument arrives as a TaskSource.
task_source = _option_group(_options(
    text_column=(Annotated[str | None, typer.Option(
        "--text-column", help="Text column of a local file.")], None),
    pair_column=(Annotated[str | None, typer.Option(
        "--pair-column", help="Second-text column of a local file.")], None),
    label_column=(Annotated[str | None, typer.Option(
        "--label-column", help="Label column of a local file.")], None),
    regression=(Annotated[bool | None, typer.Option(
        "--regression/--classification",
        help="Whether a local file's labels are scores or classes (default: inferred).")], None),
), _build_task_source)

# How importance and similarity are measured (defaults: `AnalysisSettings`).
ANALYSIS_FLAGS = _options(
    samples=(Annotated[int, typer.Option(
        "--samples", help="Training examples used to measure importance and similarity.")],
        2000),
    importance=(Annotated[str, typer.Option(
        "--importance", help="Importance score: michel, fisher, weight or activation.")],
        "michel"),
    loss=(Annotated[str, typer.Option(
        "--loss", help="Loss for gradient scores: task (gold labels) or kl (model's own "
        "predictions; no labels needed).")], "task"),
)

# How a group of layers becomes one (defaults: `GraftOptions`).
GRAFT_FLAGS = _options(
    bias=(Annotated[str, typer.Option(
        "--bias", help="Output biases of a grafted layer: mean, sum, later, earlier.")], "mean"),
    norm=(Annotated[str, typer.Option(
        "--norm", help="LayerNorms of a grafted layer: mean, later, earlier.")], "mean"),
    quota=(Annotated[str, typer.Option(
        "--quota", help="free (best units overall) or equal (same share from each layer).")],
        "free"),
    max_sources=(Annotated[int, typer.Option(
        "--max-sources", help="Graft only the top N layers of each group, dropping the rest "
        "(0: all).")], 2),
    normalize_scores=(Annotated[bool, typer.Option(
        "--normalize-scores", help="Divide each layer's scores by their L2 norm before "
        "choosing units (whatever the scores were stored as).")], False),
    choose=(Annotated[str, typer.Option(
        "--choose-by", help="fixed (the options above for every span) or reconstruction (per "
        "span, the max-sources, bias and norm whose grafted layer best reproduces the span's "
        "output on --calibration training texts; needs --task).")], "fixed"),
    calibration=(Annotated[int, typer.Option(
        "--calibration", help="Training texts --choose-by reconstruction measures on.")], 256),
    ffn_size=(Annotated[str | None, typer.Option(
        "--ffn-size", help="FFN neurons of every new (grafted) layer, chosen by importance over "
        "its span: a count (e.g. 512) or a fraction of the teacher's intermediate_size (e.g. "
        "0.5; 1.0 is full width). The config has one width, so layers kept whole then shrink "
        "too, each to its own best neurons (a warning says so).")], None),
    ffn_size_all=(Annotated[bool, typer.Option(
        "--ffn-size-all", help="Shrink the layers kept whole to --ffn-size as well, as asked "
        "(no warning).")], False),
    heads=(Annotated[int | None, typer.Option(
        "--heads", help="Attention heads (or KV groups) of every new layer: only for families "
        "whose config carries head_dim apart from hidden_size (decoders); BERT-family encoders "
        "refuse it.")], None),
)

# A student's distillation (`DistillConfig`) and training (`student_training`).
DISTILL_FLAGS = _options(
    temperature=(Annotated[float | None, typer.Option(
        "--temperature", help="Distillation T. Default: 2 for a classifier or sentence "
        "encoder, 1 for --objective lm (each objective's own).")], None),
    hidden_weight=(Annotated[float, typer.Option(
        "--hidden-weight", help="Weight of the hidden-state MSE to the teacher (0: off).")], 0.0),
    task_weight=(Annotated[float, typer.Option(
        "--task-weight", help="Weight of the gold-label loss during distillation.")], 0.0),
    attention_weight=(Annotated[float, typer.Option(
        "--attention-weight", help="Weight of attention transfer: each student head towards "
        "the attention of its source head in the manifest (0: off; the teacher runs live).")],
        0.0),
)
TRAINING_FLAGS = _options(
    learning_rate=(Annotated[str | None, typer.Option(
        "--lr", help="Peak learning rate of the student, or auto: chosen on dev by short "
        "distillation probes (2e-5 to 4e-4, 1/8 of the budget each; cached per teacher, "
        "method and depth). Default: auto with --method auto (compress's default for a "
        "classifier), else the package's STUDENT_LEARNING_RATE, 4e-4.")],
        None),
    inherited_learning_rate=(Annotated[float | None, typer.Option(
        "--lr-inherited", help="Peak learning rate of the weights the student inherited "
        "unchanged (embeddings, head, intact layers); --lr is then that of its new layers. "
        "Default: one rate for all.")], None),
    layer_decay=(Annotated[float | None, typer.Option(
        "--lr-layer-decay", help="Layer-wise rate decay: of L layers, layer i (0 at the "
        "input) trains at D^(L-1-i) times its rate and the embeddings at D^L, the head at the "
        "full rate (e.g. 0.9). Default: off.")], None),
    group_by_length=(GroupByLengthOpt, False),
    batch_size=(BatchSizeOpt, 32),
    max_length=(Annotated[int, typer.Option(
        "--max-length", help="Tokens per example (longer ones are cut) in training, "
        "evaluation and the analysis.")], 128),
)

# Local healing of the new layers after surgery (`HealConfig`).
HEAL_FLAGS = _options(
    heal_steps=(Annotated[int, typer.Option(
        "--heal", help="Heal each new layer on cached teacher states for this many steps after "
        "surgery (0: off); charged against --budget. With --strategy heal it is all the "
        "training.")], 0),
    # HealConfig's defaults, written out so that --help does not import torch
    heal_lr=(Annotated[float, typer.Option("--heal-lr", help="Peak learning rate of healing.")],
             3e-3),
    heal_batch_size=(Annotated[int, typer.Option(
        "--heal-batch-size", help="Examples per healing step.")], 32),
)

# What else a compress run takes: refit, a fixed plan, what is measured, progressive's schedule.
RUN_FLAGS = _options(
    refit=(RefitOpt, 0),
    pairs=(PairsOpt, None),
    plan=(Annotated[str | None, typer.Option(
        "--plan", help="Which layers merge: uniform (the method's own balanced groups), "
        "intact:K (keep the bottom K layers, merge above them), explicit spans such as "
        "4-7,8-11 (as --pairs), or auto (chosen on dev by short distillation probes; the "
        "default with --method auto).")],
        None),
    recalibrate_samples=(Annotated[int, typer.Option(
        "--recalibrate", help="After surgery, match each merged layer's output statistics "
        "(per-channel mean and std) to the teacher's at its span end on this many training "
        "examples (0: off).")], 0),
    collapse_retries=(Annotated[int, typer.Option(
        "--collapse-retries", help="If the student ends training predicting one class on dev "
        "or its loss runs away, train again from the stage's start at half the rate, up to "
        "this many times (0: off).")], 0),
    ood=(Annotated[bool, typer.Option(
        "--ood/--no-ood", help="Also score the task's out-of-domain sets (--objective "
        "embedding: as the neighbour corpus; --no-ood takes the first --eval-task's dev + "
        "test instead).")], True),
    speed=(Annotated[bool, typer.Option(
        "--speed/--no-speed", help="Time the student against the teacher.")], True),
    progressive_schedule=(Annotated[str, typer.Option(
        "--progressive-schedule", help="How --strategy progressive trains its stages: "
        "per-stage (each its own optimizer and learning-rate warm-up and decay) or one (one "
        "optimizer and one curve over the whole budget; in compare, for its progressive "
        "runs).")], "per-stage"),
)


def _build_analysis(flags: dict, arguments: dict) -> None:
    """The analysis settings, with the command's own seed."""
    from layergraft.scoring.analysis import AnalysisSettings

    arguments["analysis"] = AnalysisSettings(**flags, seed=arguments["seed"])


def _build_graft_options(flags: dict, arguments: dict) -> None:
    from layergraft.surgery.methods import GraftOptions

    arguments["graft_options"] = GraftOptions(**flags)


def _build_compress_options(flags: dict, arguments: dict) -> None:
    """The keyword arguments of `layergraft.compress` beyond the grid cell, as `options`."""
    from dataclasses import replace

    from layergraft.scoring.analysis import AnalysisSettings
    from layergraft.surgery.methods import GraftOptions
    from layergraft.training.heal import HealConfig
    from layergraft.training.train import student_training

    def take(group: Sequence[inspect.Parameter]) -> dict:
        return {p.name: flags.pop(p.name) for p in group}

    from layergraft.training.guard import CollapseGuard

    training = take(TRAINING_FLAGS)
    rate = _rate(training.pop("learning_rate"))
    training = replace(student_training(None if rate == "auto" else rate,
                                        group_by_length=training.pop("group_by_length")),
                       **training)
    # the teacher's analysis keeps seed 0 whatever the run's seed, so runs share it
    arguments["options"] = {
        "training": training, "distill": _distill(take(DISTILL_FLAGS)),
        "graft_options": GraftOptions(**take(GRAFT_FLAGS)),
        "analysis": AnalysisSettings(**take(ANALYSIS_FLAGS), max_length=training.max_length),
        "heal": HealConfig(steps=flags.pop("heal_steps"), learning_rate=flags.pop("heal_lr"),
                           batch_size=flags.pop("heal_batch_size")),
        "refit_samples": flags.pop("refit"),
        # a given rate, so that --method auto sweeps only the rates nobody gave
        **({"learning_rate": rate} if rate is not None else {}),
        "guard": CollapseGuard(retries=flags.pop("collapse_retries")), **flags}


def _distill(flags: dict) -> DistillConfig | None:
    """The distillation flags as compress takes them: None when none was given, so that each
    objective keeps its own defaults (the LM's temperature is 1, the classifier's 2)."""
    from layergraft.training.distill import DistillConfig

    given = {p.name: flags[p.name] for p in DISTILL_FLAGS if flags[p.name] != p.default}
    return DistillConfig(**given) if given else None


def _rate(text: str | None) -> float | str | None:
    """--lr as compress takes it: a number, auto, or None (the package's default)."""
    if text in (None, "auto"):
        return text
    try:
        return float(text)
    except ValueError:
        raise LayergraftError(f"--lr takes a number (e.g. 1e-4) or auto, not {text!r}") from None


# analyze and graft: `analysis` arrives as AnalysisSettings (seeded by the command's --seed).
analysis_options = _option_group(ANALYSIS_FLAGS, _build_analysis, fills=("analysis",))
# graft: `graft_options` arrives as GraftOptions.
graft_options = _option_group(GRAFT_FLAGS, _build_graft_options, fills=("graft_options",))
# compress and compare: `options` arrives as the keyword arguments of `layergraft.compress`
# (training, distill, graft_options, analysis, heal, refit_samples, pairs, ood, speed,
# progressive_schedule).
compress_options = _option_group(
    [*DISTILL_FLAGS, *TRAINING_FLAGS, *GRAFT_FLAGS, *ANALYSIS_FLAGS, *HEAL_FLAGS, *RUN_FLAGS],
    _build_compress_options, fills=("options",))


def _build_runtime(flags: dict, arguments: dict) -> None:
    """--device and --precision resolved once (`layergraft.runtime`) and said once; --bf16 is
    their deprecated alias."""
    from layergraft.runtime import Runtime

    precision = flags["precision"]
    if flags["bf16"]:
        typer.echo("warning: --bf16 is deprecated, use --precision bf16", err=True)
        precision = "bf16"
    runtime = Runtime.resolve(flags["device"], precision)
    typer.echo(f"running on {runtime.describe()}", err=True)
    arguments["device"], arguments["precision"] = str(runtime.device), runtime.precision


# Every command that runs a model: it receives the resolved `device` and `precision`.
runtime_options = _option_group(_options(
    device=(Annotated[str, typer.Option(
        "--device", help="auto (a GPU if there is one, else the CPU), cpu, cuda, cuda:N or "
        "mps.")], "auto"),
    precision=(Annotated[str, typer.Option(
        "--precision", help="auto (bf16 only where the hardware computes it natively, fp16 on "
        "a CUDA GPU without bf16, else fp32), fp32, bf16 or fp16.")], "auto"),
    bf16=(Annotated[bool, typer.Option(
        "--bf16", hidden=True, help="Deprecated: --precision bf16.")], False),
), _build_runtime, fills=("device", "precision"))

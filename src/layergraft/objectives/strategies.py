"""The strategies of `compress` and which requests each accepts, checked before any work.

- `none`: surgery only.
- `heal`: surgery, then local healing alone (`layergraft.training.heal`): retraining-free.
- `finetune`: surgery, then training on the task labels.
- `distill`: one-shot surgery, then distillation from the teacher.
- `progressive`: one pair at a time (most similar first), distilling after each merge.
- `replace`: module replacement (BERT-of-Theseus): each teacher span and its new layer take
  turns inside the teacher, the new layer ever more often, then the compact student alone
  (`layergraft.training.replace`), all distilled within the same budget.

Progressive's stages are, by default (`per-stage`), trainings of their own, each with its
own optimizer and learning-rate warm-up and decay; `--progressive-schedule one` runs them on
one optimizer and one curve over the whole budget instead (`layergraft.training.schedule`).

Healing (`--heal`) can precede the training of any one-shot strategy; its cost comes out of
the same budget, so every method and strategy is compared at equal compute.
"""

from __future__ import annotations

from collections.abc import Mapping

from layergraft.errors import LayergraftError
from layergraft.surgery.methods import GraftOptions, get_method
from layergraft.training.heal import HealConfig

STRATEGIES = ("none", "heal", "finetune", "distill", "progressive", "replace")
# the strategies that train no model as a whole: no budget, no global training stage
UNTRAINED = ("none", "heal")
# what `compare` runs for graft unless told: `heal` needs a number of healing steps
GRAFT_GRID = ("none", "finetune", "distill", "progressive")
# how progressive's stages train: each its own optimizer and curve (the default), or one
PER_STAGE, ONE = "per-stage", "one"
PROGRESSIVE_SCHEDULES = (PER_STAGE, ONE)


def check_request(method: str, strategy: str, pairs: str | None = None,
                  heal: HealConfig | None = None,
                  progressive_schedule: str = PER_STAGE,
                  options: GraftOptions | None = None) -> None:
    """Refuse an unknown method or strategy, a fixed plan (`pairs`) where none applies
    (progressive picks one pair at a time, and the drop-* methods pick their own layers), a
    progressive schedule other than the default for a run without stages, and a width
    (`options`) for a method that keeps or averages whole layers."""
    if strategy not in STRATEGIES:
        raise LayergraftError(f"unknown strategy '{strategy}': choose one of "
                              f"{', '.join(STRATEGIES)}")
    if progressive_schedule not in PROGRESSIVE_SCHEDULES:
        raise LayergraftError(f"unknown progressive schedule '{progressive_schedule}': choose "
                              f"{' or '.join(PROGRESSIVE_SCHEDULES)}")
    if progressive_schedule != PER_STAGE and strategy != "progressive":
        raise LayergraftError(f"--progressive-schedule {progressive_schedule} is for the "
                              f"stages of --strategy progressive; strategy '{strategy}' has "
                              "none: drop the option or use --strategy progressive")
    get_method(method)
    if options is not None:
        options.check_method(method)
    steps = heal.steps if heal else 0
    if strategy == "heal" and not steps:
        raise LayergraftError("strategy 'heal' needs healing steps: give --heal STEPS")
    if steps and strategy == "progressive":
        raise LayergraftError("healing is for one-shot surgery; progressive merges one pair "
                              "at a time: use --strategy distill (or heal) with --heal")
    if pairs and strategy == "progressive":
        raise LayergraftError("--pairs is a plan for one-shot surgery, but progressive merges "
                              "the most similar pair at a time: use another strategy")
    if pairs and method.startswith("drop-"):
        raise LayergraftError(f"method '{method}' chooses its own layers: give --layers, "
                              "not --pairs")


def refuse_classifier_levers(objective: str, training, options: Mapping,
                             distill=None) -> None:
    """One line for a lever only the classifier's run applies (recalibration, the collapse
    guard, a rate of their own for inherited weights, an untrained head; with `distill`, the
    logit distillation settings too), instead of ignoring it silently."""
    from layergraft.training.distill import DistillConfig

    guard = options.get("guard")
    given = [flag for flag, on in (
        ("--recalibrate", options.get("recalibrate_samples")),
        ("--collapse-retries", getattr(guard, "retries", 0)),
        ("--lr-inherited", getattr(training, "inherited_learning_rate", None) is not None),
        ("--lr-layer-decay", getattr(training, "layer_decay", None) is not None),
        ("--untrained-head", options.get("allow_untrained_head")),
        ("--temperature / --hidden-weight / --task-weight / --attention-weight",
         distill is not None and distill != DistillConfig())) if on]
    if given:
        one = len(given) == 1
        raise LayergraftError(f"{', '.join(given)} {'is' if one else 'are'} for --objective "
                              f"task only, not yet for --objective {objective}: leave "
                              f"{'it' if one else 'them'} out")


def steps_after_heal(total: int, charge: int, strategy: str) -> int:
    """The distillation steps left once healing is charged (by `training.heal`'s rule)."""
    if strategy == "heal" or not total:
        return total
    if charge >= total:
        raise LayergraftError(f"healing costs {charge} of the budget's {total} steps: give "
                              "fewer --heal steps or a larger --budget")
    return total - charge


def normalized_spans(pairs: str | None) -> str | None:
    """`pairs` without spaces or empty parts, so equal plans give equal run settings."""
    spans = ",".join(part.strip() for part in (pairs or "").split(",") if part.strip())
    return spans or None


def check_model_kind(teacher_path: str, objective: str, method: str) -> None:
    """One line for a model the objective cannot serve (a decoder LLM is `lm`'s alone, an
    encoder never `lm`'s) and for a decoder baseline asked of an encoder objective; reads the
    config only (a folder without one is left to the objective's own loader)."""
    from layergraft.surgery.methods import DECODER_METHODS

    decoder = _is_decoder(teacher_path)
    if objective != "lm" and method in DECODER_METHODS and method != "drop-last":
        raise LayergraftError(f"method '{method}' is a decoder LLM baseline: use it with "
                              "--objective lm on a decoder (Llama-family) model")
    if decoder is None:
        return
    if decoder and objective != "lm":
        raise LayergraftError(f"'{teacher_path}' is a decoder LLM: compress it with --objective "
                              f"lm, not --objective {objective}")
    if not decoder and objective == "lm":
        raise LayergraftError(f"'{teacher_path}' is not a decoder LLM (Llama family): "
                              "--objective lm compresses causal language models; use "
                              "--objective task or embedding for an encoder")


def _is_decoder(teacher_path: str) -> bool | None:
    """Whether the model's config is of a decoder family (None: no config to read)."""
    from pathlib import Path

    from transformers import AutoConfig

    from layergraft.models import resolve_model
    from layergraft.surgery.arch import spec_for_config

    path = resolve_model(teacher_path)
    if not (Path(path) / "config.json").is_file():
        return None
    config = AutoConfig.from_pretrained(path)
    try:
        return spec_for_config(config).decoder
    except LayergraftError:  # a family surgery does not know: its own one line comes later
        return None

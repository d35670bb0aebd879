"""The `lm` objective: a decoder LLM (Llama family), kept close to its teacher's next-token
distributions (`run`: the compress run, DESIGN section 14, issue 34).

Models are stock `AutoModelForCausalLM` folders; importance takes the next-token loss over
KV groups and SwiGLU neurons; the decoder baselines (shortgpt, angular, sleb, laco, streamline,
drop-last) measure calibration blocks; distillation is the top-k KL at T (cached) plus an
optional hidden-state MSE at span ends; healing (retraining-free) trains the new layers alone
on the span-end MSE to the teacher's states, as LLM-Streamline does; evaluation is perplexity
on held-out and out-of-domain text beside the teacher's, KL, top-1 agreement and greedy
continuations; speed is prefill and decode tokens per second.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

from layergraft.errors import LayergraftError
from layergraft.objectives.base import Objective

STRATEGIES = ("none", "heal", "distill")
DEFAULT_TEXTS = "movie-text"
DEFAULT_OOD = ("editorials-text",)
EVAL_WINDOWS = 32  # per text by default: a quick run may ask for fewer
CALIBRATION_WINDOWS = 32  # train blocks that importance and the baselines measure on


class LMObjective(Objective):
    name = "lm"
    speed_unit = "tokens/s"
    graft_grid = ()  # the classifier's graft extras do not apply
    default_budget = "200 steps"
    comparison_title = "layergraft language-model comparison"
    writes_card = False  # the session writes the LM card itself (`report.card_text`)

    def run(self, teacher: str, data, *, layers: int, out: Path, dry_run: bool = False,
            texts=None, method: str = "graft", strategy: str = "distill", budget="200 steps",
            seed: int = 0, device: str = "auto", precision: str = "auto", graft_options=None,
            analysis=None, training=None, distill=None, lm_distill=None, heal=None,
            pairs: str | None = None, cache_dir=None, speed: bool = True, ood: bool = True,
            ood_texts=DEFAULT_OOD, eval_windows: int | None = EVAL_WINDOWS,
            calibration_windows: int = CALIBRATION_WINDOWS, harness: bool = False,
            progress: bool = True, progressive_schedule: str = "per-stage", **ignored):
        """Text is `texts` (FILE|DIR or a built-in name; default movie-text), split by
        document; `ood_texts` are scored, never trained on. `strategy` "distill" trains
        with `lm_distill` (an LMDistillConfig; else T and the hidden weight of `distill`,
        top-k 64) for `budget` ("N steps", "N epochs" of train blocks or "N tokens"; a step is
        `training.batch_size` blocks of `training.max_length` tokens); "heal" heals the new
        layers only (`heal`, which may also precede "distill", charged to its budget); "none"
        is surgery only."""
        from layergraft.models import resolve_model
        from layergraft.objectives.lm.run import LMRun
        from layergraft.objectives.strategies import (
            check_model_kind,
            check_request,
            normalized_spans,
            refuse_classifier_levers,
        )
        from layergraft.runtime import Runtime
        from layergraft.scoring.analysis import AnalysisSettings
        from layergraft.surgery.methods import TAKES_OPTIONS, GraftOptions
        from layergraft.training.heal import HealConfig
        from layergraft.training.lm_distill import LMDistillConfig
        from layergraft.training.train import TrainConfig
        from layergraft.utils import content_fingerprint

        if strategy not in STRATEGIES:
            raise LayergraftError(f"strategy '{strategy}' does not apply to --objective lm: "
                                  f"choose {' or '.join(STRATEGIES)}")
        refuse_classifier_levers("lm", training, ignored)
        if data is not None:
            raise LayergraftError("--objective lm trains on --texts FILE|DIR (default "
                                  "movie-text), not on a --task")
        check_request(method, strategy, pairs, heal, progressive_schedule, graft_options)
        path = resolve_model(teacher)
        check_model_kind(path, "lm", method)
        training = training or TrainConfig(output_dir="", learning_rate=1e-4, batch_size=8,
                                           max_length=256)
        config = lm_distill or LMDistillConfig(
            temperature=distill.temperature if distill is not None else 1.0,
            hidden_weight=distill.hidden_weight if distill is not None else 0.0)
        options, analysis = graft_options or GraftOptions(), analysis or AnalysisSettings()
        source = str(texts) if texts is not None else DEFAULT_TEXTS
        runtime = Runtime.resolve(device, precision)
        identity = {
            "objective": "lm", "teacher": str(teacher),
            "teacher_content": content_fingerprint(path),
            "texts": {"source": source, "content": content_fingerprint(source)
                      if texts is not None else None},
            "ood": list(ood_texts) if ood else [], "layers": int(layers), "method": method,
            "strategy": strategy, "seed": seed, "precision": runtime.precision,
            "block_length": training.max_length, "eval_windows": eval_windows,
            "calibration_windows": calibration_windows,
            "budget": str(budget) if strategy == "distill" else None,
            "training": ({"batch_size": training.batch_size,
                          "learning_rate": training.learning_rate,
                          "steps": budget_steps(budget, training, source)}
                         if strategy == "distill" else {"batch_size": training.batch_size}),
            "distill": ({"temperature": config.temperature, "top_k": config.top_k,
                         "logit_weight": config.logit_weight,
                         "hidden_weight": config.hidden_weight}
                        if strategy == "distill" else None),
            "graft_options": options.to_dict() if method in TAKES_OPTIONS else None,
            "importance": analysis.importance if method == "graft" else None,
            "pairs": normalized_spans(pairs),
            "heal": heal.to_dict() if heal is not None and heal.steps else None,
            "harness": harness, "speed": speed,
        }
        return LMRun(Path(out), identity, objective=self, speed=speed, path=path,
                     resolved=runtime, options=options, analysis=analysis, distill=config,
                     heal=heal or HealConfig(), cache_dir=cache_dir, progress=progress)

    def load(self, path: str, device: str = "cpu"):
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(str(path)).to(device).eval()

    def evaluate(self, model: str, data=None, *, device: str = "auto", precision: str = "auto",
                 teacher: str | None = None, texts=None, eval_windows: int | None = EVAL_WINDOWS,
                 splits=None, **ignored) -> list[dict]:
        """One record per split: the model's perplexity on `texts` (default movie-text) dev
        and test windows ('ood' in `splits` adds the out-of-domain texts), beside `teacher`'s
        when one is given (`layergraft.objectives.lm.evaluate`)."""
        from layergraft.objectives.lm.evaluate import evaluate_lm

        return evaluate_lm(self, model, texts=texts or DEFAULT_TEXTS, splits=splits,
                           teacher=teacher, ood=DEFAULT_OOD, eval_windows=eval_windows,
                           device=device, precision=precision)

    def rows(self, record: Mapping, key) -> list[dict]:
        from layergraft.objectives.lm.report import record_row

        return [record_row(record, key.name)]

    def teacher_rows(self, record: Mapping) -> list[dict]:
        from layergraft.objectives.lm.report import teacher_row

        return [teacher_row(record)]

    def write_rows(self, rows, out, title) -> None:
        from layergraft.objectives.lm.report import write_rows

        write_rows(rows, out, title)

    def write_report(self, rows, out, title, record) -> None:
        self.write_rows(rows, out, title)

    def probe_score(self, record: Mapping) -> float | None:
        """Higher is better: minus the student's dev log-perplexity (its mean NLL)."""
        return -record["dev"]["student_nll"]

    def depth(self, teacher: str) -> int:
        from transformers import AutoConfig

        from layergraft.models import resolve_model
        from layergraft.surgery.arch import num_layers

        return num_layers(AutoConfig.from_pretrained(resolve_model(teacher)))

    def headline(self, record: Mapping) -> str:
        from layergraft.objectives.lm.report import headline

        return headline(record)


def budget_steps(budget, training, source: str) -> int:
    """Optimizer steps of a budget: "N steps", "N tokens" (a step is batch_size blocks of
    max_length tokens, rounded up) or "N epochs" (of the train text's blocks; reads the text
    once, in characters / 4 tokens, so the settings need no tokenizer)."""
    from layergraft.training.budget import Budget

    parsed = Budget.parse(budget)
    per_step = training.batch_size * training.max_length
    if parsed.unit != "epochs":
        return parsed.steps(0, 1, tokens_per_step=per_step)
    from layergraft.data.lm_text import load_texts

    characters = load_texts(source).describe()["train"]["characters"]
    return max(1, math.ceil(parsed.amount * math.ceil(characters / 4 / per_step)))

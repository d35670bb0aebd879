"""The `embedding` objective: a sentence-transformers model, kept close to its teacher's
embeddings (`run`: the compress run; the pieces are `layergraft.embeddings`').

Models are stock `SentenceTransformer` folders (sentence-transformers writes their card);
the teacher's embeddings of the training texts are cached; importance takes the embedding
loss; distillation is the embedding MSE (plus a cosine term) and healing maps the teacher
transformer's states at each span's start to its end; evaluation is fidelity (mean cosine,
neighbour agreement) and frozen-embedding probes with retention; speed is sentences per
second.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from layergraft.errors import LayergraftError
from layergraft.objectives.base import Objective

STRATEGIES = ("none", "heal", "distill")


class EmbeddingObjective(Objective):
    name = "embedding"
    speed_unit = "sentences/s"
    graft_grid = ()  # the classifier's graft extras (finetune, ...) do not apply
    default_budget = "1 epoch"
    comparison_title = "layergraft embedding comparison"
    speed_none_when_off = False  # the record has no speed when none was measured
    writes_card = False  # sentence-transformers' save writes the folder's README.md

    def run(self, teacher: str, data, *, layers: int, out: Path, dry_run: bool = False,
            texts=None, text_column: str | None = None, method: str = "graft",
            strategy: str = "distill", budget="1 epoch", seed: int = 0, device: str = "auto",
            precision: str = "auto", graft_options=None, analysis=None, training=None,
            cosine_weight: float = 0.0, pairs: str | None = None, eval_tasks=None,
            cache_dir=None, refit_samples: int = 0, heal=None, speed: bool = True,
            ood: bool = True, progressive_schedule: str = "per-stage", progress: bool = True,
            **ignored):
        """Training text is `texts` (a file: one sentence a line, or the `text_column` of a
        CSV / TSV / JSONL file) or the train split of `data`. `strategy` "distill" trains
        with the embedding MSE (plus `cosine_weight` times the cosine distance) for
        `budget`; "heal" is surgery + healing only (`heal`, which may also precede
        "distill"); "none" is surgery only. The record holds
        `layergraft.embeddings.fidelity`'s evaluation on `eval_tasks` (none: the held-out
        mean cosine alone; `ood=False`: neighbours among the first task's dev + test) and,
        with `speed`, the interleaved student / teacher throughput. `training` (a
        TrainConfig) supplies learning rate, batch size and max length; a classifier-only
        lever given a value is refused in one line (`refuse_classifier_levers`)."""
        from layergraft.embeddings.fidelity import DEFAULT_EVAL_TASKS
        from layergraft.embeddings.model import read_folder
        from layergraft.embeddings.objective import EmbeddingTraining
        from layergraft.models import resolve_model
        from layergraft.objectives.embedding.run import (
            NEEDS_ANALYSIS,
            EmbeddingRun,
            training_texts,
        )
        from layergraft.objectives.strategies import (
            check_model_kind,
            check_request,
            normalized_spans,
            refuse_classifier_levers,
        )
        from layergraft.runtime import Runtime
        from layergraft.scoring.analysis import AnalysisSettings
        from layergraft.surgery.methods import TAKES_OPTIONS, GraftOptions
        from layergraft.training.budget import Budget
        from layergraft.utils import content_fingerprint

        eval_tasks = DEFAULT_EVAL_TASKS if eval_tasks is None else eval_tasks
        if strategy not in STRATEGIES:
            raise LayergraftError(f"strategy '{strategy}' does not apply to --objective "
                                  f"embedding: choose {' or '.join(STRATEGIES)}")
        if refit_samples:
            raise LayergraftError("--refit is not available with --objective embedding: "
                                  "use --heal")
        check_request(method, strategy, pairs, heal, progressive_schedule, graft_options)
        refuse_classifier_levers("embedding", training, ignored, ignored.get("distill"))
        path = resolve_model(teacher)
        check_model_kind(path, "embedding", method)
        read_folder(path)  # a one-line refusal before anything loads
        corpus, source = training_texts(texts, data, text_column)
        runtime = Runtime.resolve(device, precision)
        options = graft_options or GraftOptions()
        analysis = analysis or AnalysisSettings()
        config = EmbeddingTraining(cosine_weight=cosine_weight, **(
            {"learning_rate": training.learning_rate, "batch_size": training.batch_size,
             "max_length": training.max_length} if training is not None else {}))
        budget = Budget.parse(budget, ("epochs", "steps"))
        identity = {
            "objective": "embedding", "teacher": str(teacher),
            "teacher_content": content_fingerprint(path), "texts": source,
            "layers": int(layers), "method": method, "strategy": strategy, "seed": seed,
            "precision": runtime.precision,
            "budget": str(budget) if strategy == "distill" else None,
            "graft_options": options.to_dict() if method in TAKES_OPTIONS else None,
            "analysis": ({"importance": analysis.importance, "samples": analysis.samples,
                          "normalize": analysis.normalize} if method in NEEDS_ANALYSIS
                         else None),
            "training": config.to_dict() if strategy == "distill" else None,
            "pairs": normalized_spans(pairs), "eval_tasks": list(eval_tasks),
            "heal": heal.to_dict() if heal is not None and heal.steps else None,
            "speed": speed,
            # only when off, so that the runs made before the option keep their settings
            **({} if ood else {"ood": False}),
        }
        return EmbeddingRun(Path(out), identity, objective=self, speed=speed, path=path,
                            corpus=corpus, resolved=runtime, options=options,
                            analysis=analysis, training=config, budget=budget, heal=heal,
                            cache_dir=cache_dir, progress=progress)

    def load(self, path: str, device: str = "cpu"):
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(str(path), device=str(device)).eval()

    def evaluate(self, model: str, data=None, *, device: str = "auto",
                 precision: str = "auto", teacher: str | None = None,
                 eval_tasks: Sequence[str] | None = None, texts=None,
                 **ignored) -> list[dict]:
        """One record: neighbour agreement, frozen-embedding probes on `eval_tasks`
        (default movie-sentiment and movie-rating, or `data`) beside the teacher's (default:
        the one its compress run names), and the mean cosine on `texts` (a file)."""
        from layergraft.embeddings.fidelity import DEFAULT_EVAL_TASKS, evaluate_folder
        from layergraft.embeddings.texts import read_texts
        from layergraft.runtime import Runtime

        tasks = eval_tasks if eval_tasks is not None else (
            [data] if data is not None else DEFAULT_EVAL_TASKS)
        return [evaluate_folder(model, teacher, eval_tasks=tasks,
                                texts=read_texts(texts) if texts is not None else None,
                                device=str(Runtime.resolve(device, precision).device))]

    def rows(self, record: Mapping, key) -> list[dict]:
        from layergraft.embeddings.report import record_row

        return [{**record_row(record, key.budget), "run": key.name}]

    def teacher_rows(self, record: Mapping) -> list[dict]:
        from layergraft.embeddings.report import teacher_row

        return [teacher_row(record)]

    def write_rows(self, rows, out, title) -> None:
        """results.json (the rows) and report.md (the table), atomically."""
        from layergraft.embeddings.report import markdown
        from layergraft.utils import write_bytes_atomic, write_json_atomic

        out = Path(out)
        write_json_atomic(out / "results.json", list(rows))
        write_bytes_atomic(out / "report.md", f"# {title}\n\n{markdown(rows)}\n".encode())

    def write_report(self, rows, out, title, record) -> None:
        self.write_rows(rows, out, title)

    def probe_score(self, record: Mapping) -> float | None:
        return record.get("mean_cosine")

    def depth(self, teacher: str) -> int:
        from layergraft.embeddings.model import load_embedding_model, transformer_of
        from layergraft.models import resolve_model
        from layergraft.surgery.arch import num_layers

        return num_layers(transformer_of(load_embedding_model(resolve_model(teacher))[0]).config)

    def headline(self, record: Mapping) -> str:
        from layergraft.embeddings.report import headline

        return headline(record)

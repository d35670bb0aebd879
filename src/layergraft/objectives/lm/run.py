"""A causal LM's compress run: graft (or a decoder baseline) a Llama-family model on text,
heal and / or distil it, and measure it beside its teacher.

Surgery runs in `load`, before the run folder is touched, so a plan the model cannot take
(layers of different attention types merged) is refused with nothing written. The student
is saved in the run folder itself (a stock `AutoModelForCausalLM` folder, tokenizer and graft
manifest). Training is not checkpointed: an interrupted run trains again, from the cached
teacher top-k.
"""

from __future__ import annotations

import json
from operator import attrgetter
from pathlib import Path

import torch

from layergraft.objectives.base import Objective, Run, Session
from layergraft.objectives.lm.fit import block_batch, fit, shuffled_batches
from layergraft.objectives.strategies import steps_after_heal

NEEDS_SCORES = ("graft",)
NEEDS_SIMILARITY = ("drop-similar",)
GREEDY_SEARCHES = ("sleb", "laco")  # deterministic given the teacher and calibration text


class LMRun(Run):
    """One compress run of a decoder LLM: `identity` is its settings; `parts` the resolved
    pieces it runs with (options: GraftOptions, analysis: AnalysisSettings, distill:
    LMDistillConfig, heal: HealConfig, cache_dir, progress)."""

    def __init__(self, out: Path, identity: dict, *, objective: Objective, speed: bool,
                 path: str, resolved, **parts) -> None:
        self.out, self.identity, self.objective, self.speed = out, identity, objective, speed
        self.path, self.resolved = path, resolved  # the teacher's folder; device, precision
        self.options, self.analysis = parts["options"], parts["analysis"]
        self.distill, self.heal = parts["distill"], parts["heal"]
        self.cache_dir, self.progress = parts.get("cache_dir"), parts.get("progress", True)

    runtime = property(attrgetter("resolved"))  # the resolved device and precision

    def settings(self) -> dict:
        """The identity given at construction (what `runs` compares)."""
        return self.identity

    def load(self, state) -> LMSession:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        teacher = AutoModelForCausalLM.from_pretrained(self.path, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(self.path)
        return LMSession(self, teacher.to(self.runtime.device).eval(), tokenizer)


class LMSession(Session):
    """A decoder run's teacher, text (train blocks, dev / test / out-of-domain windows) and
    the student's surgery, all done before anything is written."""

    importance_loss = "lm"

    def __init__(self, run: LMRun, teacher, tokenizer) -> None:
        from layergraft.objectives.lm.texts import RunText

        self.run, self.teacher, self.tokenizer = run, teacher, tokenizer
        self.text = RunText.load(run.identity, tokenizer, teacher.config)
        self.student, self.manifest = self._surgery()
        self.card: dict = {}

    def teacher_outputs(self, data: torch.Tensor):
        from layergraft.training.lm_distill import LMTeacherCache

        config = self.run.distill
        return LMTeacherCache.build(self.teacher, data, top_k=config.top_k,
                                    temperature=config.temperature,
                                    layers=self._layer_map() if config.hidden_weight else (),
                                    cache_dir=self.run.cache_dir)

    def distill_loss(self, student, manifest):
        from layergraft.training.lm_distill import make_lm_distill_loss

        return make_lm_distill_loss(self.teacher_outputs(self.text.train), self.run.distill,
                                    layer_map=self._layer_map())

    def heal(self, student, manifest) -> dict:
        from layergraft.surgery.arch import num_layers
        from layergraft.training.distill import LiveTeacher
        from layergraft.training.heal import HealLoss, heal_charge, healable, span_errors

        config, ends = self.run.heal, manifest.span_ends()
        layers = healable(ends)
        record = {"config": config.to_dict(), "layers": layers, "steps": 0, "charge": 0}
        if not layers or not config.steps:
            return record
        teacher = LiveTeacher(self.teacher)
        loss = HealLoss(teacher, ends, layers)
        probe = [block_batch(self.text.train[:config.batch_size])]
        record["mse_before"] = span_errors(student, teacher, probe, ends)
        frozen = {p: p.requires_grad for p in student.parameters()}
        params = loss.freeze_others(student)
        record.update(fit(student, params, loss, shuffled_batches(
            self.text.train, config.batch_size, self.run.identity["seed"]), config.steps,
            learning_rate=config.learning_rate, runtime=self.run.runtime,
            warmup_ratio=config.warmup_ratio))
        for p, flag in frozen.items():
            p.requires_grad_(flag)
        record["mse_after"] = span_errors(student, teacher, probe, ends)
        record["charge"] = heal_charge(config, num_layers(student.config), len(layers),
                                       self.run.identity["training"]["batch_size"])
        return record

    def build(self):
        from layergraft.utils import num_parameters

        settings, student = self.run.identity, self.student
        healed = trained = None
        charge = 0
        if settings["heal"] is not None:
            healed = self.heal(student, self.manifest)
            charge = healed["charge"]
        if settings["strategy"] == "distill":
            trained = self._distill(student, charge)
        record = {"settings": settings, "objective": "lm", "teacher": settings["teacher"],
                  "method": settings["method"], "strategy": settings["strategy"],
                  "teacher_layers": self.manifest.to_dict()["depths"][0],
                  "layers": settings["layers"], "text": self.text.describe(),
                  "parameters": {"teacher": num_parameters(self.teacher),
                                 "student": num_parameters(student)},
                  "heal": healed, "training": trained}
        self.card = dict(record)  # what the model card is written from, once saved
        return student, self.manifest, record

    def evaluate(self, student) -> dict:
        from layergraft.objectives.lm.assess import assess

        evaluation = assess(self.teacher, student, self.tokenizer, self.text,
                            harness=self.run.identity["harness"], progress=self.run.progress)
        self.card.update(evaluation)
        return evaluation

    def speed(self, student, measure_speed) -> dict:
        from layergraft.data.encoding import usable_positions
        from layergraft.deploy.lm_speed import lm_speed

        limit = usable_positions(self.teacher.config) or 4096
        self.card["speed"] = lm_speed(self.teacher, student, measure_speed=measure_speed,
                                      prompt_tokens=min(128, limit // 2),
                                      new_tokens=min(32, limit // 4),
                                      precision=self.run.runtime.precision)
        return self.card["speed"]

    def save(self, student, manifest) -> None:
        from layergraft.models import save_model
        from layergraft.objectives.lm.report import write_card

        save_model(student.eval(), self.tokenizer, self.run.out, manifest=manifest,
                   overwrite=True)
        write_card(self.run.out, self.card)

    def _layer_map(self) -> list[int]:
        """The teacher `hidden_states` index each student layer stands for: its span's end."""
        return self.manifest.span_ends()

    def _surgery(self):
        """(student, manifest): the method's graft, on calibration windows of the train text;
        a greedy search (SLEB, LaCo: hours on a 30-layer model, the same for every strategy
        and seed) is replayed from the manifest it left in the cache."""
        from layergraft.surgery.manifest import Manifest, replay

        folder = self._search_cache()
        manifest = Manifest.load(folder) if folder is not None else None
        if manifest is not None:
            return replay(self.teacher, manifest), manifest
        student, manifest = self._graft()
        if folder is not None:
            manifest.save(folder)
        return student, manifest

    def _search_cache(self):
        """Where a greedy search's manifest is kept, by all it depends on (None: no search)."""
        from layergraft.utils import cache_root, short_hash

        settings = self.run.identity
        if settings["method"] not in GREEDY_SEARCHES or settings["pairs"]:
            return None
        key = {k: settings[k] for k in ("teacher_content", "texts", "block_length",
                                         "calibration_windows", "precision", "method",
                                         "layers")}
        return cache_root(self.run.cache_dir) / "surgery" / short_hash(json.dumps(
            key, sort_keys=True))

    def _graft(self):
        from layergraft.surgery.graft import graft_model
        from layergraft.surgery.plan import Plan

        settings, text = self.run.identity, self.text
        method, depth = settings["method"], text.depth
        inputs: dict = {}
        calibration = text.calibration()
        if method in NEEDS_SCORES:
            from layergraft.scoring.importance import score_importance

            scores = score_importance(self.teacher, calibration, loss="lm",
                                      method=self.run.analysis.importance,
                                      normalize=self.run.analysis.normalize)
            inputs = {"head_scores": scores.head, "neuron_scores": scores.neuron,
                      "importance_info": {"scores": scores.info,
                                          "calibration": text.calibration_info()}}
        elif method in _needs_blocks() or method in NEEDS_SIMILARITY:
            from layergraft.scoring.block_scores import measure_blocks

            blocks = measure_blocks(self.teacher, calibration)
            inputs = {"blocks": blocks, "adjacent_cosine": blocks.cosine.diagonal(offset=1)}
        plan = Plan.from_spans(depth, settings["pairs"]) if settings["pairs"] else None
        return graft_model(self.teacher, layers=None if plan else settings["layers"], plan=plan,
                           method=method, options=self.run.options, seed=settings["seed"],
                           **inputs)

    def _distill(self, student, charge: int) -> dict:
        settings, config = self.run.identity, self.run.distill
        batch = settings["training"]["batch_size"]
        total = settings["training"]["steps"]
        steps = steps_after_heal(total, charge, settings["strategy"])
        loss = self.distill_loss(student, self.manifest)
        for p in student.parameters():
            p.requires_grad_(True)
        record = fit(student, list(student.parameters()), loss,
                     shuffled_batches(self.text.train, batch, settings["seed"]), steps,
                     learning_rate=settings["training"]["learning_rate"],
                     runtime=self.run.runtime)
        block = self.text.train.shape[1]
        return {**record, "budget": settings["budget"], "block_length": block,
                "batch_size": batch, "tokens": record["steps"] * batch * block,
                "heal_charge": charge, "temperature": config.temperature,
                "top_k": config.top_k, "hidden_weight": config.hidden_weight}


def _needs_blocks() -> frozenset:
    from layergraft.surgery.decoder_baselines import NEEDS_BLOCKS

    return NEEDS_BLOCKS


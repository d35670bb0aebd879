"""Sentence-embedding models (layergraft.embeddings) on a tiny random sentence-transformers
model built here: a tiny BERT + mean Pooling + Normalize."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_task import write_tiny_task

from layergraft.errors import LayergraftError

pytest.importorskip("sentence_transformers")


def test_folder_is_recognised_with_its_pooling(st_folder):
    from layergraft.embeddings.model import read_folder

    folder = read_folder(st_folder)
    assert folder.modules == ("Transformer", "Pooling", "Normalize")
    assert folder.pooling == json.loads((st_folder / "1_Pooling" / "config.json").read_text())


def test_graft_save_and_load_keeps_modules_dimension_and_pooling(st_folder, sentences, tmp_path):
    from sentence_transformers import SentenceTransformer

    from layergraft.embeddings.model import (
        analyze_embedding_model,
        graft_embedding_model,
        load_embedding_model,
        read_folder,
        save_embedding_model,
    )
    from layergraft.scoring.analysis import AnalysisSettings
    from layergraft.surgery.manifest import Manifest

    teacher, _ = load_embedding_model(st_folder)
    analysis = analyze_embedding_model(teacher, sentences, AnalysisSettings(batch_size=8),
                                       cache_dir=tmp_path / "cache")
    assert analysis.scores.head.shape == (4, 4) and analysis.scores.head.sum() > 0
    student, manifest = graft_embedding_model(teacher, layers=2, method="graft",
                                              **analysis.graft_inputs())
    assert teacher[0].auto_model.config.num_hidden_layers == 4  # the input is untouched
    save_embedding_model(student, manifest, tmp_path / "s")
    loaded = SentenceTransformer(str(tmp_path / "s"), device="cpu")
    assert loaded[0].auto_model.config.num_hidden_layers == 2
    embeddings = loaded.encode(sentences[:3], convert_to_tensor=True)
    assert embeddings.shape == (3, teacher.get_embedding_dimension())
    assert torch.allclose(embeddings.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert read_folder(tmp_path / "s").pooling == read_folder(st_folder).pooling
    assert read_folder(tmp_path / "s").modules == read_folder(st_folder).modules
    assert Manifest.load(tmp_path / "s").num_layers == 2


def test_the_embedding_analysis_is_measured_once_then_read_back(st_folder, sentences, tmp_path,
                                                               monkeypatch):
    import layergraft.scoring.analysis as analysis_module
    from layergraft.embeddings.model import analyze_embedding_model, load_embedding_model
    from layergraft.scoring.analysis import AnalysisSettings

    teacher, _ = load_embedding_model(st_folder)
    settings = AnalysisSettings(batch_size=8)
    first = analyze_embedding_model(teacher, sentences, settings, cache_dir=tmp_path)

    def measure_again(*args, **kwargs):
        raise AssertionError("the cached analysis was measured again")

    monkeypatch.setattr(analysis_module, "analyze_model", measure_again)
    again = analyze_embedding_model(teacher, sentences, settings, cache_dir=tmp_path)
    assert torch.equal(again.scores.head, first.scores.head)
    assert torch.equal(again.scores.neuron, first.scores.neuron)
    with pytest.raises(AssertionError, match="measured again"):  # other settings: measured
        analyze_embedding_model(teacher, sentences, AnalysisSettings(batch_size=8, seed=1),
                                cache_dir=tmp_path)


def test_grafting_all_of_one_layer_equals_dropping_the_other(st_folder, sentences):
    from layergraft.embeddings.model import (
        embed,
        graft_embedding_model,
        load_embedding_model,
        transformer_of,
        with_transformer,
    )
    from layergraft.surgery.methods import GraftOptions
    from layergraft.surgery.plan import Plan
    from layergraft.surgery.recipes import apply_recipes, keep_recipe

    teacher, _ = load_embedding_model(st_folder)
    base = transformer_of(teacher)
    heads, width = base.config.num_attention_heads, base.config.intermediate_size
    # every unit of layer 1 scores above every unit of layer 0: the graft keeps layer 1 whole
    head_scores = torch.ones(4, heads)
    neuron_scores = torch.ones(4, width)
    head_scores[0], neuron_scores[0] = 0.0, 0.0
    student, _ = graft_embedding_model(
        teacher, plan=Plan.from_spans(4, "0-1"), head_scores=head_scores,
        neuron_scores=neuron_scores, options=GraftOptions(bias="later", norm="later"))
    dropped = apply_recipes(base, [keep_recipe(layer, heads, width) for layer in (1, 2, 3)])
    grafted = embed(student, sentences)
    assert torch.allclose(grafted, embed(with_transformer(teacher, dropped), sentences),
                          atol=1e-5)
    assert not torch.allclose(grafted, embed(teacher, sentences), atol=1e-3)


def test_embedding_loss_is_zero_for_the_teacher_against_itself(st_folder, sentences, tmp_path):
    from layergraft.embeddings.model import embed, load_embedding_model
    from layergraft.embeddings.objective import embedding_loss, make_loss, teacher_embeddings

    teacher, _ = load_embedding_model(st_folder)
    targets = teacher_embeddings(teacher, sentences, cache_dir=tmp_path)
    again = teacher_embeddings(teacher, sentences, cache_dir=tmp_path)  # read from the cache
    assert len(list((tmp_path / "embedding-teacher").iterdir())) == 1
    assert torch.equal(targets, again)
    live = embed(teacher, sentences)
    assert embedding_loss(live, targets, cosine_weight=0.5) == 0
    features = teacher[0].preprocess(sentences[:4]) if hasattr(teacher[0], "preprocess") else \
        teacher.tokenize(sentences[:4])
    for weight in (0.0, 1.0):
        loss = make_loss(teacher, weight).eval()
        with torch.no_grad():
            assert float(loss([features], targets[:4])) == pytest.approx(0.0, abs=1e-10)


def test_embedding_importance_needs_a_pool_and_scores_every_unit(st_folder, sentences):
    from layergraft.embeddings.model import (
        load_embedding_model,
        pool_function,
        tokenized_batches,
        transformer_of,
    )
    from layergraft.scoring.importance import score_importance

    teacher, _ = load_embedding_model(st_folder)
    batches = tokenized_batches(teacher, sentences, 8)
    with pytest.raises(LayergraftError, match="pooling function"):
        score_importance(transformer_of(teacher), batches, loss="embedding")
    scores = score_importance(transformer_of(teacher), batches, method="fisher",
                              loss="embedding", pool=pool_function(teacher))
    assert scores.neuron.shape == (4, 37) and (scores.head > 0).all()
    assert scores.info["examples"] == len(sentences)


def test_compress_embedding_trains_records_fidelity_and_resumes(st_folder, texts_file, tmp_path):
    import layergraft

    task = write_tiny_task(tmp_path / "task", sizes=(48, 16, 16))
    kwargs = dict(layers=2, out=tmp_path / "run", objective="embedding", texts=texts_file,
                  budget="4 steps", device="cpu", precision="fp32", eval_tasks=[task],
                  cache_dir=tmp_path / "cache")
    record = layergraft.compress(str(st_folder), None, **kwargs)
    assert record["layers"] == 2 and record["training"]["steps"] == 4
    assert record["held_out"] == 4 and -1 <= record["mean_cosine"] <= 1
    assert 0 <= record["neighbours"]["agreement"] <= 1 and record["neighbours"]["corpus"] == 32
    (measures,) = record["downstream"].values()
    assert set(measures) == {"probe_accuracy", "knn_accuracy"}
    assert set(measures["probe_accuracy"]) == {"teacher", "student", "retention"}
    speed = record["speed"]
    assert speed["ideal_ratio"] == 2 and speed["ratio"] > 0 and speed["texts"] == 4
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved == json.loads(json.dumps(record))
    (tmp_path / "run" / "model.safetensors").unlink()  # a finished run is not redone
    assert layergraft.compress(str(st_folder), None, **kwargs) == saved
    with pytest.raises(LayergraftError, match="another run"):
        layergraft.compress(str(st_folder), None, **{**kwargs, "budget": "2 steps"})


def test_surgery_only_with_the_similarity_method(st_folder, texts_file, tmp_path):
    from sentence_transformers import SentenceTransformer

    import layergraft

    record = layergraft.compress(str(st_folder), None, layers=3, out=tmp_path / "s",
                                objective="embedding", texts=texts_file,
                                method="drop-similar", strategy="none", eval_tasks=(),
                                device="cpu", precision="fp32")
    assert record["training"] is None and "downstream" not in record
    assert SentenceTransformer(str(tmp_path / "s"), device="cpu").encode(["w"]).shape == (1, 32)


def _cli(args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "layergraft.cli", *args], capture_output=True,
                          text=True, timeout=300)


def _one_line_error(result) -> str:
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_bad_input_is_one_line_and_a_nonzero_exit(st_folder, texts_file, tmp_path):
    import shutil

    not_transformer = tmp_path / "odd"
    shutil.copytree(st_folder, not_transformer)
    modules = json.loads((not_transformer / "modules.json").read_text())
    modules[0]["type"] = "sentence_transformers.models.StaticEmbedding"
    (not_transformer / "modules.json").write_text(json.dumps(modules))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    labels = tmp_path / "labels.csv"
    labels.write_text("label\n1\n0\n")
    common = ["--objective", "embedding", "--layers", "2", "--device", "cpu"]
    line = _one_line_error(_cli(["compress", str(not_transformer), "--texts", str(texts_file),
                                 "--out", str(tmp_path / "a"), *common]))
    assert "not a Transformer" in line
    line = _one_line_error(_cli(["compress", str(st_folder), "--texts", str(empty),
                                 "--out", str(tmp_path / "b"), *common]))
    assert "no usable lines" in line
    line = _one_line_error(_cli(["compress", str(st_folder), "--texts", str(labels),
                                 "--out", str(tmp_path / "c"), *common]))
    assert "no text column" in line
    _one_line_error(_cli(["compress", str(st_folder), "--task", str(labels),
                          "--out", str(tmp_path / "d"), *common]))
    done = _cli(["compress", str(st_folder), "--texts", str(texts_file), "--strategy", "none",
                 "--method", "drop-alternate", "--eval-task", "none",
                 "--out", str(tmp_path / "e"), *common])
    assert done.returncode == 0 and "mean cosine to the teacher" in done.stdout, done.stderr

"""--choose-by reconstruction: per span, the graft options whose layer best rebuilds the span."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import make_tiny_model
from test_cli import assert_one_line_error, run_cli
from tiny_task import save_tiny_teacher, tiny_tokenizer, write_tiny_task
from transformers import AutoModelForSequenceClassification

from layergraft.data.encoding import encode, loader
from layergraft.data.tasks import load_task
from layergraft.errors import LayergraftError
from layergraft.models import save_model
from layergraft.pipeline.compress import compress
from layergraft.scoring.analysis import AnalysisSettings
from layergraft.surgery.arch import ffn_width, num_heads
from layergraft.surgery.choose import candidate_options
from layergraft.surgery.graft import graft_model
from layergraft.surgery.manifest import Manifest
from layergraft.surgery.methods import GraftOptions
from layergraft.surgery.plan import Plan
from layergraft.surgery.recipes import keep_recipe
from layergraft.training.calibrate import ReconstructionJudge, calibration_texts
from layergraft.training.distill import TeacherCache
from layergraft.training.heal import span_errors
from layergraft.training.train import TrainConfig

CHOOSE = GraftOptions(choose="reconstruction", calibration=40)
PLAN = "0-2,4-5"  # a 3-layer span, a copy (layer 3) and a pair


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A 6-layer tiny BERT whose biases and LayerNorms differ between layers (at random
    init they are all 0 and 1, so every bias and norm rule would build the same layer),
    importance scores, and its calibration texts."""
    root = tmp_path_factory.mktemp("choose")
    teacher = make_tiny_model("bert", num_layers=6, seed=0)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in teacher.named_parameters():
            if ".layer." in name and ("bias" in name or "LayerNorm.weight" in name):
                parameter.add_(0.5 * torch.randn(parameter.shape, generator=generator))
    tokenizer = tiny_tokenizer()
    train = encode(load_task(write_tiny_task(root / "task")), tokenizer, 24)["train"]
    scores = {"head_scores": torch.rand(6, num_heads(teacher.config), generator=generator),
              "neuron_scores": torch.rand(6, ffn_width(teacher), generator=generator)}
    return teacher, tokenizer, calibration_texts(train, CHOOSE.calibration), scores, root


def grafted(setup, options: GraftOptions, method: str = "graft", seed: int = 0):
    teacher, tokenizer, texts, scores, root = setup
    judge = ReconstructionJudge(teacher, texts, tokenizer, cache_dir=root / "cache")
    return graft_model(teacher, plan=Plan.from_spans(6, PLAN), method=method, options=options,
                       judge=judge, seed=seed, **scores)


def measured(setup, student, manifest) -> list[float]:
    """Span errors of every layer on the calibration texts, measured apart from the judge."""
    teacher, tokenizer, texts, _, root = setup
    cache = TeacherCache.build(teacher, texts, tokenizer, layers=range(7),
                               cache_dir=root / "cache")
    return span_errors(student, cache, list(loader(texts, tokenizer, 8)), manifest.span_ends())


def test_the_candidates_are_the_runs_options_then_every_rule_once():
    grid = candidate_options(GraftOptions(quota="equal"))
    assert len(grid) == 2 * 4 * 3 and grid[0] == GraftOptions(quota="equal")
    assert all(o.quota == "equal" and o.choose == "fixed" for o in grid)
    own = GraftOptions(bias="later", max_sources=3, choose="reconstruction")
    assert candidate_options(own)[0] == GraftOptions(bias="later", max_sources=3)
    assert len(candidate_options(own)) == 25


def test_each_span_gets_its_lowest_error_candidate_and_copies_stay(setup):
    student, manifest = grafted(setup, CHOOSE)
    choice = manifest.steps[-1].choice
    assert choice["by"] == "reconstruction" and choice["texts"] == 40
    assert [s["layer"] for s in choice["spans"]] == [0, 2] and choice["spans"][1]["span"] == [4, 5]
    # a pair's top two are all of it: 12 distinct layers, a 3-layer span's 24
    assert [len(s["candidates"]) for s in choice["spans"]] == [24, 12]
    errors = measured(setup, student, manifest)
    for span in choice["spans"]:
        candidates = [c["error"] for c in span["candidates"]]
        assert span["error"] == min(candidates) and max(candidates) > 1.01 * min(candidates)
        assert errors[span["layer"]] == pytest.approx(span["error"], rel=1e-5)
        assert span["chosen"] == {k: v for k, v in span["candidates"][
            candidates.index(min(candidates))].items() if k != "error"}
    assert manifest.steps[-1].recipes[1] == keep_recipe(3, 4, ffn_width(setup[0]))
    # every candidate, grafted as the only rule, is no better on any span; the default
    # (the first candidate) is worse on at least one
    for index, options in enumerate(candidate_options(GraftOptions())):
        fixed = measured(setup, *graft_model(setup[0], plan=Plan.from_spans(6, PLAN),
                                             options=options, **setup[3]))
        assert all(errors[k] <= fixed[k] * (1 + 1e-5) for k in (0, 2)), options
        assert index or any(errors[k] < 0.99 * fixed[k] for k in (0, 2))


def test_the_choice_is_in_the_saved_manifest_and_the_model_loads_stock(setup, tmp_path):
    teacher, tokenizer, *_ = setup
    student, manifest = grafted(setup, CHOOSE)
    save_model(student, tokenizer, tmp_path / "s", manifest=manifest)
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "s").eval()
    assert loaded.config.num_hidden_layers == 3
    saved = json.loads((tmp_path / "s" / "graft_manifest.json").read_text())
    assert saved["steps"][-1]["choice"] == manifest.steps[-1].choice
    assert saved["steps"][-1]["options"]["choose"] == "reconstruction"
    assert Manifest.load(tmp_path / "s").steps[-1].choice == manifest.steps[-1].choice
    ids = torch.tensor([[2, 7, 9, 11, 3]])
    assert torch.allclose(loaded(input_ids=ids).logits, student.eval()(input_ids=ids).logits)


def test_the_choice_is_deterministic_under_a_seed(setup):
    first, one = grafted(setup, CHOOSE, method="random", seed=3)
    second, two = grafted(setup, CHOOSE, method="random", seed=3)
    assert one.steps[-1].choice == two.steps[-1].choice
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(),
                                                  second.state_dict().values(), strict=True))


def test_bad_choice_requests_are_refused_in_one_line(setup):
    with pytest.raises(LayergraftError, match="--choose-by must be one of fixed, reconstruction"):
        GraftOptions(choose="best")
    with pytest.raises(LayergraftError, match="--calibration must be 1 or more"):
        GraftOptions(choose="reconstruction", calibration=0)
    with pytest.raises(LayergraftError, match="calibrates on training texts: give --task"):
        graft_model(setup[0], layers=3, options=CHOOSE, **setup[3])
    with pytest.raises(LayergraftError, match="training split is empty"):
        calibration_texts(setup[2].select([]), 8)
    # the fixed options' record is unchanged, so runs from before the choice stay valid
    assert "choose" not in GraftOptions().to_dict()


def test_graft_command_chooses_on_the_task_and_needs_one(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("LAYERGRAFT_CACHE", str(tmp_path / "cache"))
    teacher = save_tiny_teacher(tmp_path / "teacher")
    args = ("graft", teacher, "--layers", "2", "--method", "random", "--choose-by",
            "reconstruction", "--calibration", "16", "--out", str(tmp_path / "s"))
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert_one_line_error(code, err, "--choose-by reconstruction calibrates on training texts")
    code, _, err = run_cli(monkeypatch, capsys, "graft", teacher, "--layers", "2", "--choose-by",
                           "best", "--method", "random", "--out", str(tmp_path / "s"))
    assert_one_line_error(code, err, "--choose-by must be one of")
    code, _, err = run_cli(monkeypatch, capsys, *args, "--task",
                           write_tiny_task(tmp_path / "task"))
    assert code == 0, err
    choice = Manifest.load(tmp_path / "s").steps[-1].choice
    assert choice["texts"] == 16 and len(choice["spans"]) == 2


def test_compress_records_the_choice_and_keys_runs_by_it(tmp_path):
    teacher = save_tiny_teacher(tmp_path / "teacher")
    options = dict(layers=2, strategy="none", out_dir=tmp_path / "run", method="random",
                   graft_options=GraftOptions(choose="reconstruction", calibration=16),
                   analysis=AnalysisSettings(samples=16, batch_size=16, max_length=24,
                                             progress=False),
                   training=TrainConfig(output_dir="", batch_size=16, max_length=24,
                                        eval_batch_size=32, progress=False),
                   cache_dir=tmp_path / "cache", speed=False, ood=False, progress=False,
                   precision="fp32", allow_untrained_head=True)
    task = write_tiny_task(tmp_path / "task")
    record = compress(teacher, task, **options)
    assert record["settings"]["graft_options"]["choose"] == "reconstruction"
    assert record["settings"]["graft_options"]["calibration"] == 16
    assert record["choice"] == [Manifest.load(tmp_path / "run").steps[-1].choice]
    assert len(record["choice"][0]["spans"]) == 2
    assert "chosen per span by reconstruction on 16" in (tmp_path / "run" / "README.md").read_text()
    assert compress(teacher, task, **options, dry_run=True)["status"] == "done"
    for other in (GraftOptions(), GraftOptions(choose="reconstruction", calibration=8)):
        assert compress(teacher, task, **{**options, "graft_options": other},
                        dry_run=True)["status"] == "stale"


def test_an_embedding_model_is_grafted_by_choice_on_its_training_texts(st_folder, texts_file,
                                                                          tmp_path):
    import layergraft

    record = layergraft.compress(str(st_folder), None, layers=2, out=tmp_path / "s",
                                objective="embedding", texts=texts_file, method="random",
                                strategy="none", eval_tasks=(), graft_options=CHOOSE,
                                cache_dir=tmp_path / "cache", speed=False, device="cpu",
                                precision="fp32")
    assert record["settings"]["graft_options"]["choose"] == "reconstruction"
    choice = Manifest.load(tmp_path / "s").steps[-1].choice
    assert choice["texts"] == 36 and len(choice["spans"]) == 2  # 40 texts, a tenth held out

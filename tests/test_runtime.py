"""Device and precision chosen by the hardware (`layergraft.runtime`), and recorded."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from tiny_task import save_tiny_teacher, train_tiny_teacher, write_tiny_task
from typer.testing import CliRunner

from layergraft import runtime
from layergraft.cli import app
from layergraft.errors import LayergraftError
from layergraft.pipeline.compress import compress
from layergraft.runtime import Runtime, resolve_device, resolve_precision
from layergraft.scoring.analysis import AnalysisSettings
from layergraft.training.train import TrainConfig

CPU = torch.device("cpu")


@pytest.fixture
def emulated_bf16(monkeypatch):
    """A CPU like the AMD EPYC one: AVX2 only, bf16 emulated."""
    monkeypatch.setattr(runtime, "cpu_features",
                        lambda: {"avx512_bf16": False, "amx_bf16": False})


@pytest.fixture
def native_bf16_cpu(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_features",
                        lambda: {"avx512_bf16": False, "amx_bf16": True})


def test_auto_is_fp32_where_bf16_is_emulated(emulated_bf16):
    assert resolve_precision("auto", CPU) == "fp32"
    assert Runtime.resolve("cpu", "auto").precision == "fp32"


def test_auto_is_bf16_where_the_cpu_has_it(native_bf16_cpu):
    assert resolve_precision("auto", CPU) == "bf16"
    assert "AMX-BF16" in runtime.cpu_capability()


def test_auto_on_cuda_is_bf16_where_supported_else_fp16(monkeypatch):
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert resolve_precision("auto", cuda) == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    assert resolve_precision("auto", cuda) == "fp16"


def test_explicit_choices_are_kept_or_refused_in_one_line(emulated_bf16):
    assert resolve_precision("bf16", CPU) == "bf16"  # asked for: honoured, even if slow
    assert resolve_precision("fp32", CPU) == "fp32"
    with pytest.raises(LayergraftError, match="fp16 autocast needs a CUDA device"):
        resolve_precision("fp16", CPU)
    with pytest.raises(LayergraftError, match="unknown precision 'fp8'"):
        resolve_precision("fp8", CPU)


def test_devices_are_checked_against_this_machine(monkeypatch):
    assert resolve_device("cpu") == CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == CPU
    for name, message in (("cuda:3", "is not here"), ("mps", "not available"),
                          ("tpu", "unknown device")):
        with pytest.raises(LayergraftError, match=message):
            resolve_device(name)


def test_autocast_only_for_mixed_precision():
    assert not isinstance(Runtime(CPU, "fp32").autocast(), torch.autocast)
    assert isinstance(Runtime(CPU, "bf16").autocast(), torch.autocast)


def test_training_follows_the_resolved_precision(emulated_bf16):
    from layergraft.data.tasks import TASKS

    args = TrainConfig(output_dir="x").training_arguments(TASKS["sst2"])
    assert not args.bf16 and not args.fp16 and args.use_cpu
    args = TrainConfig(output_dir="x", precision="bf16").training_arguments(TASKS["sst2"])
    assert args.bf16


def test_every_command_takes_device_and_precision_and_says_once_what_it_uses(tmp_path):
    teacher = save_tiny_teacher(tmp_path / "teacher")
    task = write_tiny_task(tmp_path / "task")
    runner = CliRunner()
    result = runner.invoke(app, ["evaluate", teacher, "--task", task, "--split", "dev",
                                 "--device", "cpu", "--precision", "fp32",
                                 "--json", str(tmp_path / "eval.json")])
    assert result.exit_code == 0, result.output
    assert result.stderr.count("running on cpu (") == 1 and "fp32" in result.stderr
    record = json.loads((tmp_path / "eval.json").read_text())
    assert record["settings"]["device"] == "cpu" and record["settings"]["precision"] == "fp32"
    for command in ("analyze", "graft", "finetune", "evaluate", "compress", "compare", "bench",
                    "demo"):
        help_text = runner.invoke(app, [command, "--help"]).output
        assert "--device" in help_text and "--precision" in help_text, command


def test_bf16_flag_is_a_deprecated_alias(tmp_path):
    teacher = save_tiny_teacher(tmp_path / "teacher")
    task = write_tiny_task(tmp_path / "task")
    result = CliRunner().invoke(app, ["evaluate", teacher, "--task", task, "--split", "dev",
                                      "--device", "cpu", "--bf16"])
    assert result.exit_code == 0, result.output
    assert "--bf16 is deprecated" in result.stderr and "bf16" in result.stderr


def test_a_bad_device_or_precision_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    from test_cli import assert_one_line_error, run_cli

    teacher = save_tiny_teacher(tmp_path / "teacher")
    task = write_tiny_task(tmp_path / "task")
    for flag, value, fragment in (("--device", "tpu", "unknown device 'tpu'"),
                                  ("--precision", "fp8", "unknown precision 'fp8'")):
        code, _, err = run_cli(monkeypatch, capsys, "evaluate", teacher, "--task", task,
                               flag, value)
        assert_one_line_error(code, err, fragment)


def test_a_teacher_retrained_into_the_same_folder_never_returns_old_results(tmp_path):
    """Resume is keyed by the content of teacher and data, not by the teacher's path."""
    task = write_tiny_task(tmp_path / "task")
    teacher = train_tiny_teacher(tmp_path / "a", task)
    options = dict(layers=2, strategy="none", speed=False, progress=False, precision="fp32",
                   analysis=AnalysisSettings(samples=32, batch_size=16, max_length=24,
                                             progress=False),
                   training=TrainConfig(output_dir="", max_length=24, progress=False),
                   cache_dir=tmp_path / "cache")
    first = compress(teacher, task, out_dir=tmp_path / "run", **options)
    assert first["settings"]["precision"] == "fp32" and first["runtime"]["device"] == "cpu"
    # the same folder now holds another teacher (re-fine-tuned with another seed)
    other = train_tiny_teacher(tmp_path / "b", task, seed=1)
    for name in ("model.safetensors", "config.json"):
        (tmp_path / "a" / "teacher" / name).write_bytes((tmp_path / "b" / "teacher" / name)
                                                        .read_bytes())
    assert other and teacher.endswith("teacher")
    with pytest.raises(LayergraftError, match="holds another run"):
        compress(teacher, task, out_dir=tmp_path / "run", **options)
    again = compress(teacher, task, out_dir=tmp_path / "run", overwrite=True, **options)
    assert again["teacher"]["fingerprint"] != first["teacher"]["fingerprint"]
    assert again["settings"]["teacher_content"] != first["settings"]["teacher_content"]


@pytest.mark.skipif(sys.platform != "linux", reason="the peak window is Linux's VmHWM")
def test_peak_memory_is_measured_from_the_last_reset_not_the_process_start():
    cpu = Runtime(torch.device("cpu"), "fp32")
    big = b"\x01" * 1_500_000_000  # every page written, so resident
    before = cpu.peak_memory()["peak_rss_bytes"]
    del big
    cpu.reset_peak_memory()
    after = cpu.peak_memory()["peak_rss_bytes"]
    assert after < before - 1_000_000_000  # the buffer's peak is forgotten
    held = torch.ones(50_000_000)  # 200 MB
    assert cpu.peak_memory()["peak_rss_bytes"] >= after + 150_000_000
    del held

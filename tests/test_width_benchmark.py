"""Issue 35's width stage: its plan (the grid, then seeds for the dev front) and its section
(the front per CPU, every target MET or MISSED) on synthetic rows in tmp files."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from lib.width_plan import GRIDS, Point, chosen, grid, plan  # noqa: E402
from report.width_section import section, width_pays  # noqa: E402

SPEED = {1: 9.0, 2: 5.5, 3: 3.8}  # torch-fp32 speed-up at full width, by depth


def synthetic(seeds=(0,), int8=True) -> list[dict]:
    """Runs and speeds of the MiniLM grid: narrower is faster and retains a little less."""
    rows = []
    for p in grid("minilm"):
        narrow = 1536 / p.ffn_size
        for seed in seeds:
            for split in ("dev", "test"):
                rows.append({"kind": "run", "run": Point("minilm", p.layers, p.ffn_size,
                                                          seed).name,
                             "model": "minilm", "shape": p.shape, "ffn_size": p.ffn_size,
                             "layers": p.layers, "seed": seed, "split": split,
                             "retention": 0.9 + 0.03 * p.layers - 0.004 * narrow
                             + 0.001 * seed})
        for backend, gain in (("torch-fp32", 1.0), ("onnx-int8", 1.6)):
            rows.append({"kind": "speed", "model": "minilm", "cpu": "Test CPU",
                         "cpu_capability": "AVX512", "int8_units": ["avx512_vnni"] if int8
                         else [], "backend": backend, "shape": p.shape, "layers": p.layers,
                         "ffn_size": p.ffn_size,
                         "throughput_ratio": SPEED[p.layers] * gain * narrow ** 0.4})
    return rows


def test_plan_is_the_grid_then_seeds_for_the_front_and_depth_alone():
    assert len(grid("minilm")) == 12 and grid("minilm")[0] == Point("minilm", 3, 1536)
    waiting = plan([])
    assert [p for p, pending in waiting if pending is None] == grid("minilm")
    assert all(pending for _, pending in waiting[12:])
    rows = synthetic()
    picked = chosen(rows, "minilm")
    assert picked and all(p.seed == 0 for p in picked)
    extra = [p for p, pending in plan(rows)[12:]]
    depth_alone = [p for p in grid("minilm") if p.full_width and p not in picked]
    assert {p.seed for p in extra} == {1, 2}
    assert len(extra) == 2 * (len(picked) + len(depth_alone))
    assert {(p.layers, p.ffn_size) for p in extra if p.full_width} == {(3, 1536), (2, 1536),
                                                                       (1, 1536)}
    assert set(GRIDS) == {"minilm", "mpnet"}


def test_section_marks_every_target(tmp_path):
    path = tmp_path / "width.json"
    assert "No runs yet" in section(path)
    path.write_text(json.dumps(synthetic(seeds=(0, 1, 2))))
    text = section(path)
    assert "### Test CPU" in text and "onnx-int8" in text
    assert text.count("MET") + text.count("MISSED") == 3  # two speed targets + width pays
    assert "- MET: VNNI/AMX: >= 97% retention at >= 10x" in text
    assert "MISSED: VNNI/AMX: >= 98%" not in text or "MET: VNNI/AMX: >= 98%" not in text
    path.write_text(json.dumps(synthetic(seeds=(0, 1, 2), int8=False)))
    assert "AVX2 only: >= 97% retention at >= 4.5x" in section(path)


def test_one_seed_meets_no_target_yet(tmp_path):
    path = tmp_path / "width.json"
    rows = synthetic(seeds=(0,))
    path.write_text(json.dumps(rows + [{**r, "metric": "macro_f1"} for r in rows
                                       if r["kind"] == "run"]))  # a second metric, one seed
    text = section(path)
    assert "- MET:" not in text and "± 0.0" not in text  # one seed has no spread
    assert "- PENDING (fewer than 3 seeds): VNNI/AMX: >= 97% retention at >= 10x" in text


def _point(backend, shape, speed, mean, std=0.001):
    layers, ffn = shape.split("L-ffn")
    return {"backend": backend, "shape": shape, "ffn_size": int(ffn), "layers": int(layers),
            "throughput_ratio": speed, "retention": {"mean": mean, "std": std, "n": 3}}


def test_width_pays_at_two_speed_points_of_one_backend():
    pairs = [("2L-ffn1536", 3.0, 0.96), ("3L-ffn384", 3.5, 0.99),
             ("1L-ffn1536", 6.0, 0.93), ("2L-ffn384", 6.5, 0.97)]
    one = [_point("torch-fp32", *p) for p in pairs]
    text, status = width_pays(one, "minilm")
    assert status == "MET" and "torch-fp32: 3L-ffn384 over 2L-ffn1536 +3.0 pts" in text
    split = one[:2] + [_point("onnx-int8", *p) for p in pairs[2:]]  # one point per backend
    assert width_pays(split, "minilm")[1] == "MISSED"
    unseeded = one[:2] + [_point("torch-fp32", *p, std=None) for p in pairs[2:]]
    assert width_pays(unseeded, "minilm")[1] == "PENDING (seeds)"

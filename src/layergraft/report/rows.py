"""A classifier's compress record flattened to the long rows its report reads, and how rows
and reports name a strategy. Reads the record alone."""

from __future__ import annotations

from collections.abc import Mapping

SHAPE_BENCH = "shape_speed.json"  # a grid's one bench of its student shapes (pipeline.shape_speed)


def strategy_label(strategy: str, heal_steps: int = 0) -> str:
    """How runs and reports name a strategy: healing before training shows
    (`distill+heal26`), since it is another recipe; `heal` alone is its own strategy."""
    return f"{strategy}+heal{heal_steps}" if heal_steps and strategy != "heal" else strategy


def record_rows(record: Mapping, budget: float = 1.0) -> list[dict]:
    """A compress results record flattened to the long rows the report reads.

    `budget` is the run's fraction of the full training budget (0 for surgery only).
    """
    speed = record.get("speed") or {}
    ratios = speed.get("throughput_ratio") or {}
    budget = 0.0 if record["strategy"] == "none" else budget
    healed = (record.get("heal") or {}).get("steps", 0)
    base = {"task": record["task"], "method": record["method"],
            "strategy": strategy_label(record["strategy"], healed),
            "layers": record["layers"], "budget": budget,
            "seed": record["seed"], "params": record["student"]["parameters"],
            "teacher_params": record["teacher"]["parameters"],
            "throughput_ratio": ratios.get("32"), "throughput_ratio_b1": ratios.get("1"),
            "train_seconds": record["train"]["seconds"]}
    rows = []
    for split, result in record.items():
        if not isinstance(result, Mapping) or "metrics" not in result:
            continue
        for metric, value in result["metrics"].items():
            rows.append({**base, "split": split, "metric": metric, "value": value,
                         "teacher_value": result["teacher"][metric],
                         "retention": result["retention"][metric],
                         "agreement": result["agreement"], "examples": result["examples"]})
    return rows

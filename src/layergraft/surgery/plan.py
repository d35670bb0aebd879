"""Which adjacent layers become one: a validated, serialisable partition of the layers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from layergraft.errors import LayergraftError


@dataclass(frozen=True)
class Plan:
    """A partition of `num_layers` layers into contiguous groups, in order.

    Each group becomes one layer of the new model: a singleton group is kept as is, a
    group of two or more is merged (grafted, averaged or reduced to one of its layers).
    """

    num_layers: int
    groups: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        flat = [layer for group in self.groups for layer in group]
        if flat != list(range(self.num_layers)) or any(not group for group in self.groups):
            raise LayergraftError(
                f"plan {self.describe()} does not fit a model with {self.num_layers} layers: "
                f"groups must be contiguous, in order and cover layers 0-{self.num_layers - 1} "
                "exactly once"
            )

    @property
    def target_layers(self) -> int:
        return len(self.groups)

    def describe(self) -> str:
        return ",".join("-".join(str(i) for i in (g[0], g[-1])) if len(g) > 1 else str(g[0])
                        for g in self.groups)

    def to_dict(self) -> dict:
        return {"num_layers": self.num_layers, "groups": [list(g) for g in self.groups]}

    @classmethod
    def from_dict(cls, data: dict) -> Plan:
        return cls(int(data["num_layers"]), tuple(tuple(int(i) for i in g) for g in data["groups"]))

    @classmethod
    def from_groups(cls, num_layers: int, groups: Sequence[Sequence[int]]) -> Plan:
        return cls(num_layers, tuple(tuple(g) for g in groups))

    @classmethod
    def from_spans(cls, num_layers: int, spans: str) -> Plan:
        """Parse "0-1,2-3" (each span merges into one layer; unlisted layers stay)."""
        merged: list[tuple[int, int]] = []
        for part in filter(None, (p.strip() for p in spans.split(","))):
            try:
                first, _, last = part.partition("-")
                start, end = int(first), int(last or first)
            except ValueError:
                raise LayergraftError(
                    f"cannot read span '{part}' in '{spans}': write spans as FIRST-LAST, "
                    "e.g. --pairs 0-1,2-3"
                ) from None
            if not 0 <= start <= end < num_layers:
                raise LayergraftError(
                    f"span '{part}' does not fit a model with {num_layers} layers "
                    f"(layers are numbered 0-{num_layers - 1})"
                )
            merged.append((start, end))
        merged.sort()
        for (_, end), (start, _) in zip(merged, merged[1:], strict=False):
            if start <= end:
                raise LayergraftError(f"spans in '{spans}' overlap: each layer may merge once")
        groups: list[tuple[int, ...]] = []
        layer = 0
        for start, end in merged:
            groups.extend((i,) for i in range(layer, start))
            groups.append(tuple(range(start, end + 1)))
            layer = end + 1
        groups.extend((i,) for i in range(layer, num_layers))
        return cls.from_groups(num_layers, groups)

    @classmethod
    def uniform(cls, num_layers: int, target_layers: int) -> Plan:
        """Contiguous groups of near-equal size, larger groups at the top (no data needed)."""
        check_target_depth(num_layers, target_layers)
        base, extra = divmod(num_layers, target_layers)
        sizes = [base + (1 if i >= target_layers - extra else 0) for i in range(target_layers)]
        groups, start = [], 0
        for size in sizes:
            groups.append(tuple(range(start, start + size)))
            start += size
        return cls.from_groups(num_layers, groups)

    @classmethod
    def intact_bottom(cls, num_layers: int, target_layers: int, intact: int) -> Plan:
        """Layers 0..intact-1 kept as they are, the rest in near-equal groups (larger at the
        top): lower layers carry the most (Sajjad et al. 2020), so a deep model may lose less
        by merging only above them (12 -> 6 with 4 intact: 0,1,2,3,4-7,8-11)."""
        check_target_depth(num_layers, target_layers)
        if not 0 <= intact < target_layers:
            raise LayergraftError(f"a {target_layers}-layer plan keeps 0 to {target_layers - 1} "
                                  f"bottom layers intact, not {intact}")
        upper = cls.uniform(num_layers - intact, target_layers - intact) if (
            num_layers - intact > target_layers - intact) else None
        groups = [(i,) for i in range(intact)]
        groups += [tuple(i + intact for i in g) for g in upper.groups] if upper else []
        return cls.from_groups(num_layers, groups)

    def spans(self) -> str:
        """The merged groups as spans ("4-7,8-11"), the form `from_spans` and --plan read."""
        return ",".join(f"{g[0]}-{g[-1]}" for g in self.groups if len(g) > 1)

    @classmethod
    def by_similarity(cls, cka: torch.Tensor, target_layers: int) -> Plan:
        """The partition whose merged neighbours are most similar, groups kept balanced.

        `cka` is the [L+1, L+1] matrix over hidden states (0 = embeddings); merging layers
        i and i+1 is worth cka[i+1, i+2], the similarity of their outputs. No group may
        exceed ceil(L / target) layers: one huge group loses most of its width, so
        6 -> 3 merges pairs and similarity decides where the slack goes (6 -> 4).
        """
        num_layers = cka.shape[0] - 1
        check_target_depth(num_layers, target_layers)
        largest = -(-num_layers // target_layers)
        gain = [float(cka[i + 1, i + 2]) for i in range(num_layers - 1)]

        def worth(start: int, end: int) -> float:  # layers start..end-1 in one group
            return sum(gain[start:end - 1])

        # best[g][j]: (score, groups) for the first j layers split into g groups
        best: list[dict[int, tuple[float, tuple]]] = [{0: (0.0, ())}]
        for g in range(1, target_layers + 1):
            row = {}
            for j in range(g, num_layers + 1):
                options = [(best[g - 1][i][0] + worth(i, j), best[g - 1][i][1] + ((i, j),))
                           for i in range(max(0, j - largest), j) if i in best[g - 1]]
                if options:
                    row[j] = max(options, key=lambda option: option[0])
            best.append(row)
        _, spans = best[target_layers][num_layers]
        return cls.from_groups(num_layers, [tuple(range(a, b)) for a, b in spans])


def check_target_depth(num_layers: int, target_layers: int) -> None:
    """A compressed model keeps at least one layer and loses at least one."""
    if num_layers < 2:
        raise LayergraftError(f"a {num_layers}-layer model cannot be made shallower")
    if not 1 <= target_layers < num_layers:
        raise LayergraftError(
            f"--layers must be between 1 and {num_layers - 1} for this {num_layers}-layer "
            f"model, not {target_layers}"
        )


PLAN_FORMS = "uniform (the method's own), intact:K (keep the bottom K layers, merge above), " \
             "explicit spans such as 4-7,8-11, or auto (chosen by a short distillation probe)"


def plan_spans(plan: str | None, num_layers: int, target_layers: int) -> str | None:
    """The spans a --plan value stands for (None: the method's own plan); `auto` is chosen
    elsewhere (`layergraft.pipeline.auto`), by training, never by surgery alone."""
    if plan in (None, "", "uniform"):
        return None
    if plan.startswith("intact:"):
        count = plan.partition(":")[2]
        if not count.isdigit():
            raise LayergraftError(f"cannot read --plan {plan}: write intact:K with K a number "
                                  "of bottom layers, e.g. intact:4")
        return Plan.intact_bottom(num_layers, target_layers, int(count)).spans() or None
    if plan == "auto":
        raise LayergraftError("--plan auto is resolved by a probe before surgery; pass "
                              f"{PLAN_FORMS}")
    chosen = Plan.from_spans(num_layers, plan)
    if chosen.target_layers != target_layers:
        raise LayergraftError(f"--plan {plan} leaves {chosen.target_layers} layers, not the "
                              f"{target_layers} asked by --layers")
    return chosen.spans()

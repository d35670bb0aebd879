"""Width of a graft (DESIGN.md section 15): how many FFN neurons each new layer keeps, and
why attention heads stay whole in the encoder families.

A graft chooses units by importance, so it can keep fewer than the standard count. The
student's config has one `intermediate_size` for every layer (what stock `from_pretrained`
builds), so a plan that keeps some layers whole while its new layers get narrower shrinks
those too, each to its own best neurons; `--ffn-size-all` asks for that outright.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from transformers import PretrainedConfig

from layergraft.errors import LayergraftError


def parse_ffn_size(value: int | float | str | None) -> int | float | None:
    """--ffn-size as given: a neuron count (`512`, "512") or a fraction in (0, 1] of the
    teacher's intermediate_size (`0.5`, "0.5"); None leaves the width alone."""
    if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        number = value
    else:
        text = str(value).strip()
        try:
            number = int(text) if text.lstrip("+-").isdigit() else float(text)
        except ValueError:
            number = math.nan
    if isinstance(number, bool) or (isinstance(number, float) and not 0 < number <= 1):
        raise LayergraftError(f"--ffn-size takes a neuron count (1 or more) or a fraction in "
                              f"(0, 1] of the teacher's intermediate_size, not '{value}'")
    if isinstance(number, int) and number < 1:
        raise LayergraftError(f"--ffn-size must be 1 neuron or more, not {number}")
    return number


def resolve_ffn_size(value: int | float | None, teacher_width: int) -> int | None:
    """The neuron count of `value`: a fraction of `teacher_width` rounds half up, to 1 at
    least; None stays None (the input model's width)."""
    if isinstance(value, float):
        return max(1, math.floor(value * teacher_width + 0.5))
    return value


def shrinks_intact(groups: Sequence[Sequence[int]], width: int, new_width: int) -> bool:
    """Whether layers kept whole must shrink to `new_width` so every layer has one width;
    refuses a width that a merged span's pool (its sources' neurons together) cannot give,
    or one wider than the layers kept whole."""
    for group in groups:
        if len(group) > 1 and new_width > len(group) * width:
            raise LayergraftError(
                f"--ffn-size {new_width} is more neurons than layers {group[0]}-{group[-1]} "
                f"hold together ({len(group)} x {width} = {len(group) * width}): choose "
                f"{len(group) * width} or fewer")
    intact = [group[0] for group in groups if len(group) == 1]
    if intact and new_width > width:
        raise LayergraftError(
            f"--ffn-size {new_width} is wider than the {width} neurons of the layers this plan "
            f"keeps whole ({', '.join(map(str, intact))}), and every layer of a student has one "
            f"width: choose {width} or fewer")
    return bool(intact) and new_width < width


def width_record(requested: int | float, new_width: int, width: int,
                 intact: Sequence[int], asked_all: bool) -> dict:
    """The manifest's note on a step's width: what was asked, what every layer got, and
    whether (and why) the layers kept whole shrank."""
    shrunk = bool(intact) and new_width < width
    record = {"ffn_size": requested, "neurons": new_width, "input_width": width,
              "intact_layers": list(intact), "intact": "shrunk" if shrunk else "kept"}
    if shrunk:
        record["why"] = ("--ffn-size-all" if asked_all else
                         "mixed widths: the layers kept whole shrank to their own best "
                         f"{new_width} neurons so that intermediate_size stays uniform")
    return record


def tied_heads(config: PretrainedConfig) -> bool:
    """Whether a family's head size is hidden_size / num_attention_heads (no head_dim of its
    own), as in every BERT-family encoder."""
    return getattr(config, "head_dim", None) is None


def check_heads(config: PretrainedConfig, heads: int | None) -> None:
    """Refuse --heads where a layer cannot keep fewer heads and stay a stock model."""
    if heads is None:
        return
    model_type = getattr(config, "model_type", "this")
    if tied_heads(config):
        raise LayergraftError(
            f"--heads needs a config with head_dim apart from hidden_size (decoder families); "
            f"a '{model_type}' head is hidden_size / num_attention_heads wide, so fewer heads "
            "would change the hidden size, and transformers 5 has no pruned_heads to load "
            "them: use --ffn-size for width")
    raise LayergraftError(f"--heads is not available for '{model_type}' models yet")

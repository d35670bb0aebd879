"""Attention transfer by provenance: each student head learns the attention of its source head.

The graft manifest records, for every head slot of every student layer, the teacher layer and
head it was copied from (`Manifest.composed_layers`); a kept layer's heads trace to that
layer, and a weight-averaged layer (no single source per head) maps slot h to head h of the
teacher layer that ends its span. The loss is the KL divergence KL(teacher || student) of
each head's attention distribution, averaged over the real query tokens of each example, then
over heads, layers and examples. Attention maps are too large to cache, so the teacher runs
live on each batch (about one teacher forward per step), and both models use the eager
attention implementation, the one that returns attention probabilities.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from transformers import PreTrainedModel

from layergraft.surgery.manifest import Manifest

HeadMap = list[list[tuple[int, int]]]  # [student layer][slot] -> (teacher layer, teacher head)


def head_map_from_manifest(manifest: Manifest) -> HeadMap:
    """The teacher (layer, head) behind every student head slot."""
    ends = manifest.span_ends()
    out = []
    for layer, end in zip(manifest.composed_layers(), ends, strict=True):
        heads = layer["heads"]
        if heads is None:
            heads = [(end - 1, h) for h in range(int(manifest.teacher["num_heads"]))]
        out.append([(int(t_layer), int(t_head)) for t_layer, t_head in heads])
    return out


def use_eager_attention(model: PreTrainedModel) -> None:
    """Attention probabilities are only returned by the eager implementation."""
    if getattr(model.config, "_attn_implementation", "eager") != "eager":
        model.set_attn_implementation("eager")


def attention_kl(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor],
                 head_map: HeadMap, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean KL(teacher head || student head) over real query tokens, heads, layers, examples.

    `student[k]` and `teacher[l]` are [batch, heads, query, key] attention probabilities."""
    query = attention_mask.bool()
    stacked = torch.stack(list(teacher))  # [layers, batch, heads, query, key]
    terms = []
    for k, slots in enumerate(head_map):
        layers = torch.tensor([t for t, _ in slots])
        heads = torch.tensor([h for _, h in slots])
        target = stacked[layers, :, heads].transpose(0, 1).float()  # [batch, heads, q, k]
        log_student = student[k].float().clamp_min(1e-12).log()
        kl = (target * (target.clamp_min(1e-12).log() - log_student)).sum(-1)  # [b, h, q]
        per_example = (kl * query[:, None]).sum(-1) / query.sum(-1, keepdim=True)  # [b, h]
        terms.append(per_example.mean())
    return torch.stack(terms).mean()


def attention_teacher(weight: float, teacher: PreTrainedModel, student: PreTrainedModel,
                      manifest: Manifest) -> AttentionTeacher | None:
    """What the attention term of a distillation needs, or None when its weight is 0."""
    if not weight:
        return None
    use_eager_attention(student)
    return AttentionTeacher(teacher, head_map_from_manifest(manifest))


class AttentionTeacher:
    """The live teacher's attention maps for a batch (no gradient)."""

    def __init__(self, teacher: PreTrainedModel, head_map: HeadMap):
        use_eager_attention(teacher)
        self.teacher, self.head_map = teacher.eval(), head_map

    def loss(self, student_attentions: Sequence[torch.Tensor],
             batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        with torch.no_grad():
            teacher = self.teacher(**batch, output_attentions=True).attentions
        return attention_kl(student_attentions, teacher, self.head_map, batch["attention_mask"])

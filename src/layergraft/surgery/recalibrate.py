"""Retraining-free repair of output statistics (REPAIR, Jordan et al. 2022): merged or
re-joined layers shrink or shift the activations they hand on, and most of that damage is
per-channel scale and offset. Each repaired student layer's output LayerNorm is rescaled so
that, on calibration texts, every channel of its output has the mean and standard deviation
of the teacher's hidden state at the end of the layer's span.

All supported families are post-LayerNorm, so the layer's output is `gain * z + shift` with
`z` the normalised pre-activation: a new gain `gain * r` and shift `mean_t - (mean_s - shift)
* r`, with `r = std_t / std_s`, give exactly the teacher's mean and std on the calibration
tokens. Layers are repaired bottom-up on the student's own states, so each one sees the
inputs its repaired predecessors now give it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from layergraft.surgery.arch import ArchSpec, encoder_layers, spec_for
from layergraft.surgery.refit import Batch, real_tokens

_TINY = 1e-6  # a channel whose student std is below this is left as it is (nothing to scale)


@torch.no_grad()
def recalibrate_norms(student: PreTrainedModel, teacher: PreTrainedModel, targets: Sequence[int],
                      repaired: Sequence[int], batches: Iterable[Batch], *,
                      spec: ArchSpec | None = None, progress: bool = False) -> list[dict]:
    """Rescale, in place and bottom-up, the output LayerNorm of each student layer in
    `repaired` so that its output channels match the teacher's hidden state `targets[i]`
    (0 = embeddings) in mean and std over real tokens; returns, per layer, the mean absolute
    gap of channel means and of channel stds before the repair."""
    spec = spec or spec_for(student)
    device = next(student.parameters()).device
    batches = [{k: v.to(device) for k, v in b.items() if k not in ("labels", "example_id")}
               for b in batches]
    student.eval()
    teacher.eval()
    cpu = torch.device("cpu")
    per_batch = [real_tokens(teacher(**b, output_hidden_states=True).hidden_states, b,
                             [targets[i] for i in repaired], cpu)
                 for b in tqdm(batches, desc="teacher states", disable=not progress)]
    wanted = [_moments([states[k] for states in per_batch]) for k in range(len(repaired))]
    layers = encoder_layers(student, spec)
    report = []
    for index, (mean_t, std_t) in zip(repaired, wanted, strict=True):
        mean_s, std_s = _moments(
            [real_tokens(student(**b, output_hidden_states=True).hidden_states, b, [index + 1],
                         cpu)[0] for b in batches])
        norm = layers[index].get_submodule(spec.ffn_norm)
        ratio = torch.where(std_s > _TINY, std_t / std_s.clamp_min(_TINY), torch.ones_like(std_s))
        gain = norm.weight.double().cpu()
        shift = norm.bias.double().cpu()
        norm.weight.copy_((gain * ratio).to(norm.weight))
        norm.bias.copy_((mean_t - (mean_s - shift) * ratio).to(norm.bias))
        report.append({"layer": index, "teacher_layer": targets[index],
                       "mean_gap": float((mean_s - mean_t).abs().mean()),
                       "std_gap": float((std_s - std_t).abs().mean())})
    return report


def _moments(chunks: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (population) std of the stacked token rows, in float64."""
    tokens = torch.cat(list(chunks)).double()
    return tokens.mean(0), tokens.std(0, unbiased=False)

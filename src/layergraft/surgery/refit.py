"""Retraining-free repair after surgery: refit each new layer's FFN output projection by
least squares so that the layer's output matches the teacher's at the end of its span.

Surgery leaves every new layer with the right shape but the wrong output: a grafted layer
misses the units it dropped, a kept layer sees inputs its dropped neighbours used to
prepare. The FFN output projection is linear in what it reads, so the weights that best
restore the teacher's hidden state have a closed form. Layers are refit bottom-up on the
student's own activations, so each fit also absorbs the errors of the layers below it.

All supported families are post-LayerNorm (`out = LN(W f + b + residual)`), so the target
of the linear part is the teacher's hidden state mapped back through the LayerNorm with the
current per-token mean and scale. The fit is a ridge regression pulled towards the current
weights (`ridge` relative to the mean diagonal of the Gram matrix), accumulated batch by
batch so memory does not grow with the number of samples.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from layergraft.errors import LayergraftError
from layergraft.surgery.arch import ArchSpec, encoder_layers, spec_for

Batch = Mapping[str, torch.Tensor]
REFIT_RIDGE = 1e-2


@torch.no_grad()
def refit_outputs(student: PreTrainedModel, teacher: PreTrainedModel, targets: Sequence[int],
                  batches: Iterable[Batch], *, ridge: float = REFIT_RIDGE,
                  spec: ArchSpec | None = None, progress: bool = False) -> list[dict]:
    """Refit `student` in place (bottom-up) so that its layer i imitates the teacher's
    hidden state `targets[i]`; returns each layer's token MSE before and after."""
    spec = spec or spec_for(student)
    device = next(student.parameters()).device
    work = _float64_device(device)
    batches = [{k: v.to(device) for k, v in b.items() if k != "labels"} for b in batches]
    student.eval()
    teacher.eval()
    layers = encoder_layers(student, spec)
    if len(targets) != len(layers):
        raise LayergraftError(f"{len(targets)} targets for a {len(layers)}-layer student: give "
                              "one teacher hidden-state index per student layer")
    wanted = [real_tokens(teacher(**b, output_hidden_states=True).hidden_states, b, targets,
                           work)
              for b in tqdm(batches, desc="teacher states", disable=not progress)]
    report = []
    for index, layer in enumerate(tqdm(layers, desc="refit", disable=not progress)):
        linear = layer.get_submodule(spec.ffn_out)
        norm = layer.get_submodule(spec.ffn_norm)
        system = _System(linear, work)
        for batch, states in zip(batches, wanted, strict=True):
            reads, pre_norm = _capture(student, linear, norm, batch, work)
            system.add(reads, pre_norm, states[index], norm)
        report.append({"layer": index, "teacher_layer": targets[index], **system.solve(ridge)})
    return report


def _float64_device(device: torch.device) -> torch.device:
    """Where the float64 normal equations accumulate: the model's device, so only the
    solution moves, except on MPS, which has no float64."""
    return torch.device("cpu") if device.type == "mps" else device


def real_tokens(states: tuple[torch.Tensor, ...], batch: Batch, keep: Sequence[int],
                 work: torch.device) -> list[torch.Tensor]:
    """The kept hidden states on real tokens (only those: a deep teacher's would not fit)."""
    mask = batch["attention_mask"].bool()
    return [states[i][mask].to(work, torch.float64) for i in keep]


def _capture(model: PreTrainedModel, linear: nn.Linear, norm: nn.LayerNorm,
             batch: Batch, work: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """What the projection reads and what the LayerNorm receives, on real tokens."""
    seen: dict[str, torch.Tensor] = {}
    hooks = [linear.register_forward_hook(lambda m, i, o: seen.__setitem__("reads", i[0])),
             norm.register_forward_pre_hook(lambda m, i: seen.__setitem__("pre", i[0]))]
    try:
        model(**batch)
    finally:
        for hook in hooks:
            hook.remove()
    mask = batch["attention_mask"].bool()
    return (seen["reads"][mask].to(work, torch.float64),
            seen["pre"][mask].to(work, torch.float64))


class _System:
    """Normal equations of `[reads, 1] @ B ~ target`, accumulated over batches."""

    def __init__(self, linear: nn.Linear, work: torch.device):
        self.linear = linear
        self.current = torch.cat([linear.weight.T, linear.bias[None]]).to(work, torch.float64)
        width = self.current.shape[0]
        self.gram = torch.zeros(width, width, dtype=torch.float64, device=work)
        self.cross = torch.zeros_like(self.current)
        self.target_sq = 0.0
        self.tokens = 0

    def add(self, reads: torch.Tensor, pre_norm: torch.Tensor, teacher: torch.Tensor,
            norm: nn.LayerNorm) -> None:
        mean = pre_norm.mean(-1, keepdim=True)
        scale = (pre_norm.var(-1, unbiased=False, keepdim=True) + norm.eps).sqrt()
        shift, gain = (norm.bias.to(reads.device, torch.float64),
                       norm.weight.to(reads.device, torch.float64))
        wanted = (teacher - shift) / gain * scale + mean
        x = torch.cat([reads, reads.new_ones(len(reads), 1)], dim=1)
        target = wanted - pre_norm + x @ self.current  # the residual stays as it is
        self.gram += x.T @ x
        self.cross += x.T @ target
        self.target_sq += float((target ** 2).sum())
        self.tokens += len(x)

    def error(self, solution: torch.Tensor) -> float:
        """Mean squared residual per token and feature, from the normal equations alone."""
        total = (self.target_sq - 2 * (solution * self.cross).sum()
                 + (solution * (self.gram @ solution)).sum())
        return float(total) / (self.tokens * solution.shape[1])

    def solve(self, ridge: float) -> dict:
        penalty = ridge * self.gram.diagonal()[:-1].mean() * torch.eye(
            len(self.gram), dtype=torch.float64, device=self.gram.device)
        penalty[-1, -1] = 0.0  # the bias is not shrunk
        solution = torch.linalg.solve(self.gram + penalty,
                                      self.cross + penalty @ self.current)
        before, after = self.error(self.current), self.error(solution)
        weight = self.linear.weight
        weight.data = solution[:-1].T.to(weight.device, weight.dtype).contiguous()
        self.linear.bias.data = solution[-1].to(weight.device, weight.dtype)
        return {"mse_before": before, "mse_after": after, "tokens": self.tokens}

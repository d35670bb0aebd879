"""What the decoder baselines measure on calibration text (`layergraft.surgery.decoder_baselines`).

`measure_blocks(model, batches)` takes the batches of `decoder_importance.text_windows` (or any
{input_ids, attention_mask} batches) and returns a `BlockEvidence`:

- the residual stream x_l at every layer boundary, read by hooks: the input of each layer and
  the last layer's output *before* the final norm (a decoder's last `hidden_states` entry is
  after it, which would make the top layer look unlike the others);
- `cosine[i, j]`, the mean cosine between x_i and x_j over real tokens (ShortGPT's Block
  Influence, LLM-Streamline's span similarity), and `angular[i, j]`, the mean of
  arccos(cos) / pi over the last real token of each row (Gromov et al. 2025 use the final
  token, the one that has read the whole text) or over all real tokens (`angular_tokens="all"`);
- judges of candidate models built by `apply_recipes`: their mean next-token loss per token
  (SLEB) and their final hidden states' mean token cosine to the input model's (LaCo).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from layergraft.errors import LayergraftError
from layergraft.scoring.decoder_importance import next_token_losses
from layergraft.surgery.arch import ArchSpec, encoder_layers, spec_for
from layergraft.surgery.decoder_baselines import BlockEvidence
from layergraft.surgery.recipes import LayerRecipe, apply_recipes

Batch = Mapping[str, torch.Tensor]
ANGULAR_TOKENS = ("last", "all")


def measure_blocks(model: PreTrainedModel, batches: Sequence[Batch], *,
                   angular_tokens: str = "last", spec: ArchSpec | None = None) -> BlockEvidence:
    """Boundary cosines and angular distances of `model` on `batches`, and candidate judges
    on the same batches."""
    if angular_tokens not in ANGULAR_TOKENS:
        raise LayergraftError(f"angular distance is taken over the 'last' or 'all' real tokens, "
                              f"not '{angular_tokens}'")
    spec = spec or spec_for(model)
    cosine = angular = None
    tokens = rows = 0
    for batch in batches:
        mask = _on(model, batch)["attention_mask"].bool()
        states = torch.stack(boundary_states(model, batch, spec)).float()  # [L+1, B, T, d]
        unit = F.normalize(states, dim=-1)
        every = torch.arange(len(mask), device=mask.device)
        picked = unit[:, mask] if angular_tokens == "all" else unit[:, every, _last(mask)]
        batch_cosine = torch.einsum("ind,jnd->ij", unit[:, mask], unit[:, mask]).double()
        pair = torch.einsum("ind,jnd->ijn", picked, picked).clamp(-1, 1)
        batch_angular = (torch.arccos(pair) / torch.pi).sum(-1).double()
        cosine = batch_cosine if cosine is None else cosine + batch_cosine
        angular = batch_angular if angular is None else angular + batch_angular
        tokens, rows = tokens + int(mask.sum()), rows + picked.shape[1]
    if not tokens:
        raise LayergraftError("no calibration tokens to measure the layers on: give text")
    judge = CandidateScorer(model, batches)
    info = {"calibration_tokens": tokens, "calibration_rows": sum(len(b["input_ids"])
                                                                  for b in batches),
            "angular_tokens": angular_tokens}
    return BlockEvidence(cosine=(cosine / tokens).cpu(), angular=(angular / rows).cpu(),
                         nll=judge.nll, similarity=judge.similarity, info=info)


def _last(mask: torch.Tensor) -> torch.Tensor:
    """The position of each row's last real token (left or right padding alike)."""
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return torch.where(mask, positions, -1).amax(dim=1)


def boundary_states(model: PreTrainedModel, batch: Batch,
                    spec: ArchSpec | None = None) -> list[torch.Tensor]:
    """x_0..x_L of one batch [batch, seq, hidden] each: every layer's input, then the last
    layer's output (before the final norm)."""
    layers = encoder_layers(model, spec or spec_for(model))
    states: list[torch.Tensor] = []

    def take_input(module, args, kwargs):
        states.append(kwargs["hidden_states"] if "hidden_states" in kwargs else args[0])

    def take_output(module, args, kwargs, output):
        states.append(output[0] if isinstance(output, tuple) else output)

    handles = [layer.register_forward_pre_hook(take_input, with_kwargs=True) for layer in layers]
    handles.append(layers[-1].register_forward_hook(take_output, with_kwargs=True))
    try:
        with torch.no_grad():
            model.base_model(**_on(model, batch), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return [state.detach() for state in states]


def _on(model: PreTrainedModel, batch: Batch) -> dict[str, torch.Tensor]:
    device = next(model.parameters()).device
    ids = batch["input_ids"].to(device)
    return {"input_ids": ids,
            "attention_mask": batch.get("attention_mask", torch.ones_like(ids)).to(device)}


class CandidateScorer:
    """Scores candidate surgeries of `model` on calibration batches by building each one:
    what the method would get is what is measured."""

    def __init__(self, model: PreTrainedModel, batches: Sequence[Batch]) -> None:
        self.model, self.batches = model, list(batches)
        self._reference: list[torch.Tensor] | None = None

    def nll(self, candidates: Sequence[Sequence[LayerRecipe]]) -> list[float | None]:
        """Each candidate's mean next-token loss per predicted real token."""
        return [self._each(recipes, self._nll) for recipes in candidates]

    def similarity(self, candidates: Sequence[Sequence[LayerRecipe]]) -> list[float | None]:
        """Each candidate's mean token cosine of final hidden states to the input model's."""
        if self._reference is None:
            self._reference = [self._final(self.model, batch) for batch in self.batches]
        return [self._each(recipes, self._similarity) for recipes in candidates]

    def _each(self, recipes: Sequence[LayerRecipe], score) -> float | None:
        try:
            candidate = apply_recipes(self.model, recipes).eval()
        except LayergraftError:  # a merge of layers of different attention types
            return None
        with torch.no_grad():
            return score(candidate)

    def _nll(self, candidate: PreTrainedModel) -> float:
        total, count = 0.0, 0
        for batch in self.batches:
            inputs = _on(candidate, batch)
            logits = candidate(**inputs, use_cache=False).logits
            total += float(next_token_losses(logits, inputs).sum())
            real = inputs["attention_mask"].bool()
            count += int((real[:, :-1] & real[:, 1:]).sum())
        return total / max(count, 1)

    def _similarity(self, candidate: PreTrainedModel) -> float:
        total, count = 0.0, 0
        for batch, reference in zip(self.batches, self._reference, strict=True):
            mask = _on(candidate, batch)["attention_mask"].bool()
            final = self._final(candidate, batch)
            total += float(F.cosine_similarity(final[mask], reference[mask], dim=-1).sum())
            count += int(mask.sum())
        return total / max(count, 1)

    @staticmethod
    def _final(model: PreTrainedModel, batch: Batch) -> torch.Tensor:
        with torch.no_grad():
            return model.base_model(**_on(model, batch), use_cache=False).last_hidden_state

"""How similar the hidden states of the layers are: linear CKA and adjacent-layer cosine.

Linear CKA (Kornblith et al. 2019) in its feature-space form,
CKA(X, Y) = ||C_xy||_F^2 / (||C_xx||_F ||C_yy||_F) with C the centred (cross-)covariances,
needs only the means and the d×d cross products XᵀY, so it streams over batches in
constant memory; only real (non-padding) tokens count.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Linear CKA between two [n, d] matrices of the same n examples (float64 scalar)."""
    x = x.double() - x.double().mean(0)
    y = y.double() - y.double().mean(0)
    return _cka(x.T @ y, x.T @ x, y.T @ y)


def _cka(cxy: torch.Tensor, cxx: torch.Tensor, cyy: torch.Tensor) -> torch.Tensor:
    denominator = (cxx.norm() * cyy.norm()).clamp_min(torch.finfo(torch.float64).tiny)
    return cxy.square().sum() / denominator


class LayerSimilarity:
    """Streaming similarity between all hidden states (index 0 = embeddings output).

    Feed it `update(hidden_states, attention_mask)` per batch; `cka()` is [S, S] and
    `adjacent_cosine()` is [S - 1]: entry l is the mean token cosine between the input
    and the output of layer l. Each batch's co-moments are computed about the batch mean
    (float32 products, no cancellation) and merged into float64 totals with Chan et al.'s
    (1979) pairwise update, so the result matches a float64 pass over all tokens.
    """

    def __init__(self) -> None:
        self.tokens = 0
        self._mean: torch.Tensor | None = None  # [S, d]
        self._comoment: list[torch.Tensor] = []  # [a]: [d, (S - a) * d], blocks (a, b >= a)
        self._cosine: torch.Tensor | None = None  # [S - 1]

    def update(self, hidden_states: Sequence[torch.Tensor], attention_mask: torch.Tensor) -> None:
        # float32 products even when the model runs under bf16 autocast
        with torch.autocast(attention_mask.device.type, enabled=False):
            self._update(hidden_states, attention_mask)

    def _update(self, hidden_states: Sequence[torch.Tensor], attention_mask: torch.Tensor) -> None:
        keep = attention_mask.bool()
        states = torch.stack([h[keep] for h in hidden_states]).detach().float()  # [S, n, d]
        count, dim = states.shape[1], states.shape[2]
        if count == 0:
            return
        work = states.device if states.device.type != "mps" else torch.device("cpu")  # float64
        cosine = F.cosine_similarity(states[:-1], states[1:], dim=-1).to(work, torch.float64).sum(1)
        mean = states.to(work, torch.float64).mean(1)
        centred = states - mean.to(states.device, states.dtype)[:, None]
        flat = centred.transpose(0, 1).flatten(1)  # [n, S * d]
        comoment = [(centred[a].T @ flat[:, a * dim:]).to(work, torch.float64)
                    for a in range(states.shape[0])]
        if self._mean is None:
            self._mean, self._comoment, self._cosine = mean, comoment, cosine
        else:
            delta = mean - self._mean
            total = self.tokens + count
            weight = self.tokens * count / total
            for a, (block, part) in enumerate(zip(self._comoment, comoment, strict=True)):
                block += part + weight * torch.outer(delta[a], delta[a:].flatten())
            self._mean += delta * (count / total)
            self._cosine += cosine
        self.tokens += count

    def cka(self) -> torch.Tensor:
        """[S, S] linear CKA; covariances carry a common factor (token count) that cancels."""
        self._check()
        dim = self._mean.shape[1]

        def covariance(a: int, b: int) -> torch.Tensor:
            return self._comoment[a][:, (b - a) * dim:(b - a + 1) * dim]

        size = self._mean.shape[0]
        out = torch.empty(size, size, dtype=torch.float64)
        for a in range(size):
            for b in range(a, size):
                out[a, b] = out[b, a] = _cka(covariance(a, b), covariance(a, a),
                                             covariance(b, b)).cpu()
        return out

    def adjacent_cosine(self) -> torch.Tensor:
        self._check()
        return (self._cosine / self.tokens).cpu()

    def _check(self) -> None:
        if self.tokens == 0:
            raise ValueError("no hidden states seen yet: call update() first")

"""Head and FFN-neuron importance through mask hooks (transformers 5 has no `head_mask`).

Every head (its slice of the input to the attention output projection O) and every FFN
neuron (its entry of the input to W2) is multiplied by a mask ξ = 1 in forward
pre-hooks, so ∂L/∂ξ measures what removing the unit would cost (Michel et al. 2019).

The masks are per example (shape [batch, layers, units]): since example i only touches
its own row, one backward pass of the summed loss yields exact per-example gradients,
so Michel's E_x |∂L(x)/∂ξ| and Kwon et al.'s (2022) empirical Fisher Σ_x (∂L(x)/∂ξ)^2
do not depend on how the data was batched.

Losses:
- "task": the model's own loss on gold labels (cross-entropy, or squared error when
  `num_labels == 1`), per example.
- "kl": no labels. KL(p || p_ξ) to the model's own prediction p has zero gradient at
  ξ = 1, but its Hessian there is the (true) Fisher information E_{y~p}[g_y g_y^T] with
  g_y = ∂(-log p_ξ(y))/∂ξ, so removing unit u costs about ½ F_uu. We therefore use the
  model's own predicted distribution as soft pseudo-labels and take the exact
  expectation over y ~ p (one backward pass per class, no sampling): "fisher" gives
  diag(F), "michel" gives E_{y~p} |g_y|. For regression we read the output as the mean
  of a unit-variance Gaussian, whose Fisher is (∂f/∂ξ)^2: the sensitivity of the
  prediction itself (the Hessian of ½ (f_ξ - f)^2), one backward pass.
- "embedding": no labels, for sentence-embedding models. The distortion ½ ||e_ξ - e||^2 of
  the pooled, L2-normalised embedding e (given by the caller's `pool`) against the unmasked
  model's has zero gradient at ξ = 1 and Hessian J^T J (J = ∂e/∂ξ), the same Gaussian
  Fisher as for regression but over many output dimensions. Its diagonal is estimated with
  EMBEDDING_PROBES fixed random directions v (E[v v^T] = I): g_v = ∂(v·e)/∂ξ, one backward
  pass each; "fisher" gives E_v g_v^2 (unbiased for diag J^T J), "michel" E_v |g_v|.
- "lm": decoder LLMs, each text's next-token loss; a head is then a KV group
  (`layergraft.scoring.decoder_importance`).
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from layergraft.errors import LayergraftError
from layergraft.scoring.decoder_importance import check_loss_fits, next_token_losses
from layergraft.surgery.arch import (
    ArchSpec,
    encoder_layers,
    ffn_width,
    head_projections,
    num_heads,
    spec_for,
)

LOSSES = ("task", "kl", "embedding", "lm")  # "lm": decoders (scoring.decoder_importance)
EMBEDDING_PROBES = 16  # random directions per example for the "embedding" loss
GROUP_ROWS = 16  # examples per forward pass after regrouping a batch by length
Batch = Mapping[str, torch.Tensor]
# Called once per batch with the detached hidden states (embeddings first) and the
# attention mask, so a caller can measure similarity on the same forward pass.
Observer = Callable[[tuple[torch.Tensor, ...], torch.Tensor], None]
# The "embedding" loss: (model output, model inputs) -> the pooled embedding [batch, dim].
Pool = Callable[[object, Mapping[str, torch.Tensor]], torch.Tensor]


@dataclass
class ImportanceScores:
    """Scores per head [layers, heads] and per FFN neuron [layers, width], with provenance."""

    head: torch.Tensor
    neuron: torch.Tensor
    info: dict = field(default_factory=dict)


class UnitMasks:
    """Context manager: pre-hooks that mask (and optionally measure) every head and neuron.

    Set `mask` to a [batch, layers, heads + width] tensor to multiply the units by it
    (None: leave them alone); set `token_mask` ([batch, seq] bool) to accumulate, in
    `activation`, the norm of what each unit writes to the layer's output over the real
    tokens (head h: ||W_O[:, h] ctx_h||, neuron j: ||W2[:, j]|| |a_j|), so a unit whose
    output weights are zero has activation zero. The hooks are removed on exit,
    whatever happened inside.
    """

    def __init__(self, model: PreTrainedModel, spec: ArchSpec | None = None) -> None:
        self.spec = spec or spec_for(model)
        self.layers = encoder_layers(model, self.spec)
        self.heads = num_heads(model.config)
        self.width = ffn_width(model, self.spec)
        self.mask: torch.Tensor | None = None
        self.token_mask: torch.Tensor | None = None
        self.activation = torch.zeros(len(self.layers), self.heads + self.width,
                                      dtype=torch.float64)
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    @property
    def units(self) -> int:
        return self.heads + self.width

    def __enter__(self) -> UnitMasks:
        try:
            for index, layer in enumerate(self.layers):
                attn_out = layer.get_submodule(self.spec.attn_out)
                ffn_out = layer.get_submodule(self.spec.ffn_out)
                self._handles.append(attn_out.register_forward_pre_hook(self._head_hook(index)))
                self._handles.append(ffn_out.register_forward_pre_hook(self._neuron_hook(index)))
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._remove()

    def _remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _head_hook(self, index: int):
        def hook(module: nn.Module, args: tuple) -> tuple | None:
            x, *rest = args
            heads = x.unflatten(-1, (self.heads, -1))  # [batch, seq, heads, head_dim]
            if self.token_mask is not None:
                # a head's output is what it writes through its columns of O: W_O,h ctx_h
                columns = module.weight.unflatten(1, (self.heads, -1))  # [out, heads, d]
                gram = torch.einsum("ohd,ohe->hde", columns, columns)
                sq_norm = torch.einsum("bthd,hde,bthe->bth", heads, gram, heads)
                norms = sq_norm.clamp_min(0).sqrt()[self.token_mask]
                self.activation[index, :self.heads] += norms.sum(0).detach().double().cpu()
            if self.mask is None:
                return None
            scale = self.mask[:, index, None, :self.heads, None].to(x.dtype)
            return ((heads * scale).flatten(-2), *rest)

        return hook

    def _neuron_hook(self, index: int):
        def hook(module: nn.Module, args: tuple) -> tuple | None:
            x, *rest = args
            if self.token_mask is not None:
                # what neuron j writes is W2[:, j] a_j, of norm |a_j| ||W2[:, j]||
                values = x[self.token_mask].abs().sum(0) * module.weight.norm(dim=0)
                self.activation[index, self.heads:] += values.detach().double().cpu()
            if self.mask is None:
                return None
            return (x * self.mask[:, index, None, self.heads:].to(x.dtype), *rest)

        return hook


@dataclass
class Evidence:
    """Data sums per unit ([layers, heads + width], float64) that scorers turn into scores.

    Gradient sums are over examples (and, for the "kl" loss, weighted over the model's
    own predicted labels); `activation` is summed over real tokens.
    """

    grad_abs: torch.Tensor | None = None
    grad_sq: torch.Tensor | None = None
    activation: torch.Tensor | None = None
    examples: int = 0
    tokens: int = 0


@dataclass(frozen=True)
class Scorer:
    """One importance method: what evidence it needs and how it turns it into scores."""

    needs: str  # "gradients", "activations" or "weights" (no data)
    score: Callable[[Evidence, PreTrainedModel, ArchSpec], torch.Tensor]


def _weight_magnitude(evidence: Evidence, model: PreTrainedModel, spec: ArchSpec) -> torch.Tensor:
    """Input-side norm × output-side norm: Q/K/V rows × O columns, W1 row × W2 column."""
    heads = num_heads(model.config)
    rows = []
    with torch.no_grad():
        for layer in encoder_layers(model, spec):
            head_in = sum(linear.weight.unflatten(0, (heads, -1)).double().square().sum((1, 2))
                          for _, linear in head_projections(layer, spec))
            out = layer.get_submodule(spec.attn_out).weight.unflatten(1, (heads, -1))
            head_out = out.double().square().sum((0, 2))
            w1 = layer.get_submodule(spec.ffn_in).weight.double().norm(dim=1)
            w2 = layer.get_submodule(spec.ffn_out).weight.double().norm(dim=0)
            rows.append(torch.cat([(head_in * head_out).sqrt(), w1 * w2]).cpu())
    return torch.stack(rows)


SCORERS: dict[str, Scorer] = {
    # Michel et al. 2019: mean |∂L/∂ξ|, normalised by the number of tokens scored
    "michel": Scorer("gradients", lambda e, model, spec: e.grad_abs / max(e.tokens, 1)),
    # Kwon et al. 2022: diagonal of the Fisher information, Σ_x (∂L(x)/∂ξ)^2
    "fisher": Scorer("gradients", lambda e, model, spec: e.grad_sq),
    # cheap baselines: mean output norm per real token, and weight magnitude
    "activation": Scorer("activations", lambda e, model, spec: e.activation / max(e.tokens, 1)),
    "weight": Scorer("weights", _weight_magnitude),
}


def get_scorer(name: str) -> Scorer:
    if name not in SCORERS:
        close = difflib.get_close_matches(name, SCORERS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise LayergraftError(
            f"unknown importance method '{name}'{hint}: choose one of {', '.join(SCORERS)}"
        )
    return SCORERS[name]


def score_importance(
    model: PreTrainedModel,
    batches: Iterable[Batch],
    *,
    method: str = "michel",
    loss: str = "task",
    normalize: bool = False,
    progress: bool = False,
    spec: ArchSpec | None = None,
    observe: Observer | None = None,
    pool: Pool | None = None,
) -> ImportanceScores:
    """Score every head and FFN neuron of `model` on `batches` (the model is left unchanged).

    `normalize` divides each layer's head scores and neuron scores by their L2 norm.
    `observe`, if given, sees every batch's hidden states from the same forward pass.
    `pool` (needed by, and only by, loss "embedding") maps the model's output to the
    sentence embedding whose distortion is scored.
    """
    scorer = get_scorer(method)
    if loss not in LOSSES:
        raise LayergraftError(f"unknown importance loss '{loss}': choose one of "
                              f"{', '.join(LOSSES)}")
    if (loss == "embedding") != (pool is not None):
        raise LayergraftError("importance loss 'embedding' needs a pooling function (and only "
                              "it takes one): score an embedding model through "
                              "layergraft.embeddings")
    spec = spec or spec_for(model)
    check_loss_fits(spec, loss, scorer.needs)
    evidence = Evidence()
    if scorer.needs != "weights" or observe is not None:
        evidence = _collect(model, batches, spec, scorer.needs, loss, progress, observe, pool)
    units = scorer.score(evidence, model, spec)
    heads = num_heads(model.config)
    head, neuron = units[:, :heads].contiguous(), units[:, heads:].contiguous()
    if normalize:
        head, neuron = normalize_rows(head), normalize_rows(neuron)
    info = {"method": method, "loss": loss if scorer.needs == "gradients" else None,
            "normalize": normalize, "examples": evidence.examples, "tokens": evidence.tokens}
    return ImportanceScores(head=head, neuron=neuron, info=info)


def normalize_rows(scores: torch.Tensor) -> torch.Tensor:
    """Each layer's scores divided by their L2 norm (all-zero rows stay zero)."""
    return scores / scores.norm(dim=1, keepdim=True).clamp_min(torch.finfo(scores.dtype).tiny)


def model_inputs(model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
    """The batch entries `model.forward` takes by name, on the model's device (no labels)."""
    accepted = inspect.signature(model.forward).parameters
    device = next(model.parameters()).device
    return {key: value.to(device) for key, value in batch.items()
            if key in accepted and key != "labels" and isinstance(value, torch.Tensor)}


@contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode (no dropout) inside, the caller's mode restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _collect(
    model: PreTrainedModel, batches: Iterable[Batch], spec: ArchSpec, needs: str, loss: str,
    progress: bool, observe: Observer | None, pool: Pool | None = None,
) -> Evidence:
    if getattr(model.config, "problem_type", None) == "multi_label_classification":
        raise LayergraftError("importance scoring supports single-label classification and "
                              "regression models, not multi-label ones")
    evidence = Evidence()
    gradients = needs == "gradients"
    with UnitMasks(model, spec) as hooks, evaluating(model):
        if gradients:
            evidence.grad_abs = torch.zeros(len(hooks.layers), hooks.units, dtype=torch.float64)
            evidence.grad_sq = torch.zeros_like(evidence.grad_abs)
        for batch in tqdm(batches, desc="analyze", unit="batch", disable=not progress):
            inputs = model_inputs(model, batch)
            inputs.setdefault("attention_mask", torch.ones_like(inputs["input_ids"]))
            labels = batch.get("labels")
            if gradients and loss == "task" and labels is None:
                raise LayergraftError("importance with loss 'task' needs gold labels in the "
                                      "data; use loss 'kl' to score without labels")
            for group, group_labels in _length_groups(inputs, labels):
                attention = group["attention_mask"]
                hooks.token_mask = attention.bool() if needs == "activations" else None
                if gradients:
                    hooks.mask = torch.ones(attention.shape[0], len(hooks.layers), hooks.units,
                                            device=attention.device, requires_grad=True)
                with torch.set_grad_enabled(gradients):
                    output = model(**group, output_hidden_states=observe is not None)
                if gradients:
                    target = (next_token_losses(output.logits, group) if loss == "lm"
                              else output.logits if pool is None else pool(output, group))
                    grads, weights = _unit_gradients(model, target, group_labels,
                                                     hooks.mask, loss)
                    weights = weights[:, :, None, None]
                    evidence.grad_abs += (weights * grads.abs()).sum((0, 1)).double().cpu()
                    evidence.grad_sq += (weights * grads.square()).sum((0, 1)).double().cpu()
                    hooks.mask = None
                if observe is not None:
                    observe(tuple(h.detach() for h in output.hidden_states), attention)
                evidence.examples += int(attention.shape[0])
                evidence.tokens += int(attention.sum())
    if evidence.examples == 0:
        raise LayergraftError("no examples to analyse: the data is empty")
    if needs == "activations":
        evidence.activation = hooks.activation
    return evidence


def _length_groups(
    inputs: dict[str, torch.Tensor], labels: torch.Tensor | None
) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor | None]]:
    """The batch as groups of GROUP_ROWS examples of similar length, trailing padding cut.

    Scores are sums of per-example terms, so regrouping changes nothing but the cost:
    a collator pads every row to the longest one, which on short sentences doubles it.
    Only columns that are padding for the whole group are cut (left padding stays).
    """
    attention = inputs["attention_mask"]
    order = attention.sum(1).argsort(stable=True)
    for rows in order.split(GROUP_ROWS):
        used = attention[rows].any(0).nonzero()
        width = int(used.max()) + 1 if len(used) else attention.shape[1]
        group = {key: value[rows, :width] if value.dim() > 1 else value[rows]
                 for key, value in inputs.items()}
        yield group, None if labels is None else labels[rows.to(labels.device)]


def _unit_gradients(
    model: PreTrainedModel, logits: torch.Tensor, labels: torch.Tensor | None,
    mask: torch.Tensor, loss: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example gradients w.r.t. the masks [batch, k, layers, units], weights [batch, k].

    k = 1 for gold labels; for "kl" there is one gradient per candidate label y,
    weighted by the model's probability of y (regression: k = 1, weight 1).
    """
    if loss == "embedding":
        return _embedding_gradients(logits, mask)
    regression = model.config.num_labels == 1
    if loss in ("task", "lm"):
        if loss == "lm":  # `logits` are each example's next-token loss already
            losses = logits
        elif regression:
            losses = (logits.squeeze(-1) - labels.to(logits.device, logits.dtype)).square()
        else:
            losses = F.cross_entropy(logits, labels.to(logits.device).long(), reduction="none")
        (grad,) = torch.autograd.grad(losses.sum(), mask)
        return grad[:, None], torch.ones(grad.shape[0], 1, device=grad.device)
    # Jacobian of each logit w.r.t. the masks, one backward pass per class
    classes = logits.shape[-1]
    jacobian = torch.stack([
        torch.autograd.grad(logits[:, c].sum(), mask, retain_graph=c < classes - 1)[0]
        for c in range(classes)
    ], dim=1)  # [batch, classes, layers, units]
    if regression:
        return jacobian, torch.ones(jacobian.shape[0], 1, device=jacobian.device)
    probs = logits.detach().softmax(-1)
    expected = torch.einsum("bc,bclu->blu", probs, jacobian)
    # ∂(-log p_y)/∂ξ = Σ_c p_c J_c - J_y, for every candidate label y
    return expected[:, None] - jacobian, probs


def _embedding_gradients(embedding: torch.Tensor, mask: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of v·e along EMBEDDING_PROBES fixed random directions v, each of weight 1/k,
    for the L2-normalised embedding e (see the module docstring)."""
    unit = F.normalize(embedding.float(), dim=-1)
    generator = torch.Generator().manual_seed(0)
    directions = torch.randn(EMBEDDING_PROBES, unit.shape[-1], generator=generator)
    directions = directions.to(unit.device)
    last = len(directions) - 1
    grads = torch.stack([
        torch.autograd.grad((unit @ v).sum(), mask, retain_graph=i < last)[0]
        for i, v in enumerate(directions)
    ], dim=1)  # [batch, probes, layers, units]
    return grads, torch.full(grads.shape[:2], 1 / len(directions), device=grads.device)

"""Pictures of an analysis: they read recorded tensors and never recompute anything.

Figures are built with matplotlib's object API on the Agg canvas, so no screen and no
global pyplot state are involved.
"""

from __future__ import annotations

import os

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: str | os.PathLike) -> None:
    figure.savefig(path, format="png", dpi=120)


def _annotate(axes, values: torch.Tensor, fmt: str) -> None:
    middle = (float(values.max()) + float(values.min())) / 2
    for row, line in enumerate(values.tolist()):
        for column, value in enumerate(line):
            axes.text(column, row, format(value, fmt), ha="center", va="center", fontsize=7,
                      color="white" if value < middle else "black")


def plot_similarity(
    cka: torch.Tensor, adjacent_cosine: torch.Tensor, path: str | os.PathLike
) -> None:
    """Annotated CKA heatmap over hidden states (0 = embeddings) beside adjacent cosines."""
    size = cka.shape[0]
    figure = _figure(4.0 + 0.45 * size, 0.5 + 0.45 * size)
    heat, bars = figure.subplots(1, 2, width_ratios=[3, 2])
    image = heat.imshow(cka.double().numpy(), vmin=0.0, vmax=1.0, cmap="viridis")
    names = ["emb"] + [str(i) for i in range(1, size)]
    heat.set_xticks(range(size), names)
    heat.set_yticks(range(size), names)
    heat.set_title("linear CKA between hidden states")
    heat.set_xlabel("after layer")
    _annotate(heat, cka.double(), ".2f")
    figure.colorbar(image, ax=heat, shrink=0.8)
    layers = range(len(adjacent_cosine))
    bars.bar(layers, adjacent_cosine.double().numpy(), color="tab:blue")
    bars.set_xticks(layers, [str(i) for i in layers])
    bars.set_ylim(min(0.0, float(adjacent_cosine.min())), 1.0)
    bars.set_xlabel("layer")
    bars.set_title("cosine(layer input, output)")
    _save(figure, path)


def plot_head_importance(head: torch.Tensor, path: str | os.PathLike) -> None:
    """Layers × heads heatmap of head importance, annotated when it stays legible."""
    layers, heads = head.shape
    figure = _figure(1.5 + 0.5 * heads, 1.0 + 0.45 * layers)
    axes = figure.subplots()
    image = axes.imshow(head.double().numpy(), cmap="magma", aspect="auto")
    axes.set_xticks(range(heads))
    axes.set_yticks(range(layers))
    axes.set_xlabel("head")
    axes.set_ylabel("layer")
    axes.set_title("head importance")
    if heads <= 16:
        _annotate(axes, head.double(), ".2g")
    figure.colorbar(image, ax=axes)
    _save(figure, path)


def plot_neuron_importance(neuron: torch.Tensor, path: str | os.PathLike) -> None:
    """Each layer's FFN-neuron scores sorted high to low, one curve per layer."""
    figure = _figure(6.0, 4.0)
    axes = figure.subplots()
    for layer, scores in enumerate(neuron.double()):
        axes.plot(torch.sort(scores, descending=True).values.numpy(), label=f"layer {layer}")
    axes.set_xlabel("neuron rank within its layer")
    axes.set_ylabel("importance")
    axes.set_title("FFN neuron importance")
    axes.legend(fontsize=7, ncols=2)
    _save(figure, path)

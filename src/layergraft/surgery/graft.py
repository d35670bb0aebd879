"""Public surgery API: a model and a plan (or a target depth) in, a smaller model out."""

from __future__ import annotations

import logging

from transformers import PreTrainedModel

from layergraft.errors import LayergraftError
from layergraft.surgery.arch import ArchSpec, ffn_width, num_heads, num_layers, spec_for
from layergraft.surgery.choose import SpanJudge, choose_recipes
from layergraft.surgery.decoder_baselines import NEEDS_BLOCKS, BlockEvidence
from layergraft.surgery.manifest import GraftStep, Manifest
from layergraft.surgery.methods import (
    NEEDS_SCORES,
    TAKES_OPTIONS,
    GraftOptions,
    MethodInput,
    get_method,
)
from layergraft.surgery.plan import Plan, check_target_depth
from layergraft.surgery.recipes import apply_recipes
from layergraft.surgery.width import check_heads, resolve_ffn_size, width_record

logger = logging.getLogger(__name__)


def graft_model(
    model: PreTrainedModel,
    *,
    layers: int | None = None,
    plan: Plan | None = None,
    method: str = "graft",
    head_scores=None,
    neuron_scores=None,
    cka=None,
    adjacent_cosine=None,
    options: GraftOptions | None = None,
    importance_info: dict | None = None,
    seed: int = 0,
    manifest: Manifest | None = None,
    spec: ArchSpec | None = None,
    judge: SpanJudge | None = None,
    blocks: BlockEvidence | None = None,
) -> tuple[PreTrainedModel, Manifest]:
    """Return (new model, manifest with this step appended); `model` is left untouched.

    Give either `layers` (target depth) or `plan`. `manifest` is the input model's own
    manifest when it is itself a graft, so chained grafts (12 -> 6 -> 3) trace back
    to the original teacher. `judge` measures candidate layers on calibration data; options
    with `choose="reconstruction"` need it (`layergraft.surgery.choose`). A fractional
    `options.ffn_size` is of the original teacher's width (the manifest's), so the stages of
    a chained graft keep one width. `blocks` is what the decoder baselines measured on
    calibration text (`layergraft.scoring.block_scores.measure_blocks`).
    """
    spec = spec or spec_for(model)
    options = options or GraftOptions()
    check_heads(model.config, options.heads)
    options.check_method(method)
    depth = num_layers(model.config)
    if plan is None and layers is None:
        raise LayergraftError("say how deep the new model is: give --layers N or --pairs")
    if plan is None:
        check_target_depth(depth, int(layers))
    target = plan.target_layers if plan is not None else int(layers)
    if plan is not None and layers is not None and plan.target_layers != layers:
        raise LayergraftError(
            f"--pairs gives {plan.target_layers} layers but --layers asks for {layers}"
        )
    if plan is not None and method.startswith("drop-"):
        raise LayergraftError(
            f"method '{method}' chooses its own layers: give --layers, not --pairs"
        )
    manifest = manifest or Manifest.for_teacher(model)
    new_width = resolve_ffn_size(options.ffn_size, int(manifest.teacher["ffn_width"]))
    inp = MethodInput(
        num_layers=depth, num_heads=num_heads(model.config), ffn_width=ffn_width(model, spec),
        target_layers=target, plan=plan, head_scores=head_scores, neuron_scores=neuron_scores,
        cka=cka, adjacent_cosine=adjacent_cosine, options=options,
        slot_aligned=spec.slot_aligned, seed=seed, ffn_size=new_width, blocks=blocks,
    )
    options.check_calibration(method, judge is not None)
    choice = None
    if options.by_reconstruction and method in TAKES_OPTIONS:
        chosen_plan, recipes, choice = choose_recipes(get_method(method), inp, judge)
    else:
        chosen_plan, recipes = get_method(method)(inp)
    new_model = apply_recipes(model, recipes, spec)
    width = None
    if new_width is not None:
        intact = [k for k, recipe in enumerate(recipes) if len(recipe.sources) == 1]
        width = width_record(options.ffn_size, new_width, inp.ffn_width, intact,
                             options.ffn_size_all)
        if width["intact"] == "shrunk" and not options.ffn_size_all:
            logger.warning(f"warning: --ffn-size {new_width}: {width['why']} (student layers "
                           f"{', '.join(map(str, intact))}; --ffn-size-all asks for this outright)")
    if manifest.num_layers != depth:
        raise LayergraftError(
            f"the manifest describes a {manifest.num_layers}-layer model but this one has {depth}"
        )
    step = GraftStep(
        method=method, input_layers=depth, recipes=recipes, plan=chosen_plan.to_dict(),
        options=options.to_dict() if method in TAKES_OPTIONS else {},
        importance=importance_info if method in NEEDS_SCORES else (
            blocks.record() if blocks is not None and method in NEEDS_BLOCKS else None), seed=seed,
        choice=choice, width=width,
    )
    return new_model, Manifest(teacher=dict(manifest.teacher), steps=[*manifest.steps, step])

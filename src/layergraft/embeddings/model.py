"""A sentence-transformers folder: recognised, loaded, its embedding, and grafted.

A folder is a sentence-transformers model when it has `modules.json`; layergraft takes the
ones whose first module is a Transformer over a supported encoder family, followed by
Pooling and optionally Dense and Normalize modules. The transformer is a plain `AutoModel`
(the base model, no head): surgery works on it directly, and the student is the same
module list around the shallower transformer, saved by sentence-transformers itself.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from layergraft.errors import LayergraftError
from layergraft.surgery.arch import spec_for_config

MODULES_FILE = "modules.json"
FIRST = "Transformer"
AFTER = ("Pooling", "Dense", "Normalize")


@dataclass(frozen=True)
class EmbeddingFolder:
    """What `modules.json` says: module class names in order, the transformer's subfolder,
    and the pooling settings read from the Pooling module's config."""

    path: Path
    modules: tuple[str, ...]
    transformer_path: Path
    pooling: dict


def is_embedding_folder(path: str | os.PathLike) -> bool:
    return (Path(path) / MODULES_FILE).is_file()


def read_folder(path: str | os.PathLike) -> EmbeddingFolder:
    """Recognise a sentence-transformers folder, or say in one line why it is not one we take."""
    from transformers import AutoConfig

    path = Path(path)
    if not is_embedding_folder(path):
        raise LayergraftError(f"'{path}' is not a sentence-transformers folder (no {MODULES_FILE})")
    try:
        entries = json.loads((path / MODULES_FILE).read_text())
        names = tuple(str(entry["type"]).rsplit(".", 1)[-1] for entry in entries)
        paths = [str(entry.get("path", "")) for entry in entries]
    except (ValueError, KeyError, TypeError) as error:
        raise LayergraftError(f"'{path / MODULES_FILE}' is not a module list: {error}") from None
    if not names or names[0] != FIRST:
        first = names[0] if names else "nothing"
        raise LayergraftError(f"'{path}': the first module is {first}, not a Transformer; "
                              "layergraft grafts sentence-transformers models whose first "
                              "module is a Transformer")
    odd = [name for name in names[1:] if name not in AFTER]
    if "Pooling" not in names[1:2] or odd:
        raise LayergraftError(f"'{path}': modules {', '.join(names)} are not Transformer, "
                              "Pooling, then optional Dense / Normalize")
    transformer_path = path / paths[0]
    try:
        config = AutoConfig.from_pretrained(transformer_path)
    except (OSError, ValueError) as error:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise LayergraftError(f"'{path}': cannot read its transformer: {first_line}") from None
    try:
        spec_for_config(config)
    except LayergraftError as error:
        raise LayergraftError(f"'{path}': its Transformer is not a supported encoder: "
                              f"{error}") from None
    pooling_config = path / paths[1] / "config.json"
    pooling = json.loads(pooling_config.read_text()) if pooling_config.is_file() else {}
    return EmbeddingFolder(path, names, transformer_path, pooling)


def load_embedding_model(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """(SentenceTransformer in eval mode, EmbeddingFolder) of a recognised folder."""
    from sentence_transformers import SentenceTransformer

    from layergraft.data.encoding import fit_tokenizer
    from layergraft.models import refusing_pickled_code

    folder = read_folder(path)
    with refusing_pickled_code(str(folder.path)):
        model = SentenceTransformer(str(folder.path), device=str(device))
    tokenizer = fit_tokenizer(model.tokenizer, transformer_of(model).config)
    model.max_seq_length = min(model.max_seq_length or tokenizer.model_max_length,
                               tokenizer.model_max_length)
    return model.eval(), folder


def transformer_of(model) -> torch.nn.Module:
    """The plain transformers model (a base model such as BertModel) inside the first module."""
    return model[0].auto_model


def pool_function(model):
    """`pool(output, inputs)`: the sentence embedding from the transformer's output, through
    the model's own Pooling (and Dense, Normalize) modules, as `score_importance` takes it."""
    def pool(output, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        features = {**inputs, "token_embeddings": output.last_hidden_state}
        for module in list(model)[1:]:
            features = module(features)
        return features["sentence_embedding"]

    return pool


def tokenized_batches(model, texts: list[str], batch_size: int = 32,
                      max_length: int = 128) -> list[dict[str, torch.Tensor]]:
    """The texts as padded model inputs of the transformer, `batch_size` at a time."""
    from layergraft.data.encoding import token_limit

    tokenizer = model[0].tokenizer
    max_length = token_limit(tokenizer, max_length)
    return [dict(tokenizer(texts[i:i + batch_size], padding=True, truncation=True,
                           max_length=max_length, return_tensors="pt"))
            for i in range(0, len(texts), batch_size)]


def with_transformer(model, transformer: torch.nn.Module):
    """A copy of the sentence-transformers model around another transformer (the input's own
    transformer is not copied; Pooling, Dense and Normalize are)."""
    original = transformer_of(model)
    student = copy.deepcopy(model, memo={id(original): transformer})
    if transformer_of(student) is not transformer:
        raise LayergraftError("could not place the new transformer in the model")
    return student


def graft_embedding_model(model, **graft_options):
    """(student SentenceTransformer, manifest): the transformer grafted by
    `layergraft.surgery.graft.graft_model` (any method; the options are its keywords)."""
    from layergraft.surgery.graft import graft_model

    new_transformer, manifest = graft_model(transformer_of(model), **graft_options)
    return with_transformer(model, new_transformer.eval()), manifest


def save_embedding_model(model, manifest, out: str | os.PathLike) -> Path:
    """Save the student folder (sentence-transformers layout) and its graft manifest."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save(str(out))
    manifest.save(out)
    return out


def embed(model, texts: list[str], batch_size: int = 64) -> torch.Tensor:
    """Sentence embeddings [n, dim] (float32, CPU), as `SentenceTransformer.encode` gives them."""
    if not texts:
        return torch.zeros(0, model.get_embedding_dimension())
    with torch.no_grad():
        return model.encode(texts, batch_size=batch_size, convert_to_tensor=True,
                            show_progress_bar=False).float().cpu()


def analyze_embedding_model(model, texts: list[str], settings, max_length: int = 128,
                            cache_dir: str | os.PathLike | None = None):
    """Importance (the "embedding" loss) and layer similarity of the transformer on a sample
    of `texts` (`settings`: an AnalysisSettings' samples, seed, batch size, importance).

    Measured once per model, sample and settings, then read back from the cache folder
    (`cache_dir` or the default): it takes one backward pass per probe direction, far
    longer than a short distillation, and every graft run of a grid needs the same one."""
    import random
    from dataclasses import asdict

    from layergraft.embeddings.objective import embedding_fingerprint, texts_fingerprint
    from layergraft.scoring.analysis import analyze_model, load_analysis, save_analysis
    from layergraft.utils import cache_root, short_hash

    sample = texts
    if len(texts) > settings.samples:
        sample = random.Random(settings.seed).sample(texts, settings.samples)
    key = json.dumps({**{k: v for k, v in asdict(settings).items() if k != "progress"},
                      "max_length": max_length}, sort_keys=True)
    folder = (cache_root(cache_dir) / "analysis" / f"embedding-{embedding_fingerprint(model)}"
              / f"texts-{texts_fingerprint(sample)}" / short_hash(key))
    if not (folder / "analysis.json").is_file():
        batches = tokenized_batches(model, sample, settings.batch_size, max_length)
        save_analysis(analyze_model(transformer_of(model), batches,
                                    importance=settings.importance, loss="embedding",
                                    normalize=settings.normalize, progress=False,
                                    pool=pool_function(model)), folder)
    return load_analysis(folder)

"""Shared fixtures: tiny-model factories, and one torch thread for tiny-model tests."""

from __future__ import annotations

import pytest
from helpers import make_tiny_batches, make_tiny_model, one_torch_thread
from tiny_task import WORDS, save_tiny_teacher


@pytest.fixture(autouse=True)
def one_thread_for_tiny_models(request):
    """Tests marked slow use the real MiniLM and keep every thread."""
    if request.node.get_closest_marker("slow"):
        yield
        return
    with one_torch_thread():
        yield


@pytest.fixture
def tiny_model():
    """Factory: `tiny_model("bert", num_labels=2, num_layers=4, seed=0, **config_overrides)`."""
    return make_tiny_model


@pytest.fixture
def tiny_batches():
    """Factory: `tiny_batches(model, n_batches=2, batch=4, seq=10, seed=0)`."""
    return make_tiny_batches


# A tiny random sentence-transformers model (tiny BERT + mean Pooling + Normalize) and texts,
# shared by the embedding tests.
@pytest.fixture(scope="module")
def st_folder(tmp_path_factory):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    root = tmp_path_factory.mktemp("st")
    base = save_tiny_teacher(root / "base", head=False)
    transformer = Transformer(base)
    pooling = Pooling(transformer.get_embedding_dimension(), "mean")
    model = SentenceTransformer(modules=[transformer, pooling, Normalize()], device="cpu")
    model.save(str(root / "model"))
    return root / "model"


@pytest.fixture(scope="module")
def sentences():
    import random

    rng = random.Random(0)
    return [" ".join(rng.choices(WORDS, k=rng.randint(2, 9))) for _ in range(40)]


@pytest.fixture(scope="module")
def texts_file(tmp_path_factory, sentences):
    path = tmp_path_factory.mktemp("texts") / "sentences.txt"
    path.write_text("\n".join(sentences) + "\n\n")
    return path



"""Linear CKA and adjacent cosine: invariances, streaming, and padding."""

from __future__ import annotations

import pytest
import torch
from helpers import make_tiny_batches, make_tiny_model, pad_further

from layergraft.scoring.similarity import LayerSimilarity, linear_cka


def random_pair(n=50, d=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=generator, dtype=torch.float64)
    y = x @ torch.randn(d, d, generator=generator, dtype=torch.float64) + torch.randn(
        n, d, generator=generator, dtype=torch.float64)
    return x, y


def gram_cka(x, y):
    """CKA as Kornblith et al. define it: normalised HSIC of the linear Gram matrices."""
    n = x.shape[0]
    centre = torch.eye(n, dtype=torch.float64) - 1.0 / n

    def hsic(a, b):
        return torch.trace(a @ centre @ b @ centre)

    gram_x, gram_y = x @ x.T, y @ y.T
    return hsic(gram_x, gram_y) / torch.sqrt(hsic(gram_x, gram_x) * hsic(gram_y, gram_y))


def test_linear_cka_matches_hsic_on_gram_matrices():
    for seed in range(3):
        x, y = random_pair(seed=seed)
        torch.testing.assert_close(linear_cka(x, y), gram_cka(x, y))
        torch.testing.assert_close(linear_cka(x[:, :3], y), gram_cka(x[:, :3], y))


def test_linear_cka_is_one_with_itself_and_invariant_to_rotation_and_scale():
    x, y = random_pair()
    rotation, _ = torch.linalg.qr(torch.randn(8, 8, dtype=torch.float64))
    base = linear_cka(x, y)
    assert base < 0.99
    torch.testing.assert_close(linear_cka(x, x), torch.tensor(1.0, dtype=torch.float64))
    torch.testing.assert_close(linear_cka(x, y @ rotation), base)
    torch.testing.assert_close(linear_cka(x, 7.5 * y), base)
    torch.testing.assert_close(linear_cka(x + 3.0, y), base)


def split_states(states, mask, sizes):
    """[S, batch, seq, d] hidden states fed to a LayerSimilarity in batches of `sizes` rows."""
    similarity = LayerSimilarity()
    start = 0
    for size in sizes:
        similarity.update(list(states[:, start:start + size]), mask[start:start + size])
        start += size
    return similarity


def test_streaming_over_batches_equals_all_tokens_at_once():
    generator = torch.Generator().manual_seed(1)
    # large offsets, small spread: naive uncentred sums would cancel catastrophically
    states = 1000.0 + torch.randn(4, 6, 9, 16, generator=generator)
    states[2] = states[1] * 0.5 + 0.1 * states[2]
    mask = (torch.arange(9) < torch.tensor([9, 3, 7, 5, 1, 8])[:, None]).long()
    similarity = split_states(states, mask, [1, 2, 3])
    tokens = [s[mask.bool()].double() for s in states]
    expected = torch.tensor([[float(linear_cka(a, b)) for b in tokens] for a in tokens],
                            dtype=torch.float64)
    torch.testing.assert_close(similarity.cka(), expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(similarity.cka().diagonal(), torch.ones(4, dtype=torch.float64))
    assert similarity.cka()[1, 2] > 0.95 > similarity.cka()[0, 3]
    cosine = torch.stack([torch.cosine_similarity(a, b, dim=-1).mean()
                          for a, b in zip(tokens, tokens[1:], strict=False)])
    torch.testing.assert_close(similarity.adjacent_cosine(), cosine)
    assert similarity.tokens == int(mask.sum())


def test_adjacent_cosine_of_identical_states_is_one():
    state = torch.randn(3, 5, 8)
    similarity = LayerSimilarity()
    similarity.update([state, state, -state], torch.ones(3, 5))
    torch.testing.assert_close(similarity.adjacent_cosine(),
                               torch.tensor([1.0, -1.0], dtype=torch.float64))


def model_similarity(model, batches):
    similarity = LayerSimilarity()
    with torch.no_grad():
        for batch in batches:
            inputs = {k: v for k, v in batch.items() if k != "labels"}
            similarity.update(model(**inputs, output_hidden_states=True).hidden_states,
                              batch["attention_mask"])
    return similarity


@pytest.mark.parametrize("family", ["bert", "distilbert", "deberta-v2", "deberta-v3"])
def test_padding_tokens_do_not_count(family):
    model = make_tiny_model(family, num_layers=3)
    batches = make_tiny_batches(model)
    padded = [pad_further(b, 5, model.config.pad_token_id or 0) for b in batches]
    plain, more = model_similarity(model, batches), model_similarity(model, padded)
    assert plain.tokens == more.tokens
    assert plain.cka().shape == (4, 4) and plain.adjacent_cosine().shape == (3,)
    torch.testing.assert_close(more.cka(), plain.cka())
    torch.testing.assert_close(more.adjacent_cosine(), plain.adjacent_cosine())


def test_asking_before_any_data_is_an_error():
    with pytest.raises(ValueError, match="update"):
        LayerSimilarity().cka()

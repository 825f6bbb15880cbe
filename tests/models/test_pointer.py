"""The ``pointer`` model: its published size, its copy distribution, its gate, its loss and its length groups."""

import pytest
import torch

from nextloc.data.batches import Batch
from nextloc.data.info import DataInfo
from nextloc.models.mhsa import sinusoidal_positions
from nextloc.models.pointer import EPSILON, PointerModel

L = 40


def model(**settings) -> PointerModel:
    torch.manual_seed(0)
    sizes = {"embed_dim": 16, "num_heads": 2, "feedforward_dim": 32, "max_positions": 12}
    return PointerModel(DataInfo(num_locations=L, num_users=5), **(sizes | settings)).eval()


def batch(lengths, width=None, seed=1) -> Batch:
    generator = torch.Generator().manual_seed(seed)
    n, width = len(lengths), width or max(lengths)
    length = torch.tensor(lengths)
    valid = torch.arange(width)[None, :] < length[:, None]

    def field(low, high):
        return torch.randint(low, high, (n, width), generator=generator) * valid

    return Batch(field(2, L), length, torch.randint(1, 5, (n,), generator=generator), torch.randint(2, L, (n,)),
                 {"time_slot": field(0, 96), "weekday": field(0, 7), "duration": field(0, 96), "diff": field(0, 8)})


def test_parameter_count_of_the_published_configuration():
    """251,476 at GeoLife sizes: d 64, 2 layers, 4 heads, feed-forward 128, 64 positions from the end."""
    assert sum(p.numel() for p in PointerModel(DataInfo(1187, 46)).parameters()) == 251_476


def test_scores_are_the_log_of_a_distribution():
    with torch.no_grad():
        probabilities = model()(batch([5, 9, 3])).exp()
    torch.testing.assert_close(probabilities.sum(-1), torch.full((3,), 1 + L * EPSILON))


def test_the_copy_distribution_puts_all_mass_on_history_places_summing_repeats():
    m = model(mix="pointer")
    b = batch([6, 4])
    b.location[0, :6] = torch.tensor([7, 9, 7, 7, 11, 9])
    with torch.no_grad():
        p = m(b).exp() - EPSILON
    assert set(torch.nonzero(p[0] > 1e-7).flatten().tolist()) == {7, 9, 11}
    torch.testing.assert_close(p[0, [7, 9, 11]].sum(), torch.tensor(1.0))
    assert p[0, 7] > 0 and p[1, b.location[1, :4]].sum() > 1 - 1e-5


def test_the_gate_mixes_the_copy_and_the_generation_distributions():
    b = batch([5, 8])
    full = model()
    with torch.no_grad():
        mixed = full(b).exp()
        copy, generate = (model(mix=mix)(b).exp() for mix in ("pointer", "generation"))
        gate = torch.sigmoid(full.gate(last_state(full, b)))
    torch.testing.assert_close(mixed, gate * copy + (1 - gate) * generate, rtol=1e-5, atol=1e-7)


def last_state(m, b):
    position = torch.arange(b.location.shape[1])
    padding = position[None, :] >= b.length[:, None]
    from_end = (b.length[:, None] - position[None, :]).clamp(0, m.max_positions - 1)
    x = m.embedding(b, from_end)
    encoded = m.encoder(x + sinusoidal_positions(x.shape[1], x.shape[2]), padding, causal=False)
    return encoded[torch.arange(len(b.length)), b.length - 1]


def test_padding_never_changes_a_history_score_and_groups_equal_one_batch():
    """The same history alone, in a wider padded batch, and run in length groups or as one group."""
    grouped, whole = model(length_groups=3), model(length_groups=1)
    padded = batch([3, 11, 5, 2, 9], width=14)
    with torch.no_grad():
        together = grouped(padded)
        torch.testing.assert_close(whole(padded), together, rtol=1e-5, atol=1e-6)
        for i, length in enumerate([3, 11, 5, 2, 9]):
            alone = padded.rows(torch.tensor([i]), length)
            torch.testing.assert_close(grouped(alone), together[i : i + 1], rtol=1e-5, atol=1e-6)


def test_the_last_step_is_one_position_from_the_end_and_farther_positions_share_the_last_bias():
    """With equal attention scores the learned bias alone decides where the pointer looks."""
    b = batch([4])
    b.location[0] = torch.tensor([5, 6, 7, 8])
    for max_positions, biased, expected in ((12, 1, [8]), (3, 2, [5, 6, 7])):
        m = model(mix="pointer", max_positions=max_positions)
        with torch.no_grad():
            m.key.weight.zero_(), m.key.bias.zero_(), m.position_bias.zero_()
            m.position_bias[biased] = 5.0
            p = m(b).exp()[0]
        assert set(torch.nonzero(p > 0.2).flatten().tolist()) == set(expected)
        torch.testing.assert_close(p[expected], torch.full((len(expected),), p[expected[0]].item()))


@pytest.mark.parametrize("smoothing", [0.0, 0.03])
def test_the_loss_is_cross_entropy_of_the_mixture_with_label_smoothing(smoothing):
    m = model(label_smoothing=smoothing)
    b = batch([5, 7, 3])
    with torch.no_grad():
        scores = m(b)
        loss = m.validation_loss(scores, b)
    nll = -scores[torch.arange(3), b.target]
    uniform = -scores.log_softmax(-1).mean(-1)
    expected = ((1 - smoothing) * -scores.log_softmax(-1)[torch.arange(3), b.target] + smoothing * uniform).mean()
    torch.testing.assert_close(loss, expected)
    if smoothing == 0.0:
        torch.testing.assert_close(loss, nll.mean(), rtol=1e-5, atol=1e-5)


def test_an_unknown_user_gets_the_mean_of_the_known_users():
    m = model()
    b = batch([4, 4])
    unknown = Batch(b.location, b.length, torch.zeros(2, dtype=torch.long), b.target, b.features)
    with torch.no_grad():
        scores = m(unknown)
    assert torch.isfinite(scores).all()
    mean = m.embedding.user.weight[1:].mean(0)
    with torch.no_grad():
        m.embedding.user.weight[0] = mean
        torch.testing.assert_close(m(unknown), scores)


@pytest.mark.parametrize("bias, expected", [((5.0, 0.0), [6, 7]), ((0.0, 5.0), [5])])
def test_the_transition_bias_points_at_what_followed_the_current_place_or_at_the_place_itself(bias, expected):
    """History 5 6 5 7 5: the current place 5 was followed by 6 and by 7."""
    m = model(mix="pointer", use_transition=True)
    b = batch([5])
    b.location[0] = torch.tensor([5, 6, 5, 7, 5])
    with torch.no_grad():
        m.key.weight.zero_(), m.key.bias.zero_(), m.position_bias.zero_(), m.transition.weight.zero_()
        m.transition.bias.copy_(torch.tensor(bias))
        p = m(b).exp()[0]
    assert set(torch.nonzero(p > 0.2).flatten().tolist()) == set(expected)

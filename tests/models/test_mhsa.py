"""The ``mhsa`` model: its published sizes, its initialisation, its masks and its attention maps."""

import math

import pytest
import torch

from nextloc.data.batches import Batch
from nextloc.data.info import DataInfo
from nextloc.models.mhsa import MHSAModel, sinusoidal_positions


def model(**sizes) -> MHSAModel:
    torch.manual_seed(0)
    return MHSAModel(DataInfo(num_locations=60, num_users=5), **sizes).eval()


def batch(lengths, width, seed=1) -> Batch:
    generator = torch.Generator().manual_seed(seed)
    n = len(lengths)
    length = torch.tensor(lengths)
    valid = torch.arange(width)[None, :] < length[:, None]

    def field(high):
        return torch.randint(1, high, (n, width), generator=generator) * valid

    return Batch(field(60), length, torch.randint(1, 5, (n,), generator=generator), torch.zeros(n, dtype=torch.long),
                 {"time_slot": field(96), "weekday": field(7), "duration": field(96)})


@pytest.mark.parametrize("sizes, data, expected", [
    ({}, DataInfo(1187, 46), 112_547),
    ({"embed_dim": 96, "num_layers": 4, "feedforward_dim": 256, "fc_dropout": 0.1}, DataInfo(7038, 693), 1_823_518),
])
def test_parameter_counts_of_the_published_configurations(sizes, data, expected):
    assert sum(p.numel() for p in MHSAModel(data, **sizes).parameters()) == expected


def test_matrices_are_xavier_uniform_and_norms_keep_their_defaults():
    m = model()
    for name, param in m.named_parameters():
        if param.dim() > 1:
            fan_out, fan_in = param.shape[0], param.shape[1]
            assert param.abs().max() <= math.sqrt(6 / (fan_in + fan_out)) + 1e-6, name
    assert torch.equal(m.encoder.norm.weight, torch.ones(32)) and torch.equal(m.residual_norm.bias, torch.zeros(32))


def test_positions_are_sin_on_even_and_cos_on_odd_dimensions():
    table = sinusoidal_positions(5, 8)
    assert torch.allclose(table[3, 0], torch.sin(torch.tensor(3.0)))
    assert torch.allclose(table[3, 1], torch.cos(torch.tensor(3.0)))
    assert torch.allclose(table[2, 2], torch.sin(torch.tensor(2.0 / 10000 ** (2 / 8))))


def test_a_history_scores_the_same_alone_and_in_a_padded_batch():
    """Padding and later steps are hidden from the last valid step in every layer."""
    m = model()
    padded = batch([3, 9, 5], width=12)
    with torch.no_grad():
        together = m(padded)
        for i, length in enumerate([3, 9, 5]):
            alone = Batch(padded.location[i : i + 1, :length], padded.length[i : i + 1], padded.user[i : i + 1],
                          padded.target[i : i + 1], {k: v[i : i + 1, :length] for k, v in padded.features.items()})
            torch.testing.assert_close(m(alone), together[i : i + 1], rtol=1e-5, atol=1e-5)


def test_attention_of_the_last_valid_step_never_falls_on_padding_in_any_layer():
    m = model(num_layers=3)
    b = batch([2, 7, 4], width=8)
    maps = m.attention_maps(b)
    assert len(maps) == 3
    for weights in maps:
        assert weights.shape == (3, 8, 8)
        torch.testing.assert_close(weights.sum(-1), torch.ones(3, 8))
        hidden = torch.arange(8)[None, :] >= b.length[:, None]
        assert (weights.masked_select(hidden[:, None, :].expand_as(weights)) == 0).all()


def test_every_step_sees_only_itself_and_earlier_steps_in_every_layer():
    """The state at step 4 of a 9-step history equals the last state of its first 5 steps (causal mask)."""
    m = model(num_layers=3)
    full = batch([9], width=9)
    prefix = Batch(full.location[:, :5], torch.tensor([5]), full.user, full.target,
                   {k: v[:, :5] for k, v in full.features.items()})
    with torch.no_grad():
        states = [m.encoder(x, padding, causal=True) for x, padding in (m.encode(full), m.encode(prefix))]
    torch.testing.assert_close(states[0][0, 4], states[1][0, 4], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(states[0][0, 8], states[1][0, 4])


@pytest.mark.parametrize("training", [False, True])
def test_the_encoder_in_length_groups_gives_the_scores_of_one_group(training):
    """Also in training (dropout off), where the head's BatchNorm uses the statistics of the whole batch."""
    sizes = dict(dropout=0.0, head_dropout=0.0, fc_dropout=0.0)
    grouped, whole = model(length_groups=3, **sizes), model(length_groups=1, **sizes)
    grouped.train(training), whole.train(training)
    b = batch([3, 11, 5, 2, 9, 12], width=14)
    with torch.no_grad():
        torch.testing.assert_close(grouped(b), whole(b), rtol=1e-5, atol=1e-5)

"""Golden test: nextloc's ``lstm`` model computes the reference implementation's LSTM model.

What this pins
--------------
The LSTM baseline of the reference implementation (Hong et al., "Context-aware
multi-head self-attentional neural network model for next location
prediction", Transportation Research Part C, 2023; code mie-lab/location-prediction,
whose embedding and output head the LSTM variant of aetandrianwr/next_loc_clean_v2,
``src/models/baseline/LSTM.py``, reuses) is written out below as its
code computes it, without any nextloc import:

- embedding: location + hour (``time // 4``) + quarter-hour
  (``time % 4``) + weekday + duration embeddings, summed, then ``Dropout(0.1)``;
- ONE ``nn.LSTM(d, h, num_layers=2, dropout=lstm_dropout)`` run over
  ``pack_padded_sequence(..., enforce_sorted=False)``; each sequence's output
  at its last valid step is gathered from ``pad_packed_sequence`` at ``len - 1``;
- ``LayerNorm(h)``; the head: + user embedding, ``Dropout(0.1)``,
  ``BatchNorm1d(x + Drop(Lin(2h->h)(Drop(ReLU(Lin(h->2h)(x))))))``, ``Linear(h, L)``.

nextloc reorganises that model for speed (one one-layer ``nn.LSTM`` per layer
with its own inter-layer dropout, histories run in length groups or padded
instead of packed, only the read positions embedded) and renames every
module. Those are exactly the changes that can silently alter the function,
so the weights of a freshly built ``LSTMModel`` are copied into the
transcription through an explicit name map (every parameter and buffer mapped
exactly once, shapes equal) and both must give the same

1. logits in eval mode, for every ``sequence`` path, on histories of very
   different lengths, with even and odd batch sizes;
2. logits in train mode with every dropout at 0 (BatchNorm on batch
   statistics), and the same BatchNorm running statistics afterwards;
3. gradients of a cross-entropy loss w.r.t. every parameter;
4. parameter counts: 482,659 at GeoLife sizes, 2,847,582 at DIY sizes.

Batches are built by :func:`make_batch` only and models by
:func:`make_lstm_model` only, so a change of nextloc's ``Batch`` class or of
the model's constructor touches one helper.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from nextloc.data.batches import Batch
from nextloc.data.info import DataInfo
from nextloc.models.lstm import LSTMModel

GEOLIFE = dict(num_locations=1187, num_users=46, embed_dim=32, hidden_size=128, fc_dropout=0.2)
DIY = dict(num_locations=7038, num_users=693, embed_dim=96, hidden_size=192, fc_dropout=0.1)

# history lengths: 1 to 45 steps, unsorted; an even and an odd batch size
EVEN_LENGTHS = [1, 2, 3, 7, 20, 45]
ODD_LENGTHS = [20, 1, 45, 3, 7, 2, 12]
LENGTHS = {"even": EVEN_LENGTHS, "odd": ODD_LENGTHS}

# every ``sequence`` path of LSTMModel; the grouped path with its defaults and with fine groups
SEQUENCES = {
    "grouped": dict(sequence="grouped"),
    "grouped-fine": dict(sequence="grouped", length_groups=6, group_size_multiple=1, group_length_multiple=1),
    "padded": dict(sequence="padded"),
    "packed": dict(sequence="packed"),
}


# ---------------------------------------------------------------------------
# The reference model written out plainly: one two-layer nn.LSTM over packed
# sequences, the head as the reference computes it. No nextloc import.
# ---------------------------------------------------------------------------


class ReferenceLSTM(nn.Module):
    """The reference's LSTM model; ``forward`` takes time-major ``(T, B)`` histories padded with 0."""

    def __init__(self, num_locations, num_users, embed_dim, hidden_size, fc_dropout, lstm_dropout=0.2, dropout=0.1):
        super().__init__()
        self.emb_loc = nn.Embedding(num_locations, embed_dim)
        self.emb_hour = nn.Embedding(24, embed_dim)
        self.emb_quarter = nn.Embedding(4, embed_dim)
        self.emb_weekday = nn.Embedding(7, embed_dim)
        self.emb_duration = nn.Embedding(2 * 24 * 60 // 30, embed_dim)
        self.emb_dropout = nn.Dropout(dropout)
        self.lstm = nn.LSTM(embed_dim, hidden_size, num_layers=2, dropout=lstm_dropout)
        self.layer_norm = nn.LayerNorm(hidden_size)
        self.emb_user = nn.Embedding(num_users, hidden_size)
        self.user_dropout = nn.Dropout(dropout)
        self.linear1 = nn.Linear(hidden_size, 2 * hidden_size)
        self.linear2 = nn.Linear(2 * hidden_size, hidden_size)
        self.fc_dropout1 = nn.Dropout(fc_dropout)
        self.fc_dropout2 = nn.Dropout(fc_dropout)
        self.norm1 = nn.BatchNorm1d(hidden_size)
        self.fc_loc = nn.Linear(hidden_size, num_locations)

    def embed(self, location, time, weekday, duration) -> Tensor:
        hour, quarter = torch.div(time, 4, rounding_mode="floor"), time % 4
        x = self.emb_loc(location) + self.emb_hour(hour) + self.emb_quarter(quarter) + self.emb_weekday(weekday)
        return self.emb_dropout(x + self.emb_duration(duration))  # (T, B, d)

    def forward(self, location, time, weekday, duration, length, user) -> Tensor:
        packed = pack_padded_sequence(self.embed(location, time, weekday, duration), length.cpu(), enforce_sorted=False)
        output, _ = pad_packed_sequence(self.lstm(packed)[0])  # (T, B, h)
        last = output[length - 1, torch.arange(len(length))]  # each sequence's last valid step
        x = self.user_dropout(self.layer_norm(last) + self.emb_user(user))
        residual = self.fc_dropout2(self.linear2(self.fc_dropout1(F.relu(self.linear1(x)))))
        return self.fc_loc(self.norm1(x + residual))


def reference_inputs(batch: Batch) -> dict[str, Tensor]:
    """A nextloc batch as the reference's collated inputs: histories time-major ``(T, B)``, padded with 0."""
    steps = dict(location=batch.location, time=batch.time_slot, weekday=batch.weekday, duration=batch.duration)
    return {key: value.T.contiguous() for key, value in steps.items()} | dict(length=batch.length, user=batch.user)


# ---------------------------------------------------------------------------
# nextloc name -> reference name, for a two-layer model: every parameter and buffer.
# ---------------------------------------------------------------------------

NAME_MAP = {
    # VisitEmbedding
    "embedding.location.weight": "emb_loc.weight",
    "embedding.hour.weight": "emb_hour.weight",
    "embedding.quarter.weight": "emb_quarter.weight",
    "embedding.weekday.weight": "emb_weekday.weight",
    "embedding.duration.weight": "emb_duration.weight",
    # LastStepLSTM's one-layer nn.LSTM per layer -> one two-layer nn.LSTM
    "encoder.layers.0.weight_ih_l0": "lstm.weight_ih_l0",
    "encoder.layers.0.weight_hh_l0": "lstm.weight_hh_l0",
    "encoder.layers.0.bias_ih_l0": "lstm.bias_ih_l0",
    "encoder.layers.0.bias_hh_l0": "lstm.bias_hh_l0",
    "encoder.layers.1.weight_ih_l0": "lstm.weight_ih_l1",
    "encoder.layers.1.weight_hh_l0": "lstm.weight_hh_l1",
    "encoder.layers.1.bias_ih_l0": "lstm.bias_ih_l1",
    "encoder.layers.1.bias_hh_l0": "lstm.bias_hh_l1",
    # LayerNorm after the LSTM
    "norm.weight": "layer_norm.weight",
    "norm.bias": "layer_norm.bias",
    # the head
    "user.weight": "emb_user.weight",
    "residual.0.weight": "linear1.weight",
    "residual.0.bias": "linear1.bias",
    "residual.3.weight": "linear2.weight",
    "residual.3.bias": "linear2.bias",
    "residual_norm.weight": "norm1.weight",
    "residual_norm.bias": "norm1.bias",
    "residual_norm.running_mean": "norm1.running_mean",
    "residual_norm.running_var": "norm1.running_var",
    "residual_norm.num_batches_tracked": "norm1.num_batches_tracked",
    "classifier.weight": "fc_loc.weight",
    "classifier.bias": "fc_loc.bias",
}


def assert_name_map_is_a_bijection(model: nn.Module, reference: nn.Module) -> None:
    """Every parameter and buffer of both models mapped exactly once, parameters to parameters, shapes equal."""
    ours, theirs = model.state_dict(), reference.state_dict()
    assert len(set(NAME_MAP.values())) == len(NAME_MAP), "two nextloc names map to one reference name"
    assert set(ours) == set(NAME_MAP), f"unmapped nextloc names: {set(ours) ^ set(NAME_MAP)}"
    assert set(theirs) == set(NAME_MAP.values()), f"unmapped reference names: {set(theirs) ^ set(NAME_MAP.values())}"
    params = {NAME_MAP[name] for name, _ in model.named_parameters()}
    assert params == {name for name, _ in reference.named_parameters()}
    for name, value in ours.items():
        assert value.shape == theirs[NAME_MAP[name]].shape, name


def copy_into_reference(model: nn.Module, reference: nn.Module) -> None:
    assert_name_map_is_a_bijection(model, reference)
    reference.load_state_dict({NAME_MAP[name]: value.clone() for name, value in model.state_dict().items()}, strict=True)


def perturb(model: nn.Module, seed: int) -> None:
    """Move every parameter and BatchNorm statistic off its initial value, so that
    no identity (LayerNorm weight 1, running mean 0 and variance 1, zero biases) hides a mistake."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
        norm = model.residual_norm
        norm.running_mean.copy_(0.3 * torch.randn(norm.running_mean.shape, generator=g))
        norm.running_var.copy_(0.5 + torch.rand(norm.running_var.shape, generator=g))
        norm.num_batches_tracked.fill_(17)


def build_pair(
    num_locations,
    num_users,
    embed_dim,
    hidden_size,
    fc_dropout,
    sequence_options=None,
    no_dropout=False,
    perturbed=False,
    seed=0,
) -> tuple[LSTMModel, ReferenceLSTM]:
    """A freshly built nextloc model (optionally perturbed) and the transcription holding its weights."""
    torch.manual_seed(seed)
    dropouts = dict(lstm_dropout=0.2, embed_dropout=0.1, head_dropout=0.1, fc_dropout=fc_dropout)
    if no_dropout:
        dropouts = dict.fromkeys(dropouts, 0.0)
    model = make_lstm_model(
        num_locations, num_users, embed_dim=embed_dim, hidden_size=hidden_size, **dropouts, **(sequence_options or {})
    )
    reference = ReferenceLSTM(
        num_locations, num_users, embed_dim, hidden_size, fc_dropout=dropouts["fc_dropout"],
        lstm_dropout=dropouts["lstm_dropout"], dropout=0.0 if no_dropout else 0.1,  # the reference fixes 0.1
    )
    if no_dropout:
        assert reference.lstm.dropout == 0.0
        assert all(m.p == 0.0 for m in reference.modules() if isinstance(m, nn.Dropout))
    if perturbed:
        perturb(model, seed + 1)
    copy_into_reference(model, reference)
    return model, reference


# ---------------------------------------------------------------------------
# Batches
# ---------------------------------------------------------------------------


def make_batch(location, length, user, target, **features) -> Batch:
    """nextloc's ``Batch`` from tensors: ``location`` and per-step features ``(B, T)``,
    left-aligned and padded with 0; ``length``, ``user``, ``target`` ``(B,)``.

    The only place this file builds a ``Batch``.
    """
    return Batch(location=location, length=length, user=user, target=target, features=features)


def make_lstm_model(num_locations, num_users, **options) -> LSTMModel:
    """A freshly built nextloc ``LSTMModel`` for these table sizes.

    The only place this file calls its constructor.
    """
    return LSTMModel(DataInfo(num_locations=num_locations, num_users=num_users), **options)


def random_batch(lengths, num_locations, num_users, seed=0) -> Batch:
    """Random histories of the given lengths, padded with 0 as ``SplitTensors`` pads them;
    locations and users from 1 (0 is the reference's padding), targets from 1."""
    g = torch.Generator().manual_seed(seed)
    length = torch.tensor(lengths)
    shape = (len(lengths), max(lengths))
    valid = torch.arange(shape[1]) < length[:, None]

    def history(low, high):
        return torch.randint(low, high, shape, generator=g).masked_fill(~valid, 0)

    return make_batch(
        location=history(1, num_locations),
        time_slot=history(0, 96),
        weekday=history(0, 7),
        duration=history(0, 96),
        length=length,
        user=torch.randint(1, num_users, (len(lengths),), generator=g),
        target=torch.randint(1, num_locations, (len(lengths),), generator=g),
    )


def both_logits(model, reference, batch):
    return model(batch), reference(**reference_inputs(batch))


# ---------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------


class TestTranscription:
    def test_name_map_covers_every_parameter_and_buffer_exactly_once(self):
        model, reference = build_pair(**GEOLIFE)
        assert_name_map_is_a_bijection(model, reference)
        assert len(NAME_MAP) == len(model.state_dict()) == len(reference.state_dict()) == 27
        for name, value in model.state_dict().items():
            assert torch.equal(reference.state_dict()[NAME_MAP[name]], value), name

    def test_last_valid_output_is_the_final_hidden_state(self):
        """Sanity of the transcription: the output gathered at ``len - 1`` is the packed LSTM's ``h_n[-1]``."""
        _, reference = build_pair(**GEOLIFE, perturbed=True)
        reference.eval()
        batch = random_batch(ODD_LENGTHS, GEOLIFE["num_locations"], GEOLIFE["num_users"])
        inputs = reference_inputs(batch)
        with torch.no_grad():
            emb = reference.embed(inputs["location"], inputs["time"], inputs["weekday"], inputs["duration"])
            packed = pack_padded_sequence(emb, inputs["length"], enforce_sorted=False)
            packed_output, (h_n, _) = reference.lstm(packed)
            output, _ = pad_packed_sequence(packed_output)
        gathered = output[inputs["length"] - 1, torch.arange(len(ODD_LENGTHS))]
        torch.testing.assert_close(gathered, h_n[-1], atol=0, rtol=0)


class TestAgainstReference:
    @pytest.mark.parametrize("perturbed", [False, True], ids=["fresh", "perturbed"])
    @pytest.mark.parametrize("lengths", LENGTHS.values(), ids=LENGTHS.keys())
    @pytest.mark.parametrize("sequence", SEQUENCES.values(), ids=SEQUENCES.keys())
    def test_eval_logits_equal_the_reference(self, sequence, lengths, perturbed):
        """Eval mode (default dropouts, inactive; BatchNorm on running statistics): the same logits."""
        model, reference = build_pair(**GEOLIFE, sequence_options=sequence, perturbed=perturbed)
        model.eval()
        reference.eval()
        batch = random_batch(lengths, GEOLIFE["num_locations"], GEOLIFE["num_users"])
        with torch.no_grad():
            logits, expected = both_logits(model, reference, batch)
        assert logits.shape == (len(lengths), GEOLIFE["num_locations"])
        torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)

    @pytest.mark.parametrize("sequence", SEQUENCES.values(), ids=SEQUENCES.keys())
    def test_train_mode_without_dropout_equals_the_reference(self, sequence):
        """Train mode, every dropout 0: BatchNorm on batch statistics gives the same logits,
        and leaves the same running statistics, batch after batch."""
        model, reference = build_pair(**GEOLIFE, sequence_options=sequence, no_dropout=True, perturbed=True)
        model.train()
        reference.train()
        for seed, lengths in enumerate([EVEN_LENGTHS, ODD_LENGTHS]):
            batch = random_batch(lengths, GEOLIFE["num_locations"], GEOLIFE["num_users"], seed=seed)
            with torch.no_grad():
                logits, expected = both_logits(model, reference, batch)
            torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
            ours, theirs = model.state_dict(), reference.state_dict()
            for stat in ("running_mean", "running_var", "num_batches_tracked"):
                name = f"residual_norm.{stat}"
                torch.testing.assert_close(ours[name], theirs[NAME_MAP[name]], atol=1e-6, rtol=1e-6, msg=name)
        assert model.residual_norm.num_batches_tracked.item() == 17 + 2

    @pytest.mark.parametrize("lengths", LENGTHS.values(), ids=LENGTHS.keys())
    @pytest.mark.parametrize("sequence", SEQUENCES.values(), ids=SEQUENCES.keys())
    def test_gradients_equal_the_reference(self, sequence, lengths):
        """Train mode, every dropout 0: the same cross-entropy gradient for every parameter."""
        model, reference = build_pair(**GEOLIFE, sequence_options=sequence, no_dropout=True, perturbed=True)
        model.train()
        reference.train()
        batch = random_batch(lengths, GEOLIFE["num_locations"], GEOLIFE["num_users"])
        logits, expected = both_logits(model, reference, batch)
        F.cross_entropy(logits, batch.target).backward()
        F.cross_entropy(expected, batch.target).backward()
        theirs = dict(reference.named_parameters())
        for name, param in model.named_parameters():
            ref_grad = theirs[NAME_MAP[name]].grad
            assert param.grad is not None and ref_grad is not None, name
            torch.testing.assert_close(param.grad, ref_grad, atol=1e-5, rtol=1e-4, msg=name)
        assert theirs["emb_user.weight"].grad.abs().sum() > 0  # the loss reaches the first and last layers
        assert theirs["emb_loc.weight"].grad.abs().sum() > 0


class TestParameterCount:
    @pytest.mark.parametrize(
        "sizes, expected", [(GEOLIFE, 482_659), (DIY, 2_847_582)], ids=["geolife", "diy"]
    )
    def test_both_models_have_the_published_parameter_count(self, sizes, expected):
        model, reference = build_pair(**sizes)
        assert sum(p.numel() for p in reference.parameters()) == expected
        assert sum(p.numel() for p in model.parameters()) == expected

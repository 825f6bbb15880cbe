"""Golden test: nextloc's ``lstm`` model computes the reference implementation's LSTM model.

What this pins
--------------
The LSTM baseline of the reference implementation (Hong et al., "Context-aware
multi-head self-attentional neural network model for next location
prediction", Transportation Research Part C, 2023; code mie-lab/location-prediction,
whose embedding and output head the LSTM variant of aetandrianwr/next_loc_clean_v2,
``src/models/baseline/LSTM.py``, reuses) is transcribed literally below,
with its own module names and without any nextloc import:

- ``AllEmbeddingLSTM``: location + hour (``time // 4``) + quarter-hour
  (``time % 4``) + weekday + duration embeddings, summed, then ``Dropout(0.1)``;
- ONE ``nn.LSTM(d, h, num_layers=2, dropout=lstm_dropout)`` run over
  ``pack_padded_sequence(..., enforce_sorted=False)``; each sequence's output
  at its last valid step is gathered from ``pad_packed_sequence`` at ``len - 1``;
- ``LayerNorm(h)``; ``FullyConnected``: + user embedding, ``Dropout(0.1)``,
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

from types import SimpleNamespace

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
# The reference model, transcribed literally (POI branch and the "time"/"weekday"
# temporal modes left out: not used by this model). Module names as in the source.
# ---------------------------------------------------------------------------


class TemporalEmbedding(nn.Module):
    def __init__(self, d_input, emb_info="all"):
        super(TemporalEmbedding, self).__init__()

        self.emb_info = emb_info
        # quarter of an hour
        self.minute_size = 4
        hour_size = 24
        weekday = 7

        if self.emb_info == "all":
            self.minute_embed = nn.Embedding(self.minute_size, d_input)
            self.hour_embed = nn.Embedding(hour_size, d_input)
            self.weekday_embed = nn.Embedding(weekday, d_input)

    def forward(self, time, weekday):
        if self.emb_info == "all":
            hour = torch.div(time, self.minute_size, rounding_mode="floor")
            minutes = time % 4

            minute_x = self.minute_embed(minutes)
            hour_x = self.hour_embed(hour)
            weekday_x = self.weekday_embed(weekday)

            return hour_x + minute_x + weekday_x


class AllEmbeddingLSTM(nn.Module):
    def __init__(self, d_input, config, total_loc_num, emb_info="all", emb_type="add"):
        super(AllEmbeddingLSTM, self).__init__()
        self.d_input = d_input
        self.emb_type = emb_type

        # location embedding
        self.emb_loc = nn.Embedding(total_loc_num, d_input)

        # time embedding
        self.if_include_time = config.if_embed_time
        if self.if_include_time:
            self.temporal_embedding = TemporalEmbedding(d_input, emb_info)

        # duration embedding (in minutes, max 2 days)
        self.if_include_duration = config.if_embed_duration
        if self.if_include_duration:
            self.emb_duration = nn.Embedding(60 * 24 * 2 // 30, d_input)

        # Dropout (no positional encoding for LSTM)
        self.dropout = nn.Dropout(0.1)

    def forward(self, src, context_dict) -> Tensor:
        emb = self.emb_loc(src)

        if self.if_include_time:
            emb = emb + self.temporal_embedding(context_dict["time"], context_dict["weekday"])

        if self.if_include_duration:
            emb = emb + self.emb_duration(context_dict["duration"])

        return self.dropout(emb)


class FullyConnected(nn.Module):
    def __init__(self, d_input, config, total_loc_num, if_residual_layer=True):
        super(FullyConnected, self).__init__()

        fc_dim = d_input
        self.if_embed_user = config.if_embed_user
        if self.if_embed_user:
            self.emb_user = nn.Embedding(config.total_user_num, fc_dim)

        self.fc_loc = nn.Linear(fc_dim, total_loc_num)
        self.emb_dropout = nn.Dropout(p=0.1)

        self.if_residual_layer = if_residual_layer
        if self.if_residual_layer:
            self.linear1 = nn.Linear(fc_dim, fc_dim * 2)
            self.linear2 = nn.Linear(fc_dim * 2, fc_dim)

            self.norm1 = nn.BatchNorm1d(fc_dim)
            self.fc_dropout1 = nn.Dropout(p=config.fc_dropout)
            self.fc_dropout2 = nn.Dropout(p=config.fc_dropout)

    def forward(self, out, user) -> Tensor:
        if self.if_embed_user:
            out = out + self.emb_user(user)

        out = self.emb_dropout(out)

        if self.if_residual_layer:
            out = self.norm1(out + self._res_block(out))

        return self.fc_loc(out)

    def _res_block(self, x: Tensor) -> Tensor:
        x = self.linear2(self.fc_dropout1(F.relu(self.linear1(x))))
        return self.fc_dropout2(x)


class ReferenceLSTMModel(nn.Module):
    """``LSTMModel`` of the reference; ``forward(src, context_dict, device)`` takes time-major ``(T, B)`` inputs."""

    def __init__(self, config, total_loc_num) -> None:
        super(ReferenceLSTMModel, self).__init__()

        self.d_input = config.base_emb_size
        self.hidden_size = config.lstm_hidden_size
        self.num_layers = config.lstm_num_layers

        # Embedding layer (without positional encoding)
        self.Embedding = AllEmbeddingLSTM(self.d_input, config, total_loc_num)

        # LSTM encoder
        lstm_dropout = config.lstm_dropout if self.num_layers > 1 else 0
        self.lstm = nn.LSTM(
            input_size=self.d_input,
            hidden_size=self.hidden_size,
            num_layers=self.num_layers,
            dropout=lstm_dropout,
            batch_first=False,  # Input format: [seq_len, batch, features]
            bidirectional=False,
        )

        # Layer norm after LSTM
        self.layer_norm = nn.LayerNorm(self.hidden_size)

        # Fully connected output layer
        self.FC = FullyConnected(self.hidden_size, config, if_residual_layer=True, total_loc_num=total_loc_num)

        # init parameters
        self._init_weights()

    def forward(self, src, context_dict, device) -> Tensor:
        emb = self.Embedding(src, context_dict)  # [seq_len, batch, d_input]
        seq_len = context_dict["len"]

        # Pack padded sequence for efficient LSTM processing
        packed_emb = pack_padded_sequence(emb, seq_len.cpu(), batch_first=False, enforce_sorted=False)

        # Pass through LSTM
        packed_output, (h_n, c_n) = self.lstm(packed_emb)

        # Unpack sequence
        output, _ = pad_packed_sequence(packed_output, batch_first=False)

        # Get the last valid output for each sequence; output shape: [seq_len, batch, hidden_size]
        out = output.gather(
            0,
            seq_len.view([1, -1, 1]).expand([1, output.shape[1], output.shape[-1]]).to(device) - 1,
        ).squeeze(0)

        # Apply layer normalization
        out = self.layer_norm(out)

        return self.FC(out, context_dict["user"])

    def _init_weights(self):
        for name, param in self.named_parameters():
            if "weight_ih" in name:
                nn.init.xavier_uniform_(param)
            elif "weight_hh" in name:
                nn.init.orthogonal_(param)
            elif "bias" in name:
                nn.init.zeros_(param)
                n = param.size(0)
                param.data[n // 4 : n // 2].fill_(1.0)
            elif param.dim() > 1:
                nn.init.xavier_uniform_(param)


def reference_config(num_users, embed_dim, hidden_size, fc_dropout, lstm_dropout=0.2):
    """The reference's (flattened YAML) config for this model."""
    return SimpleNamespace(
        base_emb_size=embed_dim,
        lstm_hidden_size=hidden_size,
        lstm_num_layers=2,
        lstm_dropout=lstm_dropout,
        fc_dropout=fc_dropout,
        if_embed_user=True,
        if_embed_time=True,
        if_embed_duration=True,
        if_embed_poi=False,
        total_user_num=num_users,
    )


def reference_inputs(batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
    """A nextloc batch in the reference's collated form: histories time-major ``(T, B)``, padded with 0."""
    history = dict(time=batch.time_slot, weekday=batch.weekday, duration=batch.duration)
    context = {key: value.T.contiguous() for key, value in history.items()}
    context.update(len=batch.length, user=batch.user)
    return batch.location.T.contiguous(), context


# ---------------------------------------------------------------------------
# nextloc name -> reference name, for a two-layer model: every parameter and buffer.
# ---------------------------------------------------------------------------

NAME_MAP = {
    # VisitEmbedding -> AllEmbeddingLSTM
    "embedding.location.weight": "Embedding.emb_loc.weight",
    "embedding.hour.weight": "Embedding.temporal_embedding.hour_embed.weight",
    "embedding.quarter.weight": "Embedding.temporal_embedding.minute_embed.weight",
    "embedding.weekday.weight": "Embedding.temporal_embedding.weekday_embed.weight",
    "embedding.duration.weight": "Embedding.emb_duration.weight",
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
    # head -> FullyConnected
    "user.weight": "FC.emb_user.weight",
    "residual.0.weight": "FC.linear1.weight",
    "residual.0.bias": "FC.linear1.bias",
    "residual.3.weight": "FC.linear2.weight",
    "residual.3.bias": "FC.linear2.bias",
    "residual_norm.weight": "FC.norm1.weight",
    "residual_norm.bias": "FC.norm1.bias",
    "residual_norm.running_mean": "FC.norm1.running_mean",
    "residual_norm.running_var": "FC.norm1.running_var",
    "residual_norm.num_batches_tracked": "FC.norm1.num_batches_tracked",
    "classifier.weight": "FC.fc_loc.weight",
    "classifier.bias": "FC.fc_loc.bias",
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
) -> tuple[LSTMModel, ReferenceLSTMModel]:
    """A freshly built nextloc model (optionally perturbed) and the transcription holding its weights."""
    torch.manual_seed(seed)
    dropouts = dict(lstm_dropout=0.2, embed_dropout=0.1, head_dropout=0.1, fc_dropout=fc_dropout)
    if no_dropout:
        dropouts = dict.fromkeys(dropouts, 0.0)
    model = make_lstm_model(
        num_locations, num_users, embed_dim=embed_dim, hidden_size=hidden_size, **dropouts, **(sequence_options or {})
    )
    config = reference_config(
        num_users, embed_dim, hidden_size, fc_dropout=dropouts["fc_dropout"], lstm_dropout=dropouts["lstm_dropout"]
    )
    reference = ReferenceLSTMModel(config, num_locations)
    if no_dropout:  # the reference fixes these two at 0.1
        reference.Embedding.dropout.p = 0.0
        reference.FC.emb_dropout.p = 0.0
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
    src, context = reference_inputs(batch)
    return model(batch), reference(src, context, torch.device("cpu"))


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
        src, context = reference_inputs(batch)
        with torch.no_grad():
            emb = reference.Embedding(src, context)
            packed = pack_padded_sequence(emb, context["len"], enforce_sorted=False)
            packed_output, (h_n, _) = reference.lstm(packed)
            output, _ = pad_packed_sequence(packed_output)
        gathered = output[context["len"] - 1, torch.arange(len(ODD_LENGTHS))]
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
        assert theirs["FC.emb_user.weight"].grad.abs().sum() > 0  # the loss reaches the first and last layers
        assert theirs["Embedding.emb_loc.weight"].grad.abs().sum() > 0


class TestParameterCount:
    @pytest.mark.parametrize(
        "sizes, expected", [(GEOLIFE, 482_659), (DIY, 2_847_582)], ids=["geolife", "diy"]
    )
    def test_both_models_have_the_published_parameter_count(self, sizes, expected):
        model, reference = build_pair(**sizes)
        assert sum(p.numel() for p in reference.parameters()) == expected
        assert sum(p.numel() for p in model.parameters()) == expected

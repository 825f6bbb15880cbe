import math

import pytest
import torch
import torch.nn.functional as F

from nextloc.data.batches import Batch
from nextloc.errors import ConfigError
from nextloc.models import DataInfo, build_model, count_parameters
from nextloc.models.lstm import SEQUENCE_PATHS, LSTMConfig, LSTMModel

SMALL = dict(embed_dim=8, hidden_size=12)  # a tiny model for path comparisons
NUM_LOCATIONS, NUM_USERS = 20, 5


def random_batch(lengths, seed=0, padding=None):
    """A batch with the given history lengths; positions beyond a length hold ``padding``
    (0 by default, else random valid values), the layout :class:`SplitTensors` produces."""
    g = torch.Generator().manual_seed(seed)
    length = torch.tensor(lengths)
    shape = (len(lengths), max(lengths))
    valid = torch.arange(shape[1]) < length[:, None]

    def field(low, high):
        values = torch.randint(low, high, shape, generator=g)
        if padding is None:
            return values.masked_fill(~valid, 0)
        return torch.where(valid, values, torch.randint(low, high, shape, generator=torch.Generator().manual_seed(padding)))

    return Batch(
        location=field(1, NUM_LOCATIONS),
        length=length,
        user=torch.randint(1, NUM_USERS, (len(lengths),), generator=g),
        target=torch.randint(1, NUM_LOCATIONS, (len(lengths),), generator=g),
        features={"time_slot": field(0, 96), "weekday": field(0, 7), "duration": field(0, 96)},
    )


def model_with(sequence, length_groups=4, state=None, multiples=(1, 1)):
    """The small model in eval mode (no dropout), sharing ``state`` when given."""
    size_multiple, length_multiple = multiples
    model = LSTMModel(
        DataInfo(NUM_LOCATIONS, NUM_USERS),
        sequence=sequence,
        length_groups=length_groups,
        group_size_multiple=size_multiple,
        group_length_multiple=length_multiple,
        **SMALL,
    )
    if state is not None:
        model.load_state_dict(state)
    return model.eval()


PATHS = [
    ("packed", 4, (1, 1)),
    ("padded", 4, (1, 1)),
    ("grouped", 1, (1, 1)),
    ("grouped", 2, (1, 1)),
    ("grouped", 3, (1, 1)),
    ("grouped", 4, (1, 1)),
    ("grouped", 50, (1, 1)),
    ("grouped", 3, (4, 4)),  # the default grids: group sizes and padded lengths in steps of 4
    ("grouped", 4, (3, 5)),
]
LENGTHS = [5, 1, 3, 8, 2, 8, 4, 6, 1, 7]


@pytest.fixture(scope="module")
def state():
    torch.manual_seed(0)
    return model_with("packed").state_dict()


class TestLSTMConfig:
    def test_unknown_init_is_refused(self):
        with pytest.raises(ConfigError, match="model.init='glorot'"):
            LSTMConfig(init="glorot")

    def test_unknown_sequence_path_is_refused(self):
        with pytest.raises(ConfigError, match="model.sequence='loop'"):
            LSTMConfig(sequence="loop")

    def test_dropout_of_one_is_refused(self):
        with pytest.raises(ConfigError, match="model.fc_dropout=1.0"):
            LSTMConfig(fc_dropout=1.0)


class TestLSTMModelSize:
    def test_geolife_sizes_have_482659_parameters(self):
        """docs/reference.md: L = 1187, U = 46, d = 32, h = 128, fc_dropout 0.2 -> 482,659."""
        model = build_model(LSTMConfig(embed_dim=32, hidden_size=128, fc_dropout=0.2), DataInfo(1187, 46))
        assert count_parameters(model) == 482_659

    def test_diy_sizes_have_2847582_parameters(self):
        """docs/reference.md: L = 7038, U = 693, d = 96, h = 192, fc_dropout 0.1 -> 2,847,582."""
        model = build_model(LSTMConfig(embed_dim=96, hidden_size=192, fc_dropout=0.1), DataInfo(7038, 693))
        assert count_parameters(model) == 2_847_582

    @pytest.mark.parametrize(
        "switch, removed",
        [
            ("use_time", (24 + 4 + 7) * 32),  # hour, quarter and weekday embeddings
            ("use_duration", 96 * 32),
            ("use_user", 46 * 128),
        ],
    )
    def test_ablation_switch_removes_exactly_its_embeddings(self, switch, removed):
        """At GeoLife sizes: time 1,120, duration 3,072, user 5,888 parameters."""
        model = build_model(LSTMConfig(**{switch: False}), DataInfo(1187, 46))
        assert count_parameters(model) == 482_659 - removed


@pytest.fixture(scope="module")
def params():
    """Reference-initialised parameters at GeoLife sizes."""
    torch.manual_seed(0)
    return dict(build_model(LSTMConfig(), DataInfo(1187, 46)).named_parameters())


class TestLSTMModelInit:
    def test_two_dimensional_parameters_fill_the_xavier_range(self, params):
        """Xavier-uniform: |w| <= sqrt(6 / (fan_in + fan_out)), and the range is used."""
        checked = 0
        for name, p in params.items():
            if p.dim() == 2 and "weight_hh" not in name:
                bound = math.sqrt(6 / (p.shape[0] + p.shape[1]))
                assert bound / 2 < p.abs().max() <= bound, name
                checked += 1
        assert checked == 11  # 5 embeddings, weight_ih x 2, user, residual x 2, classifier

    def test_lstm_weight_hh_is_orthogonal(self, params):
        """nn.init.orthogonal_ on a (4h, h) matrix gives orthonormal columns: W^T W = I."""
        for name in ("encoder.layers.0.weight_hh_l0", "encoder.layers.1.weight_hh_l0"):
            w = params[name].detach()
            torch.testing.assert_close(w.T @ w, torch.eye(128), atol=1e-5, rtol=0)

    def test_every_bias_is_zero_except_its_second_quarter(self, params):
        biases = {name: p.detach() for name, p in params.items() if "bias" in name}
        assert len(biases) == 9  # lstm bias_ih, bias_hh x 2 layers; norm, residual x 2, residual_norm, classifier
        for name, b in biases.items():
            n = len(b)
            expected = torch.zeros(n)
            expected[n // 4 : n // 2] = 1.0
            assert torch.equal(b, expected), name

    def test_output_bias_is_one_on_classes_296_to_592(self, params):
        """L = 1187: 1187 // 4 = 296, 1187 // 2 = 593."""
        bias = params["classifier.bias"].detach()
        assert torch.equal(torch.nonzero(bias).flatten(), torch.arange(296, 593))
        assert bias[296:593].eq(1).all()

    def test_norm_weights_stay_one(self, params):
        assert params["norm.weight"].eq(1).all()
        assert params["residual_norm.weight"].eq(1).all()

    def test_pytorch_init_keeps_the_layers_defaults(self):
        """PyTorch: embeddings ~ N(0, 1) (far outside the Xavier range), no forget-gate slice in the output bias."""
        torch.manual_seed(0)
        params = dict(build_model(LSTMConfig(init="pytorch"), DataInfo(1187, 46)).named_parameters())
        assert params["embedding.location.weight"].abs().max() > math.sqrt(6 / (1187 + 32))
        assert params["classifier.bias"].detach().count_nonzero() == 1187


class TestLSTMModelForward:
    def test_logits_have_one_row_per_sample_and_one_column_per_class(self, state):
        assert model_with("grouped", state=state)(random_batch(LENGTHS)).shape == (len(LENGTHS), NUM_LOCATIONS)

    @pytest.mark.parametrize("sequence, length_groups, multiples", PATHS)
    def test_every_sequence_path_gives_the_packed_logits(self, state, sequence, length_groups, multiples):
        batch = random_batch(LENGTHS)
        with torch.no_grad():
            expected = model_with("packed", state=state)(batch)
            logits = model_with(sequence, length_groups, state, multiples)(batch)
        torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)

    @pytest.mark.parametrize("sequence, length_groups, multiples", PATHS)
    def test_every_sequence_path_gives_the_packed_gradients(self, state, sequence, length_groups, multiples):
        batch = random_batch(LENGTHS)

        def gradients(model):
            F.cross_entropy(model(batch), batch.target).backward()
            return {name: p.grad for name, p in model.named_parameters()}

        expected = gradients(model_with("packed", state=state))
        grads = gradients(model_with(sequence, length_groups, state, multiples))
        assert all(g is not None for g in grads.values())
        for name in expected:
            torch.testing.assert_close(grads[name], expected[name], atol=1e-5, rtol=1e-4, msg=name)

    @pytest.mark.parametrize("sequence", SEQUENCE_PATHS)
    def test_padded_positions_never_change_the_logits(self, state, sequence):
        """Random values in every feature beyond each history's length give the same logits."""
        model = model_with(sequence, 3, state, (4, 4))  # rounded lengths read past the width
        with torch.no_grad():
            clean = model(random_batch(LENGTHS))
            noisy = model(random_batch(LENGTHS, padding=99))
        assert not torch.equal(random_batch(LENGTHS).location, random_batch(LENGTHS, padding=99).location)
        torch.testing.assert_close(noisy, clean, atol=1e-6, rtol=0)

    @pytest.mark.parametrize("sequence", SEQUENCE_PATHS)
    def test_batch_of_one_gives_that_samples_logits(self, state, sequence):
        """In eval mode a sample's logits do not depend on the rest of its batch."""
        batch = random_batch(LENGTHS)
        def row(v):
            return v[3:4, : LENGTHS[3]] if v.dim() == 2 else v[3:4]

        one = Batch(row(batch.location), row(batch.length), row(batch.user), row(batch.target),
                    {k: row(v) for k, v in batch.features.items()})
        model = model_with(sequence, 4, state)
        with torch.no_grad():
            torch.testing.assert_close(model(one), model(batch)[3:4], atol=1e-5, rtol=1e-5)

    @pytest.mark.parametrize("sequence", SEQUENCE_PATHS)
    def test_equal_lengths_give_the_packed_logits(self, state, sequence):
        batch = random_batch([6] * 5, seed=1)
        with torch.no_grad():
            expected = model_with("packed", state=state)(batch)
            torch.testing.assert_close(model_with(sequence, 2, state)(batch), expected, atol=1e-5, rtol=1e-5)

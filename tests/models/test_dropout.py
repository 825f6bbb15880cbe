import math

import pytest
import torch

from nextloc.models.dropout import LEVELS, Dropout

N = 400_000


def dropped(p, shape=(N,), seed=0):
    torch.manual_seed(seed)
    return Dropout(p).train()(torch.ones(shape))


class TestDropout:
    @pytest.mark.parametrize("p", [0.1, 0.2, 0.5])
    def test_drops_a_fraction_p(self, p):
        """Within 5 binomial standard deviations of p over 400,000 elements."""
        fraction = dropped(p).eq(0).double().mean().item()
        assert abs(fraction - p) < 5 * math.sqrt(p * (1 - p) / N)

    def test_every_16_bit_lane_of_a_draw_drops_a_fraction_p(self):
        """Each 64-bit draw feeds four neighbouring elements; a biased lane (e.g. a 63-bit draw) shows here."""
        lanes = dropped(0.5).eq(0).double().view(-1, 4).mean(0)
        assert (lanes - 0.5).abs().max() < 5 * math.sqrt(0.25 / (N / 4))

    def test_kept_values_are_scaled_by_the_inverse_keep_probability(self):
        cut = round(0.2 * LEVELS)
        out = dropped(0.2)
        assert torch.equal(out.unique(), torch.tensor([0.0, LEVELS / (LEVELS - cut)]))

    def test_gradient_is_the_same_mask(self):
        x = torch.randn(3, 5, 7, requires_grad=True)
        torch.manual_seed(1)
        out = Dropout(0.3).train()(x)
        out.sum().backward()
        torch.testing.assert_close(x.grad * x.detach(), out.detach())

    def test_shape_is_kept_when_not_a_multiple_of_four(self):
        assert dropped(0.2, shape=(3, 7, 5)).shape == (3, 7, 5)

    def test_same_seed_same_mask_and_the_stream_advances(self):
        assert torch.equal(dropped(0.2, seed=3), dropped(0.2, seed=3))
        torch.manual_seed(3)
        layer = Dropout(0.2).train()
        assert not torch.equal(layer(torch.ones(100)), layer(torch.ones(100)))

    def test_eval_mode_and_p_zero_are_the_identity(self):
        x = torch.randn(10, 4)
        assert Dropout(0.5).eval()(x) is x
        assert Dropout(0.0).train()(x) is x

    def test_p_of_one_is_refused(self):
        with pytest.raises(ValueError, match="not in"):
            Dropout(1.0)

"""The encoder layers: PyTorch's layers' function and parameter names, with the cheap dropout."""

import pytest
import torch
from torch import nn

from nextloc.models.transformer import TransformerEncoder


@pytest.mark.parametrize("norm_first, final_norm", [(False, True), (True, False)])
def test_scores_and_parameter_names_equal_pytorchs_encoder(norm_first, final_norm):
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 4, 32, 0.1, activation="gelu", batch_first=True, norm_first=norm_first)
    theirs = nn.TransformerEncoder(layer, 2, norm=nn.LayerNorm(16) if final_norm else None,
                                   enable_nested_tensor=False).eval()
    ours = TransformerEncoder(16, 4, 32, 0.1, 2, norm_first=norm_first, final_norm=final_norm).eval()
    ours.load_state_dict(theirs.state_dict())  # strict: every name matches
    x = torch.randn(3, 7, 16)
    padding = torch.arange(7)[None, :] >= torch.tensor([7, 4, 1])[:, None]
    causal = nn.Transformer.generate_square_subsequent_mask(7).isinf()
    with torch.no_grad():
        for is_causal, mask in ((False, None), (True, causal)):
            expected = theirs(x, mask=mask, src_key_padding_mask=padding)
            got = ours(x, padding, causal=is_causal)
            valid = ~padding  # PyTorch's fast path leaves padded steps zero; they are never read
            torch.testing.assert_close(got[valid], expected[valid], rtol=1e-5, atol=1e-5)


def test_dropout_acts_in_training_only_also_on_the_attention_weights():
    torch.manual_seed(0)
    encoder = TransformerEncoder(16, 2, 32, 0.5, 1, norm_first=True, final_norm=False)
    x, padding = torch.randn(2, 5, 16), torch.zeros(2, 5, dtype=torch.bool)
    layer = encoder.layers[0]
    layer.dropout = layer.dropout1 = layer.dropout2 = nn.Identity()  # only the attention dropout is left
    encoder.train()
    assert not torch.equal(encoder(x, padding, causal=False), encoder(x, padding, causal=False))
    encoder.eval()
    assert torch.equal(encoder(x, padding, causal=False), encoder(x, padding, causal=False))


def test_attention_maps_hide_padding_and_later_steps():
    torch.manual_seed(0)
    encoder = TransformerEncoder(8, 2, 16, 0.0, 2, norm_first=False, final_norm=True).eval()
    padding = torch.arange(6)[None, :] >= torch.tensor([6, 3])[:, None]
    for weights in encoder.attention_maps(torch.randn(2, 6, 8), padding, causal=True):
        assert weights.shape == (2, 2, 6, 6)
        assert (weights.triu(1) == 0).all()
        assert (weights[1, :, :, 3:] == 0).all()
        torch.testing.assert_close(weights.sum(-1), torch.ones(2, 2, 6))

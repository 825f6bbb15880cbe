"""A transformer encoder with the layout and parameters of ``nn.TransformerEncoder``, and a cheap CPU dropout.

``nn.TransformerEncoderLayer`` drops out with ``F.dropout``, whose CPU mask
costs about 8 ns per element: on the attention weights ``(B, heads, T, T)``
and the feed-forward activations that was three quarters of a GeoLife-sized
training step. These layers compute the same function with
:class:`~nextloc.models.dropout.Dropout` and keep ``nn.TransformerEncoder``'s
parameter names (``layers.0.self_attn.in_proj_weight``, ``linear1``,
``norm1``, ..., ``norm``), so checkpoints are interchangeable.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nextloc.models.dropout import Dropout


class EncoderLayer(nn.Module):
    """Self-attention and a GELU feed-forward block, each with dropout and a residual; post- or pre-norm."""

    def __init__(self, dim: int, num_heads: int, feedforward_dim: int, dropout: float, norm_first: bool) -> None:
        super().__init__()
        self.num_heads, self.norm_first = num_heads, norm_first
        self.self_attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)  # its parameters only
        self.linear1, self.linear2 = nn.Linear(dim, feedforward_dim), nn.Linear(feedforward_dim, dim)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.dropout, self.dropout1, self.dropout2 = Dropout(dropout), Dropout(dropout), Dropout(dropout)
        self.attention_dropout = Dropout(dropout)

    def forward(self, x: Tensor, hidden: Tensor) -> Tensor:
        """``x`` ``(B, T, d)``; ``hidden`` ``(B, T, T)`` or broadcastable, True where a query may not see a key."""
        if self.norm_first:
            x = x + self.dropout1(self._attend(self.norm1(x), hidden))
            return x + self.dropout2(self._feedforward(self.norm2(x)))
        x = self.norm1(x + self.dropout1(self._attend(x, hidden)))
        return self.norm2(x + self.dropout2(self._feedforward(x)))

    def attention(self, x: Tensor, hidden: Tensor) -> Tensor:
        """The attention weights ``(B, heads, T, T)`` this layer uses on its input ``x`` (no dropout)."""
        q, k, _ = self._heads(self.norm1(x) if self.norm_first else x)
        return self._weights(q, k, hidden)

    def _attend(self, x: Tensor, hidden: Tensor) -> Tensor:
        q, k, v = self._heads(x)
        out = self.attention_dropout(self._weights(q, k, hidden)) @ v  # (B, heads, T, d / heads)
        out = out.transpose(1, 2).flatten(2)  # (B, T, d)
        return F.linear(out, self.self_attn.out_proj.weight, self.self_attn.out_proj.bias)

    def _heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        qkv = F.linear(x, self.self_attn.in_proj_weight, self.self_attn.in_proj_bias)  # (B, T, 3d)
        qkv = qkv.unflatten(-1, (3, self.num_heads, -1)).permute(2, 0, 3, 1, 4)  # (3, B, heads, T, d / heads)
        return qkv[0], qkv[1], qkv[2]

    def _weights(self, q: Tensor, k: Tensor, hidden: Tensor) -> Tensor:
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])  # (B, heads, T, T)
        return scores.masked_fill(hidden[:, None], float("-inf")).softmax(-1)

    def _feedforward(self, x: Tensor) -> Tensor:
        return self.linear2(self.dropout(F.gelu(self.linear1(x))))


class TransformerEncoder(nn.Module):
    """``num_layers`` :class:`EncoderLayer` s, then an optional final LayerNorm."""

    def __init__(self, dim: int, num_heads: int, feedforward_dim: int, dropout: float, num_layers: int,
                 norm_first: bool, final_norm: bool) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            EncoderLayer(dim, num_heads, feedforward_dim, dropout, norm_first) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(dim) if final_norm else None

    def forward(self, x: Tensor, padding: Tensor, causal: bool) -> Tensor:
        """``x`` ``(B, T, d)`` with ``padding`` ``(B, T)`` True at padded steps; ``causal``: no step sees a later one."""
        hidden = hidden_keys(padding, causal)
        for layer in self.layers:
            x = layer(x, hidden)
        return x if self.norm is None else self.norm(x)

    def attention_maps(self, x: Tensor, padding: Tensor, causal: bool) -> list[Tensor]:
        """Each layer's attention weights ``(B, heads, T, T)`` on the way through, under the same masks."""
        hidden = hidden_keys(padding, causal)
        maps = []
        for layer in self.layers:
            maps.append(layer.attention(x, hidden))
            x = layer(x, hidden)
        return maps


def hidden_keys(padding: Tensor, causal: bool) -> Tensor:
    """``(B, T, T)``: True where query ``t`` may not see key ``s`` (a padded key, or a later one when causal)."""
    hidden = padding[:, None, :].expand(-1, padding.shape[1], -1)
    if causal:
        steps = padding.shape[1]
        hidden = hidden | torch.ones(steps, steps, dtype=torch.bool, device=padding.device).triu(1)
    return hidden

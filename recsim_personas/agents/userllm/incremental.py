"""Growing a user's encoded history one event at a time, exactly.

The user encoder is causal with absolute positions: appending event ``n`` to a history of ``n < max_len`` events
leaves the outputs of events ``0..n-1`` unchanged, and the new event's output needs only each layer's keys and
values of the earlier events. :class:`IncrementalEncoder` keeps them per user (:class:`EncodedHistory`) and
computes an appended event with one query per layer — instead of the whole history again. Once a history is
longer than ``max_len`` its window slides, every position moves, and it must be encoded again from scratch
(:meth:`IncrementalEncoder.encode`).

PyTorch's ``nn.TransformerEncoder`` keeps no key/value cache, so the layers are applied here from their own
modules (``norm1``, ``self_attn``'s projections, ``linear1``/``linear2``, ``norm2``: the pre-norm layer the
encoder builds), in eval mode; tests hold both paths equal to the encoder's forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from recsim_personas.agents.userllm.encoder import UserEncoder


@dataclass
class EncodedHistory:
    """One user's encoded history: per layer the self-attention keys and values of its events, float (n, d)
    each, and the encoder's outputs, float (n, d)."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    events: torch.Tensor

    def __len__(self) -> int:
        return int(self.events.shape[0])


class IncrementalEncoder:
    """A :class:`~recsim_personas.agents.userllm.encoder.UserEncoder` (in eval mode) with per-user key/value caches.

    Args:
        encoder: the user encoder (its layers must be the pre-norm layers it builds).
    """

    def __init__(self, encoder: UserEncoder) -> None:
        self.encoder = encoder
        self.layers = list(encoder.transformer.layers)
        self.n_heads = encoder.config.n_heads
        self.max_len = encoder.config.max_len

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, length, d = x.shape
        return x.view(b, length, self.n_heads, d // self.n_heads).transpose(1, 2)

    def _merge(self, x: torch.Tensor) -> torch.Tensor:
        b, _, length, _ = x.shape
        return x.transpose(1, 2).reshape(b, length, -1)

    @staticmethod
    def _feed_forward(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return x + layer.linear2(layer.activation(layer.linear1(layer.norm2(x))))

    @torch.no_grad()
    def encode(
        self, items: torch.Tensor, ratings: torch.Tensor, gaps: torch.Tensor, lengths: torch.Tensor
    ) -> list[EncodedHistory]:
        """Encode whole histories (arguments as :meth:`UserEncoder.forward`), keeping every layer's keys and
        values: one :class:`EncodedHistory` per row, cut to its length."""
        enc = self.encoder
        positions = torch.arange(items.shape[1], device=items.device)
        valid = positions[None, :] < lengths[:, None]
        x = enc.embed(items, ratings, gaps, positions[None], valid)
        keys, values = [], []
        for layer in self.layers:
            attn = layer.self_attn
            q, k, v = nn.functional.linear(layer.norm1(x), attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
            keys.append(k)
            values.append(v)
            # causal: a real event never reads the padding after it
            out = nn.functional.scaled_dot_product_attention(
                self._heads(q), self._heads(k), self._heads(v), is_causal=True
            )
            x = self._feed_forward(layer, x + attn.out_proj(self._merge(out)))
        events = enc.norm(x)
        return [
            EncodedHistory(
                keys=[k[b, :n].clone() for k in keys],
                values=[v[b, :n].clone() for v in values],
                events=events[b, :n].clone(),
            )
            for b, n in enumerate(lengths.tolist())
        ]

    @torch.no_grad()
    def append(
        self, histories: list[EncodedHistory], items: torch.Tensor, ratings: torch.Tensor, gaps: torch.Tensor
    ) -> None:
        """Append one event to each of ``histories`` (in place): long (B,) item rows, ratings 1–5, gap buckets.

        Raises:
            ValueError: a history already holds ``max_len`` events (encode its latest window instead).
        """
        lengths = [len(h) for h in histories]
        if any(n >= self.max_len for n in lengths):
            raise ValueError(f"a history already holds max_len={self.max_len} events; encode its window instead.")
        enc = self.encoder
        positions = torch.as_tensor(lengths, dtype=torch.long, device=items.device)
        valid = torch.ones_like(items, dtype=torch.bool)
        x = enc.embed(items, ratings, gaps, positions, valid)[:, None]  # (B, 1, d)
        width = max(lengths) + 1
        # key j of row b is real for j <= n_b (its own key sits at j = n_b, past keys are left-aligned)
        readable = torch.arange(width, device=items.device)[None, :] <= positions[:, None]
        for li, layer in enumerate(self.layers):
            attn = layer.self_attn
            q, k, v = nn.functional.linear(layer.norm1(x), attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
            new_keys = [torch.cat([h.keys[li], k[b]]) for b, h in enumerate(histories)]
            new_values = [torch.cat([h.values[li], v[b]]) for b, h in enumerate(histories)]
            past_k = nn.utils.rnn.pad_sequence(new_keys, batch_first=True)
            past_v = nn.utils.rnn.pad_sequence(new_values, batch_first=True)
            out = nn.functional.scaled_dot_product_attention(
                self._heads(q), self._heads(past_k), self._heads(past_v), attn_mask=readable[:, None, None, :]
            )
            x = self._feed_forward(layer, x + attn.out_proj(self._merge(out)))
            for h, nk, nv in zip(histories, new_keys, new_values, strict=True):
                h.keys[li], h.values[li] = nk, nv
        events = enc.norm(x)
        for b, h in enumerate(histories):
            h.events = torch.cat([h.events, events[b]])

    @staticmethod
    def padded(histories: list[EncodedHistory]) -> tuple[torch.Tensor, torch.Tensor]:
        """The histories' outputs as the resampler reads them: float (B, L, d) and bool (B, L) True on events."""
        events = nn.utils.rnn.pad_sequence([h.events for h in histories], batch_first=True)
        lengths = torch.as_tensor([len(h) for h in histories])
        valid = torch.arange(events.shape[1])[None, :] < lengths[:, None]
        return events, valid

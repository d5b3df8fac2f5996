"""The user encoder (per-event early fusion + causal Transformer), its next-event heads, and the Perceiver
resampler that turns a history of any length into a fixed number of user tokens.

Shapes: ``B`` users, ``L`` events, ``d = UserEncoderConfig.d_model``, ``G`` genres, ``N`` items.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from recsim_personas.agents.userllm.config import ResamplerConfig, UserEncoderConfig
from recsim_personas.agents.userllm.events import N_GAP_BUCKETS, n_year_buckets

if TYPE_CHECKING:
    from recsim_personas.agents.userllm.events import ItemTable


class UserEncoder(nn.Module):
    """Histories → one vector per event, each seeing only its own and earlier events.

    Early fusion: each event's five field embeddings (movie id, genres, rating, release-year bucket, time-gap
    bucket; ``field_dim`` each) are concatenated and projected to ``d_model``; a learned position embedding is
    added; ``n_layers`` pre-norm Transformer layers (PyTorch's ``nn.TransformerEncoder``) run under a causal mask.

    Args:
        config: the encoder's shape.
        items: the split's items (genre indicators and year buckets become buffers of the module).
    """

    def __init__(self, config: UserEncoderConfig, items: ItemTable) -> None:
        super().__init__()
        self.config = config
        n_items, n_genres = items.genres.shape
        f, d = config.field_dim, config.d_model
        self.n_items, self.n_genres = n_items, n_genres
        pad_genres = torch.zeros((n_items + 1, n_genres), dtype=torch.float32)
        pad_genres[:n_items] = torch.as_tensor(items.genres, dtype=torch.float32)
        pad_year = torch.zeros(n_items + 1, dtype=torch.long)
        pad_year[:n_items] = torch.as_tensor(items.year_bucket, dtype=torch.long)
        self.register_buffer("item_genres", pad_genres, persistent=False)
        self.register_buffer("item_year", pad_year, persistent=False)
        self.item_embedding = nn.Embedding(n_items + 1, f, padding_idx=n_items)  # row n_items = padding
        self.genre_projection = nn.Linear(n_genres, f)
        self.rating_embedding = nn.Embedding(6, f)  # 0 = padding, 1..5
        self.year_embedding = nn.Embedding(n_year_buckets(config.year_bucket), f)
        self.gap_embedding = nn.Embedding(N_GAP_BUCKETS, f)
        self.fuse = nn.Linear(5 * f, d)
        self.position = nn.Embedding(config.max_len, d)
        self.dropout = nn.Dropout(config.dropout)
        layer = nn.TransformerEncoderLayer(
            d, config.n_heads, config.ffn_mult * d, config.dropout, batch_first=True, norm_first=True
        )
        self.transformer = nn.TransformerEncoder(layer, config.n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)

    def forward(
        self, items: torch.Tensor, ratings: torch.Tensor, gaps: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode histories.

        Args:
            items: item rows, long (B, L), -1 past a history's end.
            ratings: long (B, L) in 1..5 (0 past the end).
            gaps: time-gap buckets, long (B, L).
            lengths: events per history, long (B,), each in ``[1, L]``; ``L <= max_len``.

        Returns:
            ``(events, valid)``: float (B, L, d) — position ``t`` has read events ``0..t`` —, and bool (B, L),
            True on real events.
        """
        _, length = items.shape
        positions = torch.arange(length, device=items.device)
        valid = positions[None, :] < lengths[:, None]
        x = self.dropout(self.embed(items, ratings, gaps, positions[None], valid))
        causal = nn.Transformer.generate_square_subsequent_mask(length, device=items.device, dtype=torch.bool)
        # a padded query still sees position 0 (a real event), so no attention row is fully masked
        x = self.transformer(x, mask=causal, src_key_padding_mask=~valid, is_causal=True)
        return self.norm(x), valid

    def embed(
        self,
        items: torch.Tensor,
        ratings: torch.Tensor,
        gaps: torch.Tensor,
        positions: torch.Tensor,
        valid: torch.Tensor,
    ) -> torch.Tensor:
        """The fused input vectors of events (before dropout): the five field embeddings concatenated and
        projected, plus the position embedding. Long ``items``/``ratings``/``gaps``/``positions`` and bool ``valid``
        of one shape (broadcastable) → float (..., d); events where ``valid`` is False read the padding rows."""
        rows = torch.where(valid, items, torch.full_like(items, self.n_items))
        fields = torch.cat(
            [
                self.item_embedding(rows),
                self.genre_projection(self.item_genres[rows]),
                self.rating_embedding(torch.where(valid, ratings, torch.zeros_like(ratings))),
                self.year_embedding(self.item_year[rows]),
                self.gap_embedding(torch.where(valid, gaps, torch.zeros_like(gaps))),
            ],
            dim=-1,
        )
        return self.fuse(fields) + self.position(positions)


class NextEventHeads(nn.Module):
    """Next-event predictions from an event vector: the next movie (N logits), its genres (G logits, one
    sigmoid each) and its rating (5 logits, ratings 1..5)."""

    def __init__(self, d_model: int, n_items: int, n_genres: int) -> None:
        super().__init__()
        self.item = nn.Linear(d_model, n_items)
        self.genre = nn.Linear(d_model, n_genres)
        self.rating = nn.Linear(d_model, 5)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``h`` float (..., d) → item logits (..., N), genre logits (..., G), rating logits (..., 5)."""
        return self.item(h), self.genre(h), self.rating(h)


class NextEventModel(nn.Module):
    """The encoder with its pretraining heads: what :func:`~recsim_personas.agents.userllm.pretrain.pretrain_encoder`
    trains and saves."""

    def __init__(self, config: UserEncoderConfig, items: ItemTable) -> None:
        super().__init__()
        self.encoder = UserEncoder(config, items)
        self.heads = NextEventHeads(config.d_model, self.encoder.n_items, self.encoder.n_genres)

    def loss(
        self,
        items: torch.Tensor,
        ratings: torch.Tensor,
        gaps: torch.Tensor,
        lengths: torch.Tensor,
        weights: tuple[float, float, float] = (1.0, 0.5, 0.5),
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Mean next-event loss over every position that has a next event (arguments as :meth:`UserEncoder.forward`).

        Returns:
            ``(loss, parts)``: the weighted loss (a scalar tensor) and ``{"item", "genre", "rating", "events"}``
            (the three mean losses and the number of predicted events).
        """
        events, valid = self.encoder(items, ratings, gaps, lengths)
        has_next = valid[:, 1:]  # position t predicts event t + 1
        h = events[:, :-1][has_next]
        next_items = items[:, 1:][has_next]
        item_logits, genre_logits, rating_logits = self.heads(h)
        item_loss = nn.functional.cross_entropy(item_logits, next_items)
        genre_loss = nn.functional.binary_cross_entropy_with_logits(genre_logits, self.encoder.item_genres[next_items])
        rating_loss = nn.functional.cross_entropy(rating_logits, ratings[:, 1:][has_next] - 1)
        w_item, w_genre, w_rating = weights
        total = w_item * item_loss + w_genre * genre_loss + w_rating * rating_loss
        parts = {
            "item": float(item_loss.detach()),
            "genre": float(genre_loss.detach()),
            "rating": float(rating_loss.detach()),
            "events": int(has_next.sum()),
        }
        return total, parts

    @torch.no_grad()
    def next_item_logits(
        self, items: torch.Tensor, ratings: torch.Tensor, gaps: torch.Tensor, lengths: torch.Tensor
    ) -> torch.Tensor:
        """Logits of the movie after each history's last event, float (B, N)."""
        events, _ = self.encoder(items, ratings, gaps, lengths)
        last = events[torch.arange(len(lengths), device=events.device), lengths - 1]
        return self.heads.item(last)


class PerceiverResampler(nn.Module):
    """``n_latents`` learned queries read a history's event vectors: a fixed number of user tokens out.

    Each block: the latents (layer-normed) attend over the concatenation of the (layer-normed) events and the
    latents themselves — padded events masked; the latents keep every row attendable, even for an empty
    history — then a feed-forward layer, both residual.

    Args:
        d_model: width of the events and of the tokens.
        config: the resampler's shape.
    """

    def __init__(self, d_model: int, config: ResamplerConfig) -> None:
        super().__init__()
        self.config = config
        self.latents = nn.Parameter(torch.randn(config.n_latents, d_model) * 0.02)
        self.blocks = nn.ModuleList(
            nn.ModuleDict(
                {
                    "norm_latents": nn.LayerNorm(d_model),
                    "norm_events": nn.LayerNorm(d_model),
                    "attention": nn.MultiheadAttention(d_model, config.n_heads, batch_first=True),
                    "ffn": nn.Sequential(
                        nn.LayerNorm(d_model),
                        nn.Linear(d_model, config.ffn_mult * d_model),
                        nn.GELU(),
                        nn.Linear(config.ffn_mult * d_model, d_model),
                    ),
                }
            )
            for _ in range(config.n_layers)
        )
        self.norm = nn.LayerNorm(d_model)

    def forward(self, events: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """``events`` float (B, L, d), ``valid`` bool (B, L) → user tokens float (B, n_latents, d)."""
        batch = events.shape[0]
        latents = self.latents[None].expand(batch, -1, -1)
        keep_latents = torch.zeros((batch, self.config.n_latents), dtype=torch.bool, device=events.device)
        padding = torch.cat([~valid, keep_latents], dim=1)
        for block in self.blocks:
            q = block["norm_latents"](latents)
            kv = torch.cat([block["norm_events"](events), q], dim=1)
            attended, _ = block["attention"](q, kv, kv, key_padding_mask=padding, need_weights=False)
            latents = latents + attended
            latents = latents + block["ffn"](latents)
        return self.norm(latents)

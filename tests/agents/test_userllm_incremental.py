"""The incremental user encoder: its whole-history pass and every appended event equal the encoder's own forward
(``nn.TransformerEncoder``) on the extended histories; it refuses to append past ``max_len``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recsim_personas.agents.userllm.config import UserEncoderConfig
from recsim_personas.agents.userllm.encoder import UserEncoder
from recsim_personas.agents.userllm.events import ItemTable
from recsim_personas.agents.userllm.incremental import IncrementalEncoder

CONFIG = UserEncoderConfig(d_model=16, field_dim=8, n_layers=2, n_heads=4, ffn_mult=2, max_len=10)


def _encoder() -> UserEncoder:
    n = 9
    genres = np.zeros((n, 3), dtype=np.float32)
    genres[np.arange(n), np.arange(n) % 3] = 1.0
    items = ItemTable(
        item_ids=np.arange(100, 100 + n), genres=genres, year_bucket=np.arange(n) % 4, genre_names=("a", "b", "c")
    )
    torch.manual_seed(0)
    return UserEncoder(CONFIG, items).eval()


def _histories(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    width = max(lengths)
    items = torch.randint(0, 9, (len(lengths), width), generator=g)
    ratings = torch.randint(1, 6, (len(lengths), width), generator=g)
    gaps = torch.randint(0, 9, (len(lengths), width), generator=g)
    lengths_t = torch.as_tensor(lengths)
    past = torch.arange(width)[None, :] >= lengths_t[:, None]
    return items.masked_fill(past, -1), ratings.masked_fill(past, 0), gaps.masked_fill(past, 0), lengths_t


def _reference(encoder, items, ratings, gaps, lengths) -> list[torch.Tensor]:
    with torch.no_grad():
        events, _ = encoder(items, ratings, gaps, lengths)
    return [events[b, :n] for b, n in enumerate(lengths.tolist())]


def test_whole_history_pass_equals_the_encoder():
    encoder = _encoder()
    hist = _histories([1, 4, 7, 10])
    encoded = IncrementalEncoder(encoder).encode(*hist)
    for got, want in zip(encoded, _reference(encoder, *hist), strict=True):
        assert got.events.shape == want.shape
        torch.testing.assert_close(got.events, want, atol=1e-5, rtol=1e-5)
    assert [len(e.keys[0]) for e in encoded] == [1, 4, 7, 10] and len(encoded[0].keys) == CONFIG.n_layers


def test_appended_events_equal_the_encoder_on_the_longer_histories():
    encoder = _encoder()
    inc = IncrementalEncoder(encoder)
    items, ratings, gaps, lengths = _histories([3, 1, 6])
    start = torch.tensor([1, 1, 2])  # encode a prefix, then append the rest one round at a time
    encoded = inc.encode(items, ratings, gaps, start)
    for step in range(int((lengths - start).max())):
        rows = [b for b in range(3) if start[b] + step < lengths[b]]
        at = torch.as_tensor([int(start[b]) + step for b in rows])
        inc.append([encoded[b] for b in rows], items[rows, at], ratings[rows, at], gaps[rows, at])
    for got, want in zip(encoded, _reference(encoder, items, ratings, gaps, lengths), strict=True):
        torch.testing.assert_close(got.events, want, atol=1e-5, rtol=1e-5)
    events, valid = inc.padded(encoded)
    assert events.shape == (3, 6, CONFIG.d_model) and valid.sum(1).tolist() == [3, 1, 6]


def test_append_refuses_a_full_window():
    inc = IncrementalEncoder(_encoder())
    items, ratings, gaps, lengths = _histories([CONFIG.max_len])
    encoded = inc.encode(items, ratings, gaps, lengths)
    with pytest.raises(ValueError, match="max_len=10"):
        inc.append(encoded, items[:, 0], ratings[:, 0], gaps[:, 0])

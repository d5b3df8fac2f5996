"""The USER-LLM agent: user tokens from the history encoder, read by a frozen text backbone over the movie's
description, and a 5-way rating head.

Shapes: ``n`` requests, ``T`` text tokens, ``h`` the backbone's hidden size, ``K`` user tokens (latents),
``d`` the user encoder's width.

**Cross-attention** (``UserLLMConfig.integration="cross_attention"``): a :class:`GatedCrossAttention` block sits
after each backbone layer count in ``cross_layers``: ``x ← x + tanh(g) · MHA(LN(x), U, U)`` with ``U`` the
projected user tokens and the gate ``g`` initialised at 0 (so an untrained agent is the backbone). Everything
below the lowest block depends only on the movie: :meth:`UserLLM.text_states` computes it once per movie and
:meth:`UserLLM.forward_from` goes on from there.

**Soft prompt** (``"soft_prompt"``): the projected user tokens are prepended to the text's embeddings (after the
backbone's embedding layer) and the whole backbone runs per request — nothing is cached per movie.

The output is ``rating_head(mean over the text tokens of the last hidden states)``; the head starts at zero, so
an anchored agent starts at its prior. The backbone is run layer by layer (BERT-family encoders: ``embeddings``
and ``encoder.layer``), with the attention mask built by ``transformers.masking_utils.create_bidirectional_mask``
exactly as the backbone's own forward builds it (tested equal to it).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from recsim_personas.agents.userllm.config import ResamplerConfig, UserLLMConfig
from recsim_personas.agents.userllm.encoder import PerceiverResampler, UserEncoder
from recsim_personas.errors import ConfigError


class GatedCrossAttention(nn.Module):
    """``x ← x + tanh(g) · Attn(LN(x), U)`` (and, with ``dense``, ``x ← x + tanh(g') · FFN(LN(x))``); gates
    initialised at 0.

    The attention has its own inner width ``n_heads × head_dim``, which may be narrower than the backbone's hidden
    size: queries, keys and values are projected from width ``hidden`` down to it and the output back up. (PyTorch's
    ``nn.MultiheadAttention`` ties its inner width to the embedding width, hence the four projections here; the
    attention itself is ``scaled_dot_product_attention``.) The per-rating cost of the cached fast path is
    proportional to the inner width.

    Args:
        hidden: width of the backbone's hidden states and of the user tokens.
        n_heads: attention heads.
        head_dim: width of each head.
        dense: add the gated feed-forward layer.
    """

    def __init__(self, hidden: int, n_heads: int, head_dim: int, dense: bool = False) -> None:
        super().__init__()
        inner = n_heads * head_dim
        self.n_heads, self.head_dim = n_heads, head_dim
        self.norm = nn.LayerNorm(hidden)
        self.query = nn.Linear(hidden, inner)
        self.key = nn.Linear(hidden, inner)
        self.value = nn.Linear(hidden, inner)
        self.out = nn.Linear(inner, hidden)
        self.gate = nn.Parameter(torch.zeros(1))
        self.dense = dense
        if dense:
            self.ffn_norm = nn.LayerNorm(hidden)
            self.ffn = nn.Sequential(nn.Linear(hidden, 4 * hidden), nn.GELU(), nn.Linear(4 * hidden, hidden))
            self.ffn_gate = nn.Parameter(torch.zeros(1))

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        """float (n, L, H·dh) → (n, H, L, dh)."""
        n, length, _ = x.shape
        return x.view(n, length, self.n_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """``x`` float (n, T, h), ``tokens`` float (n, K, h) → float (n, T, h)."""
        q = self.heads(self.query(self.norm(x)))
        k, v = self.heads(self.key(tokens)), self.heads(self.value(tokens))
        attended = nn.functional.scaled_dot_product_attention(q, k, v)  # (n, H, T, dh)
        attended = attended.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)
        x = x + torch.tanh(self.gate) * self.out(attended)
        if self.dense:
            x = x + torch.tanh(self.ffn_gate) * self.ffn(self.ffn_norm(x))
        return x


def load_backbone(config: UserLLMConfig) -> tuple[Any, Any]:
    """The text backbone ``config`` names (its base model: a decoder-only LM without its LM head) and its
    tokenizer, in eval mode (``recsim_personas.agents.model_loading``: offline MiniLM / SmolLM2, or any local
    directory or Hugging Face id)."""
    from recsim_personas.agents import model_loading

    if config.backbone_kind == "causal":
        lm, tokenizer = model_loading.load_causal(config.backbone)
        return (lm.get_decoder() if hasattr(lm, "get_decoder") else lm), tokenizer
    return model_loading.load_encoder(config.backbone)


def backbone_kind(backbone: Any) -> str:
    """``"encoder"`` for a BERT-family encoder (``embeddings``, ``encoder.layer``), ``"causal"`` for a decoder-only
    LM's base model (``embed_tokens``, ``layers``, ``norm``, ``rotary_emb``: Llama / SmolLM2 / Qwen2 / Mistral style).

    Raises:
        ConfigError: neither.
    """
    if hasattr(backbone, "embeddings") and hasattr(getattr(backbone, "encoder", None), "layer"):
        return "encoder"
    if all(hasattr(backbone, name) for name in ("embed_tokens", "layers", "norm", "rotary_emb")):
        return "causal"
    raise ConfigError(
        f"the USER-LLM backbone {type(backbone).__name__} is neither a BERT-family encoder (embeddings,"
        " encoder.layer) nor a decoder-only LM with rotary positions (embed_tokens, layers, norm, rotary_emb)."
        " Fix: use such a model (e.g. MiniLM, SmolLM2, Llama, Qwen2)."
    )


def _layer_output(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


class UserLLM(nn.Module):
    """User encoder → Perceiver resampler → projection → backbone (cross-attention or soft prompt) → head.

    Args:
        config: the architecture.
        encoder: the (pretrained) user encoder.
        backbone: a BERT-family ``transformers`` encoder (``embeddings``, ``encoder.layer``, ``config``).
    """

    def __init__(self, config: UserLLMConfig, encoder: UserEncoder, backbone: Any) -> None:
        super().__init__()
        self.config = config
        self.user_encoder = encoder
        self.backbone = backbone
        self.kind = backbone_kind(backbone)
        bc = backbone.config
        self.hidden, self.n_layers, self.n_heads = (
            int(bc.hidden_size),
            int(bc.num_hidden_layers),
            int(bc.num_attention_heads),
        )
        self.cross_layers: tuple[int, ...] = (
            () if config.integration != "cross_attention" else config.cross_layers or (self.n_layers,)
        )
        """The layer counts the cross-attention blocks sit after (``config.cross_layers``, or the last layer)."""
        if self.cross_layers and max(self.cross_layers) > self.n_layers:
            raise ConfigError(
                f"UserLLMConfig.cross_layers {list(self.cross_layers)!r} go beyond the backbone's {self.n_layers}"
                f" layers. Fix: use layer counts from 0 to {self.n_layers}."
            )
        d = encoder.config.d_model
        self.resampler = PerceiverResampler(
            d,
            ResamplerConfig(
                n_latents=config.n_latents,
                n_layers=config.resampler_layers,
                n_heads=math.gcd(d, encoder.config.n_heads) or 1,
            ),
        )
        self.projection = nn.Sequential(nn.Linear(d, self.hidden), nn.LayerNorm(self.hidden))
        layers = self.cross_layers
        self.blocks = nn.ModuleDict(
            {
                str(k): GatedCrossAttention(self.hidden, config.cross_heads, config.cross_head_dim, config.dense)
                for k in layers
            }
        )
        self.adapters: list[str] | None = None
        """Names of the backbone's LoRA adapters when it has one per persona (set by ``prepare_backbone``)."""
        self.rating_head = nn.Linear(self.hidden, 5)
        nn.init.zeros_(self.rating_head.weight)
        nn.init.zeros_(self.rating_head.bias)

    def use_adapter(self, name: str) -> None:
        """Route the backbone through its LoRA adapter ``name`` (PEFT's ``set_adapter`` on every LoRA layer),
        leaving which parameters train as they were (``set_adapter`` alone would freeze the other adapters)."""
        from peft.tuners.tuners_utils import BaseTunerLayer

        flags = [(p, p.requires_grad) for p in self.backbone.parameters()]
        for module in self.backbone.modules():
            if isinstance(module, BaseTunerLayer):
                module.set_adapter(name)
        for p, flag in flags:
            p.requires_grad_(flag)

    # ----------------------------------------------------------------------------------------- user side
    def user_tokens(
        self, items: torch.Tensor, ratings: torch.Tensor, gaps: torch.Tensor, lengths: torch.Tensor
    ) -> torch.Tensor:
        """Histories (as :meth:`UserEncoder.forward` takes them) → projected user tokens, float (B, K, h)."""
        return self.tokens_from_events(*self.user_encoder(items, ratings, gaps, lengths))

    def tokens_from_events(self, events: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """The user encoder's outputs float (B, L, d) and bool (B, L) → projected user tokens, float (B, K, h)."""
        return self.projection(self.resampler(events, valid))

    # ----------------------------------------------------------------------------------------- text side
    @property
    def cached_depth(self) -> int:
        """Backbone layers that depend only on the movie: below the lowest cross-attention block (0 for the
        soft prompt)."""
        return min(self.cross_layers) if self.cross_layers else 0

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The backbone's input embeddings of token ids int (n, T) → float (n, T, h)."""
        if self.kind == "causal":
            return self.backbone.embed_tokens(input_ids)
        return self.backbone.embeddings(input_ids=input_ids)

    def _context(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, Any]:
        """What every layer of a pass reads besides the hidden states, built as the backbone's own forward builds
        it: the bidirectional padding mask (encoder), or the causal mask, positions and rotary embeddings
        (decoder)."""
        if self.kind == "encoder":
            from transformers.masking_utils import create_bidirectional_mask

            mask = create_bidirectional_mask(
                config=self.backbone.config, inputs_embeds=hidden, attention_mask=attention_mask
            )
            return {"attention_mask": mask}
        from transformers.masking_utils import create_causal_mask

        positions = torch.arange(hidden.shape[1], device=hidden.device)[None]
        mask = create_causal_mask(
            config=self.backbone.config,
            inputs_embeds=hidden,
            attention_mask=attention_mask,
            cache=None,
            position_ids=positions,
        )
        rotary = self.backbone.rotary_emb(hidden, position_ids=positions)
        return {"attention_mask": mask, "position_embeddings": rotary, "position_ids": positions}

    def _layer(self, k: int, hidden: torch.Tensor, context: dict[str, Any]) -> torch.Tensor:
        """Backbone layer ``k`` (0-based); a decoder's final norm goes with its last layer, so the states after
        ``n_layers`` layers are the backbone's output in both families."""
        layers = self.backbone.encoder.layer if self.kind == "encoder" else self.backbone.layers
        hidden = _layer_output(layers[k](hidden, **context))
        if self.kind == "causal" and k == self.n_layers - 1:
            hidden = self.backbone.norm(hidden)
        return hidden

    def text_states(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, depth: int | None = None
    ) -> torch.Tensor:
        """The backbone's hidden states after its embeddings and its first ``depth`` layers (default
        :attr:`cached_depth`): what depends only on the movie. int (n, T) ids and mask → float (n, T, h)."""
        depth = self.cached_depth if depth is None else depth
        hidden = self.embed(input_ids)
        context = self._context(hidden, attention_mask)
        for k in range(depth):
            hidden = self._layer(k, hidden, context)
        return hidden

    @torch.no_grad()
    def all_text_states(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, depth: int | None = None, chunk: int = 256
    ) -> torch.Tensor:
        """:meth:`text_states` of many texts (e.g. every movie), ``chunk`` at a time, without gradients."""
        parts = [
            self.text_states(input_ids[a : a + chunk], attention_mask[a : a + chunk], depth)
            for a in range(0, len(input_ids), chunk)
        ]
        return torch.cat(parts)

    def forward_from(
        self, hidden: torch.Tensor, attention_mask: torch.Tensor, tokens: torch.Tensor, start: int | None = None
    ) -> torch.Tensor:
        """Rating logits from hidden states after ``start`` layers (default :attr:`cached_depth`).

        Args:
            hidden: float (n, T, h), e.g. :meth:`text_states` of the requests' movies.
            attention_mask: int/bool (n, T), 1 on real text tokens.
            tokens: the requests' user tokens, float (n, K, h).
            start: the layers already applied to ``hidden``.

        Returns:
            float (n, 5).
        """
        start = self.cached_depth if start is None else start
        if self.config.integration == "soft_prompt":
            if start != 0:
                raise ConfigError("the soft prompt enters on the embeddings: forward_from needs start=0.")
            n_tokens = tokens.shape[1]
            hidden = torch.cat([tokens, hidden], dim=1)
            full_mask = torch.cat([torch.ones_like(attention_mask[:, :1]).expand(-1, n_tokens), attention_mask], 1)
        else:
            n_tokens, full_mask = 0, attention_mask
        context = self._context(hidden, full_mask)
        for k in range(start, self.n_layers + 1):
            if str(k) in self.blocks:
                hidden = self.blocks[str(k)](hidden, tokens)
            if k < self.n_layers:
                hidden = self._layer(k, hidden, context)
        text = hidden[:, n_tokens:]
        weights = attention_mask.to(text.dtype).unsqueeze(-1)
        pooled = (text * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)
        return self.rating_head(pooled)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Rating logits of requests: text ids/mask int (n, T), user tokens float (n, K, h) → float (n, 5)."""
        if self.config.integration == "soft_prompt":
            hidden = self.embed(input_ids)
        else:
            hidden = self.text_states(input_ids, attention_mask)
        return self.forward_from(hidden, attention_mask, tokens)

    # ------------------------------------------------------------------------------------ fast top path
    @property
    def top_only(self) -> bool:
        """One attention-only block after the last layer: the case :meth:`top_logits` computes per request from
        per-movie and per-user caches."""
        return self.cross_layers == (self.n_layers,) and not self.config.dense

    def movie_cache(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-movie tensors of :meth:`top_logits` from the final hidden states (``text_states`` at full depth).

        Returns:
            ``{"pooled": (m, h), "queries": (m, H, T, dh), "weights": (m, T)}`` — the mean text state, the
            block's attention queries of each token, and each token's share of the mean (0 on padding).
        """
        block = self.blocks[str(self.n_layers)]
        w = attention_mask.to(hidden.dtype)
        w = w / w.sum(dim=1, keepdim=True).clamp_min(1.0)
        pooled = (hidden * w.unsqueeze(-1)).sum(dim=1)
        queries = block.heads(block.query(block.norm(hidden)))
        return {"pooled": pooled, "queries": queries.contiguous(), "weights": w}

    def user_cache(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-user keys and values of the top block from user tokens float (B, K, h): ``{"keys", "values"}``,
        each (B, H, K, dh)."""
        block = self.blocks[str(self.n_layers)]
        keys, values = block.heads(block.key(tokens)), block.heads(block.value(tokens))
        return {"keys": keys.contiguous(), "values": values.contiguous()}

    def top_logits(self, movie: dict[str, torch.Tensor], user: dict[str, torch.Tensor]) -> torch.Tensor:
        """Rating logits of requests from their movies' and users' cache rows (:meth:`movie_cache` /
        :meth:`user_cache`, one row per request) — equal to :meth:`forward_from` when :attr:`top_only`.

        The mean over text tokens of ``x + tanh(g) · (W_o a_t + b_o)`` is ``mean(x) + tanh(g) · (W_o mean(a) +
        b_o)``, and the mean of the attention outputs ``a_t = softmax(q_t K^T / √d) V`` is the mean of the attention
        weights times ``V``: per request, one (T × K) score matrix per head, then everything is per user token.
        """
        block = self.blocks[str(self.n_layers)]
        q, k, v = movie["queries"], user["keys"], user["values"]
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1])  # (n, H, T, K)
        # the token-weighted mean of softmax(scores) · V is (the token-weighted mean of softmax(scores)) · V
        shares = torch.matmul(movie["weights"][:, None, None, :], torch.softmax(scores, dim=-1))  # (n, H, 1, K)
        mean = torch.matmul(shares, v).reshape(q.shape[0], -1)  # (n, H·dh)
        out = block.out(mean)
        return self.rating_head(movie["pooled"] + torch.tanh(block.gate) * out)

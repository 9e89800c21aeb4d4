"""Strict config loading: misspelled keys and wrong types are errors, not silently ignored."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from qwen_tts_ext.config import load_config
from qwen_tts_ext.errors import UserError


@dataclass
class Optim:
    lr: float = 1e-5
    warmup_steps: int = 0


@dataclass
class Recipe:
    model: str = ""
    precision: Literal["no", "bf16", "fp16"] = "no"
    tensors: list[str] = field(default_factory=lambda: ["gate", "up", "down"])
    optim: Optim = field(default_factory=Optim)


def test_yaml_and_overrides_merge(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("model: /m\noptim:\n  lr: 2e-5\n")
    cfg = load_config(Recipe, p, ["optim.warmup_steps=10", "--precision=bf16", "tensors=gate,up"])
    assert cfg.model == "/m" and cfg.optim.lr == 2e-5 and cfg.optim.warmup_steps == 10
    assert cfg.precision == "bf16" and cfg.tensors == ["gate", "up"]


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.lrr=1", "unknown config key 'optim.lrr' (did you mean 'lr'?)"),
        ("modle=/x", "did you mean 'model'?"),
        ("optim.warmup_steps=ten", "expected an integer"),
        ("precision=fp8", "not one of"),
        ("optim=3", "expected a mapping"),
    ],
)
def test_bad_keys_and_types_are_user_errors(override, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        load_config(Recipe, None, [override])


def test_yaml_booleans_map_back_to_literal_words(tmp_path):
    # `precision: no` in YAML (or precision=no on the command line) is the boolean False to a YAML parser
    assert load_config(Recipe, None, ["precision=no"]).precision == "no"
    p = tmp_path / "r.yaml"
    p.write_text("precision: no\n")
    assert load_config(Recipe, p).precision == "no"


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_config(Recipe, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(Recipe, bad)


def test_alpha_takes_a_share_or_a_percentage_and_a_bare_percent_number_is_refused_with_a_hint(capsys):
    from qwen_tts_ext.cli import main

    base = ["blend", "--tts", "/nonexistent/a", "--llm", "/nonexistent/b", "--output", "/tmp/x", "--dry-run"]
    from qwen_tts_ext.blend.cli import COMMAND

    assert COMMAND.parse(base[1:] + ["--alpha", "3%"]).alpha == pytest.approx(0.03)
    assert COMMAND.parse(base[1:] + ["alpha=0.05"]).alpha == pytest.approx(0.05)
    assert main(base + ["--alpha", "3"]) == 2
    assert "did you mean 3% (0.03)?" in capsys.readouterr().err
    from qwen_tts_ext.evaluation.cli import COMMAND as EVALUATE

    cfg = EVALUATE.parse(["--model", "/m", "--llm", "/l", "alphas=[1%, 0.03, 5%]"])
    assert cfg.alphas == pytest.approx([0.01, 0.03, 0.05])
    with pytest.raises(UserError) as err:  # 1 is a valid share (the whole LLM FFN); 3 is not
        EVALUATE.parse(["--model", "/m", "--llm", "/l", "alphas=[1, 3]"])
    assert str(err.value) == "alphas[1]: 3 is outside [0, 1]; did you mean 3% (0.03)? Write 3% or 0.03"

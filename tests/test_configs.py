"""Every shipped YAML loads into its config class (torchtune-style), strictly."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from qwen_tts_ext.config import load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("sft_*.yaml")), ids=lambda p: p.name)
def test_sft_recipes_load(path):
    from qwen_tts_ext.train.config import SFTConfig

    cfg = load_config(SFTConfig, path, ["model=/some/model", "data.path=/some/data"])
    assert cfg.train.lr > 0 and cfg.train.subtalker_weight == pytest.approx(0.3)


@pytest.mark.parametrize("path", sorted((CONFIGS / "accelerate").glob("*.yaml")), ids=lambda p: p.name)
def test_accelerate_configs_parse(path):
    from accelerate.commands.config.config_args import load_config_from_file

    data = yaml.safe_load(path.read_text())
    assert "distributed_type" in data and "num_processes" in data
    load_config_from_file(str(path))


def test_prepare_yaml_loads():
    from qwen_tts_ext.prep import PrepareConfig

    cfg = load_config(PrepareConfig, CONFIGS / "prepare.yaml")
    assert cfg.min_seconds == 0.5 and cfg.max_seconds == 30


def test_blend_yaml_loads():
    from qwen_tts_ext.blend.pipeline import BlendConfig

    cfg = load_config(BlendConfig, CONFIGS / "blend.yaml", ["tts=/a", "output=/b"])
    assert cfg.alpha == pytest.approx(0.03) and cfg.tensors == ["gate", "up", "down"]


def test_emotions_yaml_loads_and_maps_tags():
    from qwen_tts_ext.synthesis.emotions import load_emotions

    emotions = load_emotions(CONFIGS / "emotions.yaml")
    for tag in ("Whispering", "Angry", "Excited"):
        inst = emotions.resolve(tag)
        assert inst.known and inst.text


def test_every_shipped_yaml_is_covered():
    covered = {"prepare.yaml", "blend.yaml", "emotions.yaml"} | {p.name for p in CONFIGS.glob("sft_*.yaml")}
    assert {p.name for p in CONFIGS.glob("*.yaml")} == covered

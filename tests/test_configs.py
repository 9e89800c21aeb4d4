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


# the command recipes checked by loading them strictly (every key known, every value valid)
COMMAND_YAMLS = {"search.yaml": "qwen_tts_ext.blend.search_config:SearchConfig",
                 "quantize.yaml": "qwen_tts_ext.quantize.config:QuantizeConfig",
                 "design_voice.yaml": "qwen_tts_ext.design.config:DesignConfig",
                 "grpo.yaml": "qwen_tts_ext.grpo.config:GRPOConfig",
                 "grpo_stop_repair.yaml": "qwen_tts_ext.grpo.config:GRPOConfig"}


@pytest.mark.parametrize("name", sorted(COMMAND_YAMLS))
def test_command_yaml_has_only_known_keys_and_valid_values(name):
    """Loaded strictly; the only refusals allowed are inputs the file leaves to the command line (no model...)."""
    import importlib

    from qwen_tts_ext.errors import UserError

    module, _, cls = COMMAND_YAMLS[name].partition(":")
    try:
        load_config(getattr(importlib.import_module(module), cls), CONFIGS / name, [])
    except UserError as exc:
        bad = [line for line in str(exc).splitlines() if "unknown config key" in line or "expected" in line]
        assert not bad, f"{name}: {bad}"


def test_every_shipped_yaml_is_covered():
    covered = {"prepare.yaml", "blend.yaml", "emotions.yaml"} | {p.name for p in CONFIGS.glob("sft_*.yaml")}
    assert {p.name for p in CONFIGS.glob("*.yaml")} == covered | set(COMMAND_YAMLS)

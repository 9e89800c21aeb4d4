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

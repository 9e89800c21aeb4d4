"""The factory's tiny VoiceDesign checkpoint: the stock qwen_tts loader reads it and generate_voice_design runs."""

from __future__ import annotations

import json

import numpy as np
import torch

from qwen_tts_ext import constants as C


def test_tiny_voice_design_loads_in_stock_qwen_tts_and_speaks_from_a_description(tmp_path):
    from qwen_tts import Qwen3TTSModel

    from qwen_tts_ext.checkpoint_io import require_tts_checkpoint
    from qwen_tts_ext.testing.voice_design import build_tiny_voice_design

    path = build_tiny_voice_design(tmp_path / "vd", seed=0)
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["tts_model_type"] == "voice_design" and cfg["talker_config"]["spk_id"] == {}
    assert require_tts_checkpoint(path, types=("voice_design",)) == path
    tts = Qwen3TTSModel.from_pretrained(str(path), dtype=torch.float32)
    assert tts.model.tts_model_type == "voice_design" and tts.model.speaker_encoder is None
    torch.manual_seed(0)
    wavs, sr = tts.generate_voice_design(text="Hello there.", instruct="A deep, raspy voice of a tired cowboy.",
                                         language="English", max_new_tokens=8)
    assert sr == C.SAMPLE_RATE and wavs[0].size > 0 and wavs[0].size % C.SAMPLES_PER_FRAME == 0
    assert np.isfinite(wavs[0]).all() and np.abs(wavs[0]).max() > 0
    # a description is required by nothing: the stock API treats "" as no instruction
    wavs, _ = tts.generate_voice_design(text="Hi.", instruct="", language="English", max_new_tokens=4)
    assert wavs[0].size > 0


def test_tiny_voice_design_06b_variant_speaks(tmp_path):
    from qwen_tts import Qwen3TTSModel

    from qwen_tts_ext.testing.tiny_checkpoint import TinySpec
    from qwen_tts_ext.testing.voice_design import build_tiny_voice_design

    path = build_tiny_voice_design(tmp_path / "vd06", TinySpec(variant="0.6b"), seed=1)
    tts = Qwen3TTSModel.from_pretrained(str(path), dtype=torch.float32)
    assert tts.model.tts_model_size == "0b6" and tts.model.tts_model_type == "voice_design"
    torch.manual_seed(0)
    wavs, _ = tts.generate_voice_design(text="Hi.", instruct="A bright voice.", language="English", max_new_tokens=4)
    assert wavs[0].size > 0 and np.isfinite(wavs[0]).all()


def test_released_voice_design_config_passes_the_checks(tmp_path, tiny_base):
    """The checks read the released layout (config.json only) unchanged: a 1.7B VoiceDesign folder is a designer."""
    from qwen_tts_ext import released as R
    from qwen_tts_ext.design.cli import COMMAND
    from qwen_tts_ext.design.pipeline import check

    designer = tmp_path / "Qwen3-TTS-12Hz-1.7B-VoiceDesign"
    designer.mkdir()
    (designer / "config.json").write_text(json.dumps(R.tts_config("1.7b", tts_model_type="voice_design")))
    cfg = COMMAND.parse(["--designer", str(designer), "--model", str(tiny_base), "--description", "A calm voice.",
                         "--name", "calm", "--output", str(tmp_path / "out")])
    ready = check(cfg)
    assert ready.designer == designer and ready.model_type == "base"
    assert len(ready.train_sentences) == 30 and len(ready.report_sentences) == 6
    assert not set(ready.train_sentences) & set(ready.report_sentences)
    assert not (tmp_path / "out").exists()

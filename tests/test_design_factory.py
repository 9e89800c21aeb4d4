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

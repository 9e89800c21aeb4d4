"""The blended checkpoint in the stock loader, and the in-memory blend used by synthesis."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _blend_helpers import expected_blend, ffn_names, load_all, rewrite_checkpoint, same_bytes
from qwen_tts_ext import constants as C
from qwen_tts_ext.blend.cli import main
from qwen_tts_ext.blend.plan import CompatibilityError
from qwen_tts_ext.blend.runtime import apply_blend_to_model, blend_state, restore_ffn
from qwen_tts_ext.errors import UserError

LAYERS = 2


@pytest.fixture(autouse=True)
def _private_hash_cache(tmp_path_factory, monkeypatch):
    """Keep the sha256 cache out of the user's ~/.cache."""
    monkeypatch.setenv("QWEN_TTS_EXT_CACHE", str(tmp_path_factory.mktemp("hash-cache")))


def _load(path):
    from qwen_tts import Qwen3TTSModel

    return Qwen3TTSModel.from_pretrained(str(path), dtype=torch.float32)


def _speak(tts) -> np.ndarray:
    ref = (0.1 * np.sin(2 * np.pi * 180 * np.arange(C.SAMPLE_RATE) / C.SAMPLE_RATE)).astype(np.float32)
    torch.manual_seed(0)
    wavs, sr = tts.generate_voice_clone(text="Hello there.", language="English", ref_audio=(ref, C.SAMPLE_RATE),
                                        x_vector_only_mode=True, max_new_tokens=8)
    assert sr == C.SAMPLE_RATE
    return wavs[0]


def _params(tts) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in tts.model.named_parameters()}


def test_blended_checkpoint_loads_in_stock_qwen_tts_and_speaks(tiny_base, tiny_llm, tmp_path, capsys):
    out = tmp_path / "blended"
    assert main(["--tts", str(tiny_base), "--llm", str(tiny_llm), "--output", str(out), "--alpha", "0.05"]) == 0
    capsys.readouterr()
    tts = _load(out)
    on_disk = load_all(out)
    params = dict(tts.model.named_parameters())
    for _, _, tn, _ in ffn_names(LAYERS):
        assert same_bytes(params[tn].detach(), on_disk[tn]), tn  # the loader really uses the blended weights
    wav = _speak(tts)
    assert wav.ndim == 1 and wav.size > 0 and wav.size % C.SAMPLES_PER_FRAME == 0
    assert np.isfinite(wav).all() and np.abs(wav).max() > 0


def test_runtime_blend_equals_cli_and_resweeps_from_the_originals(tiny_base, tiny_llm, tmp_path, capsys):
    tts = _load(tiny_base)
    before = _params(tts)
    src, llm = load_all(tiny_base), load_all(tiny_llm)

    report = apply_blend_to_model(tts.model, tiny_llm, 0.05)
    assert report["blended"] == 6 and set(report["alpha_per_tensor"].values()) == {0.05}
    out = tmp_path / "cli"
    assert main(["--tts", str(tiny_base), "--llm", str(tiny_llm), "--output", str(out), "--alpha", "0.05"]) == 0
    capsys.readouterr()
    on_disk = load_all(out)
    now = _params(tts)
    for name in before:
        assert same_bytes(now[name], on_disk[name]), name  # same code, same bits as the written checkpoint
    assert np.isfinite(_speak(tts)).all()

    # a second alpha re-blends from the original weights (no compounding), with a schedule this time
    apply_blend_to_model(tts.model, tiny_llm, 0.03, freeze_layers=[1], tensors=("up",))
    now = _params(tts)
    for layer, proj, tn, ln in ffn_names(LAYERS):
        want = expected_blend(src[tn], llm[ln], 0.03) if (layer == 0 and proj == "up") else src[tn]
        assert same_bytes(now[tn], want), tn

    assert restore_ffn(tts.model) == 1 and blend_state(tts.model) is None
    now = _params(tts)
    assert all(same_bytes(now[n], before[n]) for n in before)
    assert restore_ffn(tts.model) == 0


def test_runtime_refuses_incompatible_llm_without_touching_the_model(tiny_base, tiny_llm, tmp_path):
    from qwen_tts_ext.testing.tiny_checkpoint import build_tiny_llm

    tts = _load(tiny_base)
    before = _params(tts)
    narrow = build_tiny_llm(tmp_path / "narrow", tiny_base, intermediate_size=96)
    with pytest.raises(CompatibilityError, match="intermediate_size 128"):
        apply_blend_to_model(tts.model, narrow, 0.03)
    with pytest.raises(UserError, match="outside"):
        apply_blend_to_model(tts, tiny_llm, 1.2)  # the Qwen3TTSModel wrapper is accepted too
    now = _params(tts)
    assert all(same_bytes(now[n], before[n]) for n in before) and blend_state(tts.model) is None

    with pytest.warns(UserWarning, match="stop signal"):
        apply_blend_to_model(tts.model, tiny_llm, 0.12, keep_originals=False)
    with pytest.raises(UserError, match="already blended"):
        apply_blend_to_model(tts.model, tiny_llm, 0.03)


def test_runtime_reads_a_sharded_bf16_llm(tiny_base, tiny_llm, tmp_path):
    llm_dir = rewrite_checkpoint(tiny_llm, tmp_path / "llm", dtype=torch.bfloat16, max_shard_bytes=50_000)
    tts = _load(tiny_base)
    src, llm = load_all(tiny_base), load_all(llm_dir)
    with pytest.warns(UserWarning, match="stop signal"):
        report = apply_blend_to_model(tts.model, llm_dir, alpha_per_layer=[0.0, 1.0])
    assert any("dtypes differ" in n for n in report["notes"])
    params = dict(tts.model.named_parameters())
    for layer, _, tn, ln in ffn_names(LAYERS):
        want = src[tn] if layer == 0 else llm[ln].to(torch.float32)
        assert same_bytes(params[tn].detach(), want), tn


def test_originals_of_a_bf16_checkpoint_are_kept_compactly_and_restored_exactly(tiny_base, tiny_llm, tmp_path):
    tts_dir = rewrite_checkpoint(tiny_base, tmp_path / "tts-bf16", dtype=torch.bfloat16)
    tts = _load(tts_dir)  # float32 parameters holding bf16 values
    before = _params(tts)
    apply_blend_to_model(tts.model, tiny_llm, 0.04)
    originals = blend_state(tts.model)["originals"]
    assert len(originals) == 6 and all(t.dtype == torch.bfloat16 for t in originals.values())
    assert restore_ffn(tts.model) == 6
    now = _params(tts)
    assert all(same_bytes(now[n], before[n]) for n in before)


def test_blended_custom_voice_keeps_its_speakers(tiny_custom_voice, tiny_llm, tmp_path, capsys):
    out = tmp_path / "cv-darwin"
    assert main(["--tts", str(tiny_custom_voice), "--llm", str(tiny_llm), "--output", str(out)]) == 0
    capsys.readouterr()
    tts = _load(out)
    assert tts.get_supported_speakers() == ["ryan", "vivian"]
    src, got = load_all(tiny_custom_voice), load_all(out)
    emb = "talker.model.codec_embedding.weight"
    assert same_bytes(got[emb], src[emb])  # speaker rows untouched
    torch.manual_seed(0)
    wavs, sr = tts.generate_custom_voice(text="Hi.", language="English", speaker="Vivian", max_new_tokens=8)
    assert sr == C.SAMPLE_RATE and wavs[0].size > 0 and np.isfinite(wavs[0]).all()

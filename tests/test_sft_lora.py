"""Memory modes on tiny checkpoints: LoRA (merged export and adapter alone), pure bf16, gradient checkpointing,
freezing; and the AdamW kernels."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from _sft_helpers import make_prepared, max_abs_diff_state, speaker_row, tiny_recipe
from qwen_tts_ext.config import load_config
from qwen_tts_ext.train.config import SFTConfig


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tiny_base, espeak_corpus):
    return make_prepared(tmp_path_factory.mktemp("plora") / "prep", tiny_base, espeak_corpus)


def _train(tiny_base, prepared, out, *extra):
    from qwen_tts_ext.train.loop import train

    return train(load_config(SFTConfig, None, tiny_recipe(tiny_base, prepared, out, *extra)))


def test_lora_merged_export_is_base_plus_adapter_delta_and_speaks(tmp_path, tiny_base, prepared):
    from qwen_tts import Qwen3TTSModel

    summary = _train(tiny_base, prepared, tmp_path / "lora", "train.max_steps=6", "train.lora_rank=4",
                     "train.lora_alpha=8", "export.lora=both")
    export, adapter = Path(summary["export"]), tmp_path / "lora" / "export-adapter"
    base = load_file(str(tiny_base / "model.safetensors"))
    merged = load_file(str(export / "model.safetensors"))
    assert set(merged) == {k for k in base if not k.startswith("speaker_encoder.")}
    ad = load_file(str(adapter / "adapter_model.safetensors"))
    scale = 8 / 4
    changed = 0
    for key, w in merged.items():
        if key == "talker.model.codec_embedding.weight":
            continue  # speaker rows written
        stem = key[len("talker."):-len(".weight")] if key.startswith("talker.") else None
        a_key = f"{stem}.lora_A.weight"
        if stem and a_key in ad:
            expected = base[key] + scale * ad[f"{stem}.lora_B.weight"] @ ad[a_key]
            torch.testing.assert_close(w, expected, rtol=1e-5, atol=1e-6)
            changed += not torch.equal(w, base[key])
        else:
            assert torch.equal(w, base[key]), f"{key} changed but carries no adapter"
    assert changed > 0
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    assert cfg["r"] == 4 and cfg["qwen_tts_ext_applies_to"] == "talker"
    assert not any("code_predictor" in k for k in ad)
    tts = Qwen3TTSModel.from_pretrained(str(export), dtype=torch.float32)
    wavs, _ = tts.generate_custom_voice(text="Hi.", language="English", speaker="alice", max_new_tokens=8)
    assert wavs[0].size > 0
    vec = load_file(str(prepared / "speakers.safetensors"))["alice"]
    assert torch.equal(speaker_row(export, "alice"), vec)


def test_lora_trains_only_adapters_and_code_predictor_option(tmp_path, tiny_base, prepared):
    from qwen_tts import Qwen3TTSModel

    from qwen_tts_ext.train.lora import apply_lora

    model = Qwen3TTSModel.from_pretrained(str(tiny_base), dtype=torch.float32).model
    n = apply_lora(model, 4, 8.0, 0.0, ["q_proj", "v_proj"], code_predictor=True)
    trainable = [k for k, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_" in k for k in trainable)
    assert any("code_predictor" in k for k in trainable) and any(k.startswith("talker.model.layers") for k in trainable)
    assert not any("k_proj" in k or "mlp" in k for k in trainable)
    assert n == sum(p.numel() for p in model.parameters() if p.requires_grad)
    # adapters stay float32 over a bf16 base, so small updates are not rounded away
    bf = Qwen3TTSModel.from_pretrained(str(tiny_base), dtype=torch.bfloat16).model
    apply_lora(bf, 4, 8.0, 0.0, ["q_proj"], code_predictor=False)
    assert {p.dtype for k, p in bf.named_parameters() if ".lora_" in k} == {torch.float32}
    x = torch.randn(1, 3, bf.talker.config.hidden_size, dtype=torch.bfloat16)
    assert bf.talker.model.layers[0].self_attn.q_proj(x).dtype == torch.bfloat16


def test_pure_bf16_and_gradient_checkpointing_train(tmp_path, tiny_base, prepared):
    s1 = _train(tiny_base, prepared, tmp_path / "bf16", "train.max_steps=3", "train.pure_bf16=true", "export.dtype=bfloat16")
    assert math.isfinite(s1["final_loss"])
    with safe_open(str(Path(s1["export"]) / "model.safetensors"), "pt") as f:
        assert f.get_tensor("talker.codec_head.weight").dtype == torch.bfloat16
    a = _train(tiny_base, prepared, tmp_path / "plain", "train.max_steps=3")
    b = _train(tiny_base, prepared, tmp_path / "ckpt", "train.max_steps=3", "train.gradient_checkpointing=true")
    assert b["final_loss"] == pytest.approx(a["final_loss"], rel=1e-4)  # same math, less memory


def test_freezing_keeps_code_predictor_and_text_embedding(tmp_path, tiny_base, prepared):
    s = _train(tiny_base, prepared, tmp_path / "frozen", "train.max_steps=3", "train.train_code_predictor=false")
    base = load_file(str(tiny_base / "model.safetensors"))
    out = load_file(str(Path(s["export"]) / "model.safetensors"))
    cp = [k for k in out if k.startswith("talker.code_predictor.")]
    assert cp and all(torch.equal(out[k], base[k]) for k in cp)
    assert torch.equal(out["talker.model.text_embedding.weight"], base["talker.model.text_embedding.weight"])
    assert not torch.equal(out["talker.model.layers.0.mlp.up_proj.weight"], base["talker.model.layers.0.mlp.up_proj.weight"])


def test_adamw_kernels_train_the_same_weights(tmp_path, tiny_base, prepared):
    """The fused AdamW (default) is a drop-in for torch's reference for-loop: same weights up to float rounding."""
    from qwen_tts_ext.train.setup import build_adamw

    runs = {impl: _train(tiny_base, prepared, tmp_path / impl, "train.max_steps=3", f"train.adamw_impl={impl}")
            for impl in ("fused", "for-loop")}
    assert runs["fused"]["final_loss"] == pytest.approx(runs["for-loop"]["final_loss"], rel=1e-4)
    base = load_file(str(tiny_base / "model.safetensors"))
    fused, loop = (load_file(str(Path(runs[k]["export"]) / "model.safetensors")) for k in ("fused", "for-loop"))
    key = "talker.model.layers.0.mlp.up_proj.weight"
    moved = float((fused[key] - base[key]).abs().max())
    assert moved > 1e-4  # training changed the weights...
    assert max_abs_diff_state(Path(runs["fused"]["export"]), Path(runs["for-loop"]["export"])) < 1e-3 * moved  # ...alike
    from qwen_tts_ext.train.config import TrainConfig

    cfg = TrainConfig(adamw_impl="foreach")
    opt = build_adamw([{"params": [torch.nn.Parameter(torch.zeros(3))]}], cfg)
    assert opt.defaults["foreach"] is True and not opt.defaults["fused"]


def test_fused_adamw_falls_back_to_foreach_where_torch_has_no_fused_kernel(monkeypatch):
    from qwen_tts_ext.train.config import TrainConfig
    from qwen_tts_ext.train.setup import build_adamw

    real = torch.optim.AdamW

    def no_fused(params, **kw):
        if kw.get("fused"):
            raise RuntimeError("`fused=True` requires all the params to be floating point Tensors of supported devices")
        return real(params, **kw)

    monkeypatch.setattr(torch.optim, "AdamW", no_fused)
    said = []
    opt = build_adamw([torch.nn.Parameter(torch.zeros(3))], TrainConfig(), said.append)
    assert opt.defaults["foreach"] is True and not opt.defaults["fused"]
    assert len(said) == 1 and "using foreach" in said[0]

    def no_kernel(params, **kw):
        raise RuntimeError("no kernel here")

    monkeypatch.setattr(torch.optim, "AdamW", no_kernel)
    with pytest.raises(RuntimeError, match="no kernel here"):  # only "fused" falls back; a chosen kernel fails loudly
        build_adamw([torch.nn.Parameter(torch.zeros(3))], TrainConfig(adamw_impl="foreach"), said.append)

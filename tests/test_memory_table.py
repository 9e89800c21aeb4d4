"""scripts/memory_table.py: exact meta-device counts of the released models, a table that adds up,
and an activation formula that matches what autograd really saves."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "memory_table.py"


@pytest.fixture(scope="module")
def mt():
    spec = importlib.util.spec_from_file_location("memory_table", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["memory_table"] = mod  # dataclasses resolve their module by name
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def released(mt):
    models = {name: mt.build_model(d) for name, d in mt.RELEASED.items()}
    return models, {name: mt.count_parameters(m) for name, m in models.items()}


def test_released_1_7b_counts_match_known_totals(mt, released):
    models, counts = released
    c = counts["1.7B"]
    assert all(p.device.type == "meta" for p in models["1.7B"].parameters())  # nothing allocated
    # /work/shared/README.md: 480 tensors (talker 316, code predictor 88, speaker encoder 76), ~1.93 B
    assert c.tensors == 480
    talker = sum(c.part_tensors[p] for p in ("talker.text_embedding", "talker.codec_embedding", "talker.layers", "talker.other"))
    assert (talker, c.part_tensors["code_predictor"], c.part_tensors["speaker_encoder"]) == (316, 88, 76)
    assert round(c.total / 1e9, 2) == 1.93
    assert c.parts["talker.text_embedding"] == 151936 * 2048
    assert c.parts["talker.codec_embedding"] == 3072 * 2048
    assert sum(c.parts.values()) == c.total
    # 84 FFN tensors in the talker, 2048 <-> 6144
    ffn = [n for n, _ in models["1.7B"].named_parameters() if re.fullmatch(r"talker\.model\.layers\.\d+\.mlp\.\w+_proj\.weight", n)]
    assert len(ffn) == 84
    # LoRA r16 on q,k,v,o (2048x2048, 1024x2048 x2, 2048x2048) and gate,up,down (6144x2048) per layer
    per_layer = 16 * ((2048 + 2048) * 2 + (2048 + 1024) * 2 + (2048 + 6144) * 3)
    assert c.lora_talker[16] == 28 * per_layer


def test_dimensions_come_from_released_py(mt, released):
    from qwen_tts_ext import released as R

    # one table of released facts: the memory table holds no private copy
    assert mt.RELEASED == {"1.7B": R.DIMS["1.7b"], "0.6B": R.DIMS["0.6b"]} and mt.Dims is R.ModelDims
    _, counts = released
    assert {name: c.total for name, c in counts.items()} == {"1.7B": R.PARAMETERS["1.7b"], "0.6B": R.PARAMETERS["0.6b"]}
    cfg = mt.build_config(mt.RELEASED["0.6B"])
    assert cfg.im_start_token_id == 151644 and cfg.talker_config.codec_eos_token_id == 2150
    assert cfg.speaker_encoder_config.enc_dim == 1024 and cfg.tts_model_size == "0b6"


def test_released_0_6b_projects_text(mt, released):
    models, counts = released
    m = models["0.6B"]
    assert m.talker.text_projection.linear_fc1.in_features == 2048
    assert m.talker.text_projection.linear_fc2.out_features == 1024
    assert isinstance(m.talker.code_predictor.small_to_mtp_projection, torch.nn.Identity)  # cp hidden == talker hidden
    assert counts["0.6B"].tensors == 478
    assert counts["0.6B"].total < counts["1.7B"].total / 2


def test_table_columns_add_up(mt):
    rows, counts = mt.table_rows(1000)
    table = mt.markdown_table(rows, 1000)
    lines = [ln for ln in table.splitlines() if ln.startswith("| 1.7B") or ln.startswith("| 0.6B")]
    assert len(lines) == len(rows) == 2 * len(mt.MODES)
    for ln, r in zip(lines, rows):
        cells = [c.strip().strip("*") for c in ln.strip("|").split("|")]
        weights, autocast, grads, adam, act, total = map(float, cells[4:10])
        assert abs(weights + autocast + grads + adam + act - total) <= 0.03, ln  # printed rounding only
        assert r.total == pytest.approx(r.weights + r.autocast + r.grads + r.adam + r.activations)
        assert 0 < r.trained <= r.params
    by = {(r.model, r.mode.key): r for r in rows}
    for model in ("1.7B", "0.6B"):
        c = counts[model]
        full, text = by[model, "full"], by[model, "full_text"]
        # training the text embedding adds exactly its float32 grads + AdamW moments (12 bytes/param)
        assert text.trained - full.trained == c.parts["talker.text_embedding"]
        assert (text.grads + text.adam) - (full.grads + full.adam) == 12 * c.parts["talker.text_embedding"]
        d = mt.RELEASED[model]
        # grads: float32 grads of every trained parameter + the fused loss's bf16 head gradients
        assert full.weights == 4 * c.total and full.adam == 8 * full.trained
        assert full.grads == 4 * full.trained + mt.head_grad_bytes(d)
        assert by[model, "full_talker"].grads == 4 * by[model, "full_talker"].trained + mt.head_grad_bytes(
            d, code_predictor_heads=False)
        assert by[model, "bf16"].weights == 2 * c.total and by[model, "bf16"].autocast == 0
        assert by[model, "full_gc"].activations < full.activations / 3
        lora = by[model, "lora"]
        assert lora.trained == c.lora_talker[16] < 0.03 * c.total
        assert lora.grads == 4 * lora.trained and lora.adam == 8 * lora.trained
        assert lora.weights == 4 * (c.total + lora.trained) and lora.activations == full.activations
        assert by[model, "lora_bf16_gc"].total < by[model, "bf16_gc"].total < full.total
    # activations are linear in the frames of the micro-batch
    rows2, _ = mt.table_rows(2000)
    assert rows2[0].activations == pytest.approx(2 * rows[0].activations)


SMALL = dict(hidden=256, intermediate=768, layers=2, heads=8, kv_heads=4, head_dim=32, text_hidden=256,
             cp_hidden=128, cp_intermediate=384, cp_layers=2, cp_heads=8, cp_kv_heads=4, cp_head_dim=16)


@pytest.mark.parametrize("autocast", [True, False], ids=["autocast", "pure_bf16"])
def test_activation_formula_matches_saved_tensors(mt, autocast):
    d = mt.Dims("small", **SMALL)
    torch.manual_seed(0)
    model = mt.build_model(d, "cpu")
    if not autocast:
        model = model.to(torch.bfloat16)
    samples, frames, text = 2, 61, 9
    batch = mt.synthetic_batch(model.config, samples, frames, text)
    positions = batch.attention_mask.shape[1]
    got = mt.measure_saved_bytes(model, batch, autocast=autocast)
    # no padding in this batch: HF passes no mask to SDPA, so k/v are not repeated
    pred = mt.activation_bytes(d, samples * frames, autocast=autocast, checkpointing=False,
                               text_positions=samples * (positions - frames), talker_repeat_kv=False)
    assert got["activations"] == pytest.approx(pred["total"], rel=0.10)
    assert got["head_grads"] == mt.head_grad_bytes(d)  # every parameter of this model trains
    if autocast:
        c = mt.count_parameters(model)
        assert got["autocast_copies"] == pytest.approx(2 * c.forward_linear, rel=0.02)
    else:
        assert got["autocast_copies"] == 0


def test_cli_writes_doc_and_rejects_bad_frames(mt, tmp_path, capsys):
    out = tmp_path / "memory.md"
    assert mt.main(["--frames", "500", "--output", str(out)]) == 0
    text = out.read_text()
    assert "meta" in text and "| 1.7B |" in text and "act / 0.5k frames" in text and "Activation formula" in text
    assert "| 24 GB |" in text
    assert mt.main(["--frames", "0", "--no-write"]) == 2
    assert "error: --frames" in capsys.readouterr().err

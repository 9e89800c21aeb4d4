"""qwen_tts_ext/released.py (the released models' facts and config builders) and the factory's
released-shape builds: real width, real vocabulary, random weights, loadable by stock qwen_tts."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors import safe_open

from qwen_tts_ext import constants as C
from qwen_tts_ext import released as R


def _meta_tts(config: dict):
    from qwen_tts.core.models.configuration_qwen3_tts import Qwen3TTSConfig
    from qwen_tts.core.models.modeling_qwen3_tts import Qwen3TTSForConditionalGeneration

    with torch.device("meta"):
        return Qwen3TTSForConditionalGeneration(Qwen3TTSConfig(**R.class_kwargs(config)))


def _meta_llm(config: dict):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    with torch.device("meta"):
        return Qwen3ForCausalLM(Qwen3Config(**R.class_kwargs(config)))


@pytest.mark.parametrize("shape,params,tensors", [("0.6b", 914_643_008, 478), ("1.7b", 1_928_677_440, 480)])
def test_full_released_configs_have_the_released_parameter_counts(shape, params, tensors):
    model = _meta_tts(R.tts_config(shape))
    assert all(p.device.type == "meta" for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) == params == R.PARAMETERS[shape]
    assert len(model.state_dict()) == tensors
    d = R.DIMS[shape]
    assert model.talker.model.text_embedding.weight.shape == (151936, 2048)
    assert model.talker.model.codec_embedding.weight.shape == (3072, d.hidden)
    assert len(model.talker.model.layers) == 28 and len(model.talker.code_predictor.model.layers) == 5
    attn = model.talker.model.layers[0].self_attn
    assert attn.q_proj.weight.shape == (16 * 128, d.hidden) and attn.k_proj.weight.shape == (8 * 128, d.hidden)
    assert model.speaker_encoder.fc.weight.shape[0] == d.enc_dim == d.hidden


def test_config_dict_is_the_released_layout_with_the_real_ids():
    cfg = R.tts_config("1.7b")
    assert cfg["model_type"] == "qwen3_tts" and cfg["architectures"] == ["Qwen3TTSForConditionalGeneration"]
    assert cfg["tts_model_size"] == "1b7" and R.tts_config("0.6b")["tts_model_size"] == "0b6"
    assert [cfg[k] for k in ("im_start_token_id", "im_end_token_id", "tts_pad_token_id", "tts_bos_token_id",
                             "tts_eos_token_id")] == [151644, 151645, 151671, 151672, 151673]
    t = cfg["talker_config"]
    assert {k: t[k] for k in C.CODEC_SPECIAL_IDS} == C.CODEC_SPECIAL_IDS
    assert t["codec_language_id"] == C.CODEC_LANGUAGE_IDS and t["spk_id"] == {}
    assert t["rope_scaling"]["mrope_section"] == [24, 20, 20] and t["rope_theta"] == 1_000_000
    assert t["code_predictor_config"]["vocab_size"] == C.CODEBOOK_SIZE
    assert t["num_code_groups"] == C.NUM_CODE_GROUPS and t["vocab_size"] == C.CODEC_VOCAB_SIZE
    cv = R.tts_config("1.7b", tts_model_type="custom_voice")["talker_config"]
    assert cv["spk_id"]["vivian"] == 3065 and cv["spk_is_dialect"]["vivian"] is False
    # the stock config class keeps what the dict says (its own defaults are different numbers)
    from qwen_tts.core.models.configuration_qwen3_tts import Qwen3TTSConfig

    conf = Qwen3TTSConfig(**R.class_kwargs(R.tts_config("0.6b")))
    assert (conf.talker_config.num_hidden_layers, conf.talker_config.num_key_value_heads) == (28, 8)
    assert conf.talker_config.code_predictor_config.num_code_groups == 16
    assert conf.talker_config.codec_pad_id == 2148 and conf.speaker_encoder_config.enc_dim == 1024


def test_layers_keep_the_real_width_and_bad_values_are_refused():
    small = R.tts_config("0.6b", layers=2)
    full = R.tts_config("0.6b")
    assert small["talker_config"]["num_hidden_layers"] == 2
    strip = lambda c: {k: v for k, v in c["talker_config"].items() if k != "num_hidden_layers"}  # noqa: E731
    assert strip(small) == strip(full) and small["speaker_encoder_config"] == full["speaker_encoder_config"]
    assert R.dims("1.7B") is R.DIMS["1.7b"] and R.dims("1.7b", 28) is R.DIMS["1.7b"]
    for bad in (0, 29):
        with pytest.raises(ValueError, match="layers"):
            R.tts_config("0.6b", layers=bad)
    with pytest.raises(ValueError, match="shape"):
        R.tts_config("4b")
    with pytest.raises(ValueError, match="tts_model_type"):
        R.tts_config("0.6b", tts_model_type="clone")


@pytest.mark.parametrize("shape,params", [("1.7b", 1_720_574_976), ("0.6b", 596_049_920)])
def test_llm_twin_has_the_talker_ffn_shapes(shape, params):
    d = R.DIMS[shape]
    assert d.llm_name == {"1.7b": "Qwen3-1.7B", "0.6b": "Qwen3-0.6B"}[shape]
    llm = _meta_llm(R.llm_config(shape, layers=2))
    tts = _meta_tts(R.tts_config(shape, layers=2))
    for n in range(2):
        for proj in ("gate_proj", "up_proj", "down_proj"):
            a = getattr(llm.model.layers[n].mlp, proj).weight.shape
            b = getattr(tts.talker.model.layers[n].mlp, proj).weight.shape
            assert a == b
    full = _meta_llm(R.llm_config(shape))
    assert sum(p.numel() for p in full.parameters()) == params  # the published 1.7B / 0.6B, tied embeddings
    assert full.lm_head.weight is full.model.embed_tokens.weight


def test_random_weights_follow_the_init_rules_and_the_seed(tmp_path):
    from qwen_tts_ext.testing.tiny_checkpoint import write_random_weights

    specs = [("emb", (3000, 64), "normal"), ("norm", (64,), "ones"), ("bias", (7,), "zeros"),
             ("conv", (8, 4, 3), "fan_in"), ("count", (), "int_zeros"), ("big", (1 << 21,), "normal")]
    n = write_random_weights(specs, tmp_path / "a", seed=3)
    write_random_weights(specs, tmp_path / "b", seed=3)
    write_random_weights(specs, tmp_path / "c", seed=4, dtype=torch.float32, max_shard_bytes=1 << 20)
    assert (tmp_path / "a/model.safetensors").read_bytes() == (tmp_path / "b/model.safetensors").read_bytes()
    assert n == 2 * (3000 * 64 + 64 + 7 + 96 + (1 << 21)) + 8
    with safe_open(str(tmp_path / "a/model.safetensors"), "pt") as f:
        assert f.metadata() == {"format": "pt"}
        t = {k: f.get_tensor(k) for k in f.keys()}
    assert t["emb"].dtype == torch.bfloat16 and abs(float(t["emb"].float().std()) - 0.02) < 0.002
    assert torch.equal(t["norm"], torch.ones(64, dtype=torch.bfloat16)) and not t["bias"].any()
    assert t["count"].dtype == torch.int64 and t["count"].shape == ()
    assert abs(float(t["conv"].float().std()) - 1 / math.sqrt(12)) < 0.15
    assert not torch.equal(t["big"][: 1 << 20], t["big"][1 << 20:])  # tiles come from different offsets
    index = json.loads((tmp_path / "c/model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == {name for name, _, _ in specs} and len(set(index["weight_map"].values())) > 1


@pytest.fixture(scope="module")
def released_06b_2l(tmp_path_factory):
    """A 2-layer 0.6B build at real width (about 1 GB of bf16), through the command line."""
    import time

    from qwen_tts_ext.testing.tiny_checkpoint import main

    out = tmp_path_factory.mktemp("released") / "r06"
    t0 = time.perf_counter()
    assert main(["tts", str(out), "--shape", "0.6b", "--layers", "2"]) == 0
    return out, time.perf_counter() - t0


@pytest.mark.slow
def test_2_layer_06b_build_loads_with_stock_qwen_tts_and_speaks(released_06b_2l):
    from qwen_tts import Qwen3TTSModel

    path, seconds = released_06b_2l
    assert seconds < 120, f"a 2-layer 0.6B build took {seconds:.0f} s: random init must stay cheap"
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["talker_config"]["num_hidden_layers"] == 2 and cfg["dtype"] == "bfloat16"
    assert "model_type" not in cfg["speaker_encoder_config"]
    # every tensor the stock model has, with its shape: nothing left to random init at load
    expected = {k: tuple(v.shape) for k, v in _meta_tts(R.tts_config("0.6b", layers=2)).state_dict().items()}
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        assert {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()} == expected
        assert f.get_slice("talker.model.text_embedding.weight").get_shape() == [151936, 2048]

    tts = Qwen3TTSModel.from_pretrained(str(path), dtype=torch.float32)
    tok = tts.processor.tokenizer
    ids = tts.processor(text="<|im_start|>assistant\nHi.<|im_end|>\n<|im_start|>assistant\n")["input_ids"][0]
    assert ids[0] == 151644 and ids[-5] == 151645 and ids[2] == ids[-1]  # "assistant" and "\n" are single tokens
    assert tok.convert_tokens_to_ids(list(R.TEXT_SPECIAL_IDS)) == list(R.TEXT_SPECIAL_IDS.values())
    ref = (0.1 * np.sin(2 * np.pi * 180 * np.arange(C.SAMPLE_RATE) / C.SAMPLE_RATE)).astype(np.float32)
    torch.manual_seed(0)
    wavs, sr = tts.generate_voice_clone(text="Hello there.", language="English", ref_audio=(ref, C.SAMPLE_RATE),
                                        x_vector_only_mode=True, max_new_tokens=3)
    assert sr == C.SAMPLE_RATE
    assert 0 < wavs[0].size <= 3 * C.SAMPLES_PER_FRAME and wavs[0].size % C.SAMPLES_PER_FRAME == 0
    assert np.isfinite(wavs[0]).all()


def test_blend_bench_builds_from_released_py():
    from qwen_tts_ext.blend import bench

    cfg, tts, lcfg, llm = bench.model_specs("1.7b")
    assert cfg == R.tts_config("1.7b") and lcfg == R.llm_config("1.7b")
    assert (len(tts), sum(math.prod(s) for _, s, _ in tts)) == (480, R.PARAMETERS["1.7b"])
    assert (len(llm), sum(math.prod(s) for _, s, _ in llm)) == (310, 1_720_574_976)  # tied lm_head saved once
    assert bench.main(["--layers", "0"]) == 2

"""Darwin FFN blend on tiny checkpoints: exact arithmetic, untouched bytes, schedules, checks, outputs."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors import safe_open

from _blend_helpers import (
    expected_blend,
    ffn_names,
    leftovers,
    load_all,
    rewrite_checkpoint,
    same_bytes,
)
from qwen_tts_ext.blend.cli import main
from qwen_tts_ext.blend.plan import build_schedule, expand_schedule, parse_layers
from qwen_tts_ext.checkpoint_io import INDEX_FILE, LazyCheckpoint
from qwen_tts_ext.errors import UserError

LAYERS = 2  # the tiny talker


@pytest.fixture(autouse=True)
def _private_hash_cache(tmp_path_factory, monkeypatch):
    """Keep the sha256 cache out of the user's ~/.cache."""
    monkeypatch.setenv("QWEN_TTS_EXT_CACHE", str(tmp_path_factory.mktemp("hash-cache")))


@pytest.fixture(scope="module")
def bf16_pair(tiny_base, tiny_llm, tmp_path_factory):
    """The tiny parents in bf16 (like the released checkpoints), the LLM sharded with an index."""
    root = tmp_path_factory.mktemp("bf16")
    tts = rewrite_checkpoint(tiny_base, root / "tts", dtype=torch.bfloat16)
    llm = rewrite_checkpoint(tiny_llm, root / "llm", dtype=torch.bfloat16, max_shard_bytes=60_000)
    assert (llm / INDEX_FILE).is_file()
    return tts, llm


def run(capsys, *args) -> tuple[int, str, str]:
    rc = main([str(a) for a in args])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


# --------------------------------------------------------------------------- arithmetic


@pytest.mark.parametrize("which", ["float32", "bf16_sharded_llm"])
def test_blend_matches_formula_and_leaves_everything_else_byte_identical(which, tiny_base, tiny_llm, bf16_pair,
                                                                        tmp_path, capsys):
    tts_dir, llm_dir = (tiny_base, tiny_llm) if which == "float32" else bf16_pair
    out = tmp_path / "out"
    rc, stdout, err = run(capsys, "--tts", tts_dir, "--llm", llm_dir, "--output", out)
    assert rc == 0, err
    src, llm, got = load_all(tts_dir), load_all(llm_dir), load_all(out)
    assert list(got) == list(src)  # same tensors, same order
    blended = {t for _, _, t, _ in ffn_names(LAYERS)}
    for _, _, tn, ln in ffn_names(LAYERS):
        want = expected_blend(src[tn], llm[ln], 0.03)
        assert same_bytes(got[tn], want), tn
        assert not torch.equal(got[tn], src[tn])
    for name in set(src) - blended:
        assert same_bytes(got[name], src[name]), name
    assert "blended 6 FFN tensors" in stdout


def test_alpha_zero_reproduces_input_bit_for_bit(tiny_base, tiny_llm, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(capsys, "--tts", tiny_base, "--llm", tiny_llm, "--output", out, "--alpha", "0")[0] == 0
    a, b = (tiny_base / "model.safetensors").read_bytes(), (out / "model.safetensors").read_bytes()
    ha, hb = int.from_bytes(a[:8], "little"), int.from_bytes(b[:8], "little")
    assert a[8 + ha:] == b[8 + hb:]  # identical data section, only the metadata grew
    src, got = load_all(tiny_base), load_all(out)
    assert all(same_bytes(got[k], src[k]) for k in src)


def test_alpha_one_on_a_layer_gives_the_llm_tensor_and_schedule_is_exact(bf16_pair, tmp_path, capsys):
    tts_dir, llm_dir = bf16_pair
    out = tmp_path / "out"
    rc, _, err = run(capsys, "--tts", tts_dir, "--llm", llm_dir, "--output", out, "--alpha-per-layer", "[1.0, 0.05]")
    assert rc == 0, err
    assert "WARNING" in err and "stop signal" in err  # alpha 1 >= 0.10
    src, llm, got = load_all(tts_dir), load_all(llm_dir), load_all(out)
    for layer, _, tn, ln in ffn_names(LAYERS):
        if layer == 0:
            assert same_bytes(got[tn], llm[ln])
        else:
            assert same_bytes(got[tn], expected_blend(src[tn], llm[ln], 0.05))
    prov = json.loads((out / "darwin_blend.json").read_text())
    assert {v["alpha"] for k, v in prov["alpha_per_tensor"].items() if ".layers.0." in k} == {1.0}
    assert {v["alpha"] for k, v in prov["alpha_per_tensor"].items() if ".layers.1." in k} == {0.05}


def test_frozen_layers_and_tensor_subset_apply_exactly(tiny_base, tiny_llm, tmp_path, capsys):
    out = tmp_path / "out"
    rc, _, err = run(capsys, "--tts", tiny_base, "--llm", tiny_llm, "--output", out, "--alpha", "0.05",
                     "--freeze-layers", "1", "--tensors", "gate,down")
    assert rc == 0, err
    src, llm, got = load_all(tiny_base), load_all(tiny_llm), load_all(out)
    for layer, proj, tn, ln in ffn_names(LAYERS):
        if layer == 1 or proj == "up":
            assert same_bytes(got[tn], src[tn]), tn
        else:
            assert same_bytes(got[tn], expected_blend(src[tn], llm[ln], 0.05)), tn
    prov = json.loads((out / "darwin_blend.json").read_text())
    assert prov["schedule"]["frozen_layers"] == [1]
    assert prov["tensors"]["blended"] == 2
    assert not any("up_proj" in k for k in prov["alpha_per_tensor"])


def test_per_projection_schedule_from_yaml_file(tiny_base, tiny_llm, tmp_path, capsys):
    sched = tmp_path / "sched.yaml"
    sched.write_text("gate: [0.02, 0.04]\ndown: 0.01\n")
    out = tmp_path / "out"
    rc, _, err = run(capsys, "--tts", tiny_base, "--llm", tiny_llm, "--output", out, "--alpha", "0.03",
                     "--alpha-per-layer", sched)
    assert rc == 0, err
    want = {("gate", 0): 0.02, ("gate", 1): 0.04, ("up", 0): 0.03, ("up", 1): 0.03, ("down", 0): 0.01, ("down", 1): 0.01}
    src, llm, got = load_all(tiny_base), load_all(tiny_llm), load_all(out)
    for layer, proj, tn, ln in ffn_names(LAYERS):
        assert same_bytes(got[tn], expected_blend(src[tn], llm[ln], want[(proj, layer)])), tn


def test_schedule_expansion_rules():
    # mergekit-style gradient over 28 layers: linear between evenly spaced anchors
    ramp = expand_schedule([0.0, 0.054], 28)
    assert ramp[0] == 0.0 and math.isclose(ramp[-1], 0.054) and math.isclose(ramp[14], 0.054 * 14 / 27)
    three = expand_schedule([0.01, 0.05, 0.01], 5)
    assert [round(v, 6) for v in three] == [0.01, 0.03, 0.05, 0.03, 0.01]
    exact = [i / 100 for i in range(28)]
    assert expand_schedule(exact, 28) == exact
    assert expand_schedule("0.01,0.03", 3) == pytest.approx([0.01, 0.02, 0.03])
    assert expand_schedule(0.02, 4) == [0.02] * 4
    with pytest.raises(UserError, match="29 values"):
        expand_schedule([0.01] * 29, 28)
    with pytest.raises(UserError, match="outside"):
        expand_schedule([0.01, 1.5], 28)
    assert parse_layers("0-2,27", 28) == [0, 1, 2, 27]
    with pytest.raises(UserError, match="do not exist"):
        parse_layers("30", 28)
    s = build_schedule(4, alpha=0.03, alpha_per_layer="[0.0, 0.06]", freeze_layers=[3], tensors="up")
    assert s.projections == ("up",)
    assert [s.alpha(i, "up") for i in range(4)] == pytest.approx([0.0, 0.02, 0.04, 0.0])
    assert s.alpha(1, "gate") == 0.0


# --------------------------------------------------------------------------- checks -> exit 2, no output


def _incompatible_llms(tiny_base, tiny_llm, root):
    from qwen_tts_ext.testing.tiny_checkpoint import build_tiny_llm

    def drop(t):
        t.pop("model.layers.1.mlp.up_proj.weight")
        return t

    def quantise(t):
        t["model.layers.0.mlp.down_proj.weight"] = t["model.layers.0.mlp.down_proj.weight"].to(torch.int8)
        return t

    def reshape(t):
        t["model.layers.1.mlp.gate_proj.weight"] = t["model.layers.1.mlp.gate_proj.weight"][:, :32].contiguous()
        return t

    return {
        "hidden": (build_tiny_llm(root / "h", tiny_base, hidden_size=32), "hidden_size 64 (TTS talker) vs 32"),
        "intermediate": (build_tiny_llm(root / "i", tiny_base, intermediate_size=96), "intermediate_size 128"),
        "layers": (build_tiny_llm(root / "l", tiny_base, num_hidden_layers=3), "num_hidden_layers 2"),
        "activation": (build_tiny_llm(root / "a", tiny_base, hidden_act="gelu"), "hidden_act silu"),
        "backbone": (rewrite_checkpoint(tiny_llm, root / "b", config_edit=lambda c: c.update(model_type="llama")),
                     "model_type 'llama' is not Qwen3"),
        "missing": (rewrite_checkpoint(tiny_llm, root / "m", edit=drop),
                    "the LLM lacks 1 FFN tensors: model.layers.1.mlp.up_proj.weight"),
        "dtype": (rewrite_checkpoint(tiny_llm, root / "d", edit=quantise), "model.layers.0.mlp.down_proj.weight is int8"),
        "shape": (rewrite_checkpoint(tiny_llm, root / "s", edit=reshape), "gate_proj of layer 1: (128, 64) vs (128, 32)"),
    }


def test_every_compatibility_failure_exits_2_with_its_message_and_no_output(tiny_base, tiny_llm, tmp_path, capsys):
    cases = _incompatible_llms(tiny_base, tiny_llm, tmp_path / "llms")
    for case, (llm, needle) in cases.items():
        out = tmp_path / f"out-{case}"
        rc, stdout, err = run(capsys, "--tts", tiny_base, "--llm", llm, "--output", out)
        assert rc == 2, (case, err)
        assert err.startswith("error: ") and err.count("\n") == 1, (case, err)  # one line, no traceback
        assert needle in err, (case, err)
        assert not out.exists() and not leftovers(tmp_path, out.name), case
    # the backbone check can be waived, everything else cannot
    out = tmp_path / "out-waived"
    rc, _, err = run(capsys, "--tts", tiny_base, "--llm", cases["backbone"][0], "--output", out,
                     "--allow-other-backbones")
    assert rc == 0, err


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--alpha", "-0.1"], "outside [0, 1]"),
        (["--alpha", "1.5"], "outside [0, 1]"),
        (["--alpha-per-layer", "[0.01, 0.02, 0.03]"], "3 values for a talker with 2 layers"),
        (["--freeze-layers", "5"], "do not exist"),
        (["--tensors", "gate,attn"], "not one of gate, up, down"),
        (["--shard-size", "lots"], "shard_size"),
        (["nonsense_key=1"], "unknown config key"),
    ],
)
def test_bad_settings_exit_2_and_write_nothing(extra, needle, tiny_base, tiny_llm, tmp_path, capsys):
    out = tmp_path / "out"
    rc, _, err = run(capsys, "--tts", tiny_base, "--llm", tiny_llm, "--output", out, *extra)
    assert rc == 2 and needle in err, err
    assert not out.exists() and not leftovers(tmp_path, "out")


def test_output_safety(tiny_base, tiny_llm, tmp_path, capsys):
    for bad, needle in ((tiny_base, "is the --tts checkpoint itself"), (tiny_llm, "is the --llm checkpoint itself"),
                        (tiny_base.parent, "contains the --tts checkpoint"),
                        (tiny_base / "sub", "inside the --tts checkpoint")):
        rc, _, err = run(capsys, "--tts", tiny_base, "--llm", tiny_llm, "--output", bad, "--overwrite")
        assert rc == 2 and needle in err, err
    assert not (tiny_base / "sub").exists()
    rc, _, err = run(capsys, "--tts", tiny_llm, "--llm", tiny_base, "--output", tmp_path / "x")
    assert rc == 2 and "not a Qwen3-TTS checkpoint; pass it as --llm" in err
    rc, _, err = run(capsys, "--tts", tiny_base, "--llm", tiny_llm, "--report-dir", tiny_llm / "mri")
    assert rc == 2 and "inside the --llm checkpoint" in err and not (tiny_llm / "mri").exists()
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    rc, _, err = run(capsys, "--tts", tiny_base, "--llm", tiny_llm, "--output", out)
    assert rc == 2 and "not written by" in err and (out / "keep.txt").read_text() == "mine"
    rc, _, err = run(capsys, "--tts", tiny_base, "--llm", tiny_llm, "--output", out, "--overwrite")
    assert rc == 2 and "not written by `qwen-tts-ext blend`" in err and (out / "keep.txt").is_file()
    (out / "keep.txt").unlink()
    assert run(capsys, "--tts", tiny_base, "--llm", tiny_llm, "--output", out)[0] == 0  # an empty folder is fine
    (out / "keep.txt").write_text("mine")  # a previous output of this command may be replaced
    rc, _, err = run(capsys, "--tts", tiny_base, "--llm", tiny_llm, "--output", out, "--overwrite")
    assert rc == 0, err
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    rc, _, err = run(capsys, "--tts", tmp_path / "missing", "--llm", tiny_llm, "--output", tmp_path / "o2")
    assert rc == 2 and "no such folder" in err


def test_dry_run_prints_plan_and_writes_nothing(tiny_base, tiny_llm, tmp_path, capsys):
    out = tmp_path / "out"
    rc, stdout, _ = run(capsys, "--tts", tiny_base, "--llm", tiny_llm, "--output", out, "--dry-run",
                        "--freeze-layers", "0")
    assert rc == 0 and not out.exists() and list(tmp_path.iterdir()) == []
    assert "talker.model.layers.N.mlp.P_proj.weight <- LLM model.layers.N.mlp.P_proj.weight" in stdout
    assert "(frozen)" in stdout and "3 of 6 mapped FFN tensors change" in stdout and "nothing written" in stdout


# --------------------------------------------------------------------------- outputs


def test_output_is_a_complete_checkpoint_with_provenance(tiny_base, tiny_llm, tmp_path, capsys):
    cfg = tmp_path / "blend.yaml"
    cfg.write_text(f"tts: {tiny_base}\nllm: {tiny_llm}\nalpha: 0.02\nshard_size: 30KB\n")
    out = tmp_path / "out"
    rc, _, err = run(capsys, "--config", cfg, f"output={out}", "alpha=0.04")
    assert rc == 0, err
    # support files and speech tokenizer carried over, weights resharded with an index
    for name in ("config.json", "generation_config.json", "tokenizer_config.json", "vocab.json", "merges.txt",
                 "speech_tokenizer/config.json", "speech_tokenizer/model.safetensors", INDEX_FILE):
        assert (out / name).is_file(), name
    assert (out / "speech_tokenizer/model.safetensors").read_bytes() == \
        (tiny_base / "speech_tokenizer/model.safetensors").read_bytes()
    assert len(list(out.glob("model-*-of-*.safetensors"))) > 1 and not (out / "model.safetensors").exists()
    prov = json.loads((out / "darwin_blend.json").read_text())
    import hashlib

    want = hashlib.sha256((tiny_base / "model.safetensors").read_bytes()).hexdigest()
    assert prov["sources"]["tts"]["sha256"] == want
    assert prov["config"]["alpha"] == 0.04  # override beats the file
    assert prov["tool_version"] and len(prov["alpha_per_tensor"]) == 6
    assert {v["alpha"] for v in prov["alpha_per_tensor"].values()} == {0.04}
    with LazyCheckpoint(out) as ck:
        meta = ck.metadata()
    stamp = json.loads(meta["darwin_blend"])
    assert stamp["tts_sha256"] == want and stamp["alpha"] == 0.04
    assert json.loads(meta["darwin_blend.alphas"])["talker.model.layers.0.mlp.up_proj.weight"] == 0.04
    card = (out / "README.md").read_text()
    assert "base_model:" in card and str(tiny_llm) in card and "0.04" in card and want in card


def test_mri_report_values_and_heatmap(tiny_base, tiny_llm, tmp_path, capsys):
    rep = tmp_path / "mri"
    rc, stdout, err = run(capsys, "--tts", tiny_base, "--llm", tiny_llm, "--report-dir", rep)
    assert rc == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mri"]  # report only: no checkpoint
    report = json.loads((rep / "mri.json").read_text())
    assert (rep / "mri.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    src, llm = load_all(tiny_base), load_all(tiny_llm)
    assert report["layers"] == 2 and report["projections"] == ["gate", "up", "down"]
    for t in report["tensors"]:
        x, y = src[t["tts_tensor"]].double(), llm[t["llm_tensor"]].double()
        assert t["rel_distance"] == pytest.approx(float((y - x).norm() / x.norm()), rel=1e-5)
        assert t["cosine"] == pytest.approx(float((x * y).sum() / (x.norm() * y.norm())), abs=1e-5)
        assert t["norm_ratio"] == pytest.approx(float(y.norm() / x.norm()), rel=1e-5)
        j = report["projections"].index(t["projection"])
        assert report["grid"]["rel_distance"][t["layer"]][j] == t["rel_distance"]
    assert "most different" in stdout
    # with an output, the report lands beside the weights
    out = tmp_path / "out"
    assert run(capsys, "--tts", tiny_base, "--llm", tiny_llm, "--output", out, "--report")[0] == 0
    again = json.loads((out / "mri.json").read_text())
    assert [t["rel_distance"] for t in again["tensors"]] == [t["rel_distance"] for t in report["tensors"]]
    assert (out / "mri.png").is_file()


def test_blending_a_blended_checkpoint_records_the_parent(tiny_base, tiny_llm, tmp_path, capsys):
    first, second = tmp_path / "first", tmp_path / "second"
    assert run(capsys, "--tts", tiny_base, "--llm", tiny_llm, "--output", first, "--alpha", "0.01")[0] == 0
    assert run(capsys, "--tts", first, "--llm", tiny_llm, "--output", second, "--alpha", "0.01")[0] == 0
    prov = json.loads((second / "darwin_blend.json").read_text())
    assert prov["parent_blend"]["config"]["alpha"] == 0.01
    with safe_open(str(second / "model.safetensors"), "pt") as h:
        assert "darwin_blend" in h.metadata()


def test_failure_mid_write_leaves_no_output(tiny_base, tiny_llm, tmp_path, capsys):
    llm = rewrite_checkpoint(tiny_llm, tmp_path / "llm")
    weights = llm / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 3])  # header intact, most tensors cut off
    out = tmp_path / "out"
    rc, _, err = run(capsys, "--tts", tiny_base, "--llm", llm, "--output", out)
    assert rc == 2 and "truncated" in err, err
    assert not out.exists() and not leftovers(tmp_path, "out")


def test_launcher_and_dispatcher_help():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for cmd in ([sys.executable, "finetuning/darwin_blend.py", "--help"],
                [sys.executable, "-m", "qwen_tts_ext.cli", "blend", "--help"]):
        proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert "--alpha-per-layer" in proc.stdout and "stop signal" in proc.stdout


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_lerper_chunks_match_the_formula_in_place_and_out_of_place(dtype):
    from qwen_tts_ext.blend.lerp import Lerper

    g = torch.Generator().manual_seed(3)
    tts = torch.randn(37, 101, generator=g).to(dtype)  # 3737 elements: several uneven chunks
    llm = torch.randn(37, 101, generator=g).to(torch.bfloat16)
    lerper = Lerper(chunk=1000)
    for alpha in (0.0, 0.03, 0.5, 1.0):
        want = expected_blend(tts, llm, alpha)
        assert same_bytes(lerper.blend(tts, llm, alpha), want)
        inplace = tts.clone()
        assert lerper.blend(inplace, llm, alpha, out=inplace) is inplace
        assert same_bytes(inplace, want)
    stats = lerper.compare(tts, llm)
    x, y = tts.double(), llm.double()
    assert stats["rel_distance"] == pytest.approx(float((y - x).norm() / x.norm()), rel=1e-5)
    assert stats["cosine"] == pytest.approx(float((x * y).sum() / (x.norm() * y.norm())), abs=1e-5)
    with pytest.raises(ValueError, match="shape mismatch"):
        lerper.blend(tts, llm[:, :100].contiguous(), 0.1)


def test_sharded_tts_input_mirrored_or_merged(tiny_base, tiny_llm, tmp_path, capsys):
    tts = rewrite_checkpoint(tiny_base, tmp_path / "tts-sharded", max_shard_bytes=2_000_000)
    shards = sorted(p.name for p in tts.glob("model-*.safetensors"))
    assert len(shards) > 1
    mirrored, single = tmp_path / "mirrored", tmp_path / "single"
    assert run(capsys, "--tts", tts, "--llm", tiny_llm, "--output", mirrored)[0] == 0
    assert sorted(p.name for p in mirrored.glob("model-*.safetensors")) == shards
    assert json.loads((mirrored / INDEX_FILE).read_text())["weight_map"] == \
        json.loads((tts / INDEX_FILE).read_text())["weight_map"]
    assert run(capsys, "--tts", tts, "--llm", tiny_llm, "--output", single, "--shard-size", "single")[0] == 0
    assert (single / "model.safetensors").is_file() and not (single / INDEX_FILE).exists()
    a, b = load_all(mirrored), load_all(single)
    assert set(a) == set(b) and all(same_bytes(a[k], b[k]) for k in a)


def test_shipped_config_loads_and_matches_the_defaults():
    from pathlib import Path

    from qwen_tts_ext.blend.pipeline import BlendConfig
    from qwen_tts_ext.config import load_config

    path = Path(__file__).resolve().parents[1] / "configs" / "blend.yaml"
    cfg = load_config(BlendConfig, path)
    defaults = BlendConfig()
    assert cfg.alpha == defaults.alpha == 0.03 and cfg.tensors == defaults.tensors
    assert cfg.shard_size == defaults.shard_size and cfg.hash_sources and not cfg.overwrite
    assert cfg.llm == "Qwen/Qwen3-1.7B"
    with pytest.raises(UserError, match="pass --tts"):
        cfg.check()

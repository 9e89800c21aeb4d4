"""SFT on tiny checkpoints: the objective's alignment, learning, speaker lock/export, resume, tracking, errors."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from _sft_helpers import make_prepared, max_abs_diff_state, speaker_row, tiny_recipe
from qwen_tts_ext.config import load_config
from qwen_tts_ext.train.config import SFTConfig
from qwen_tts_ext.train.layout import IGNORE_INDEX

REPO = Path(__file__).resolve().parents[1]


def _cfg(*overrides: str) -> SFTConfig:
    return load_config(SFTConfig, None, list(overrides))


@pytest.fixture(scope="module")
def corpus3(tmp_path_factory):
    from qwen_tts_ext.testing.speech import make_corpus

    return make_corpus(tmp_path_factory.mktemp("c3"), speakers=("alice", "bob", "carol"), clips_per_speaker=3)


@pytest.fixture(scope="module")
def prepared3(tmp_path_factory, tiny_base, corpus3):
    """3 speakers; alice's clips carry an instruct, all rows say English."""
    return make_prepared(tmp_path_factory.mktemp("p3") / "prep", tiny_base, corpus3,
                         instruct={"alice": "Speak in a calm, warm voice."}, language="english")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_base, prepared3):
    """One short run shared by several tests (200 steps at a high lr: the tiny model overfits)."""
    from qwen_tts_ext.train.loop import train

    out = tmp_path_factory.mktemp("run") / "sft"
    summary = train(_cfg(*tiny_recipe(tiny_base, prepared3, out, "train.max_steps=200")))
    return out, summary


# ----------------------------------------------------------------------------- alignment


def _batch_and_model(tiny_base, prepared3):
    from qwen_tts import Qwen3TTSModel

    from qwen_tts_ext.train.data import SFTDataset, TextTokenizer, collate_examples, load_prepared
    from qwen_tts_ext.train.layout import SpecialIds
    from qwen_tts_ext.train.speaker_lock import build_speaker_table, load_speaker_vectors

    tts = Qwen3TTSModel.from_pretrained(str(tiny_base), dtype=torch.float32)
    ds = load_prepared(prepared3)
    tconf = tts.model.config.talker_config
    table = build_speaker_table(list(set(ds["speaker"])), load_speaker_vectors(prepared3 / "speakers.safetensors"),
                                tconf, tconf.hidden_size)
    sft_ds = SFTDataset(ds, TextTokenizer(tts.processor.tokenizer), SpecialIds.from_config(tts.model.config), table.names)
    batch = collate_examples([sft_ds[0], sft_ds[4], sft_ds[7]])
    return tts, batch, table


def test_alignment_is_pinned_with_recorded_hidden_states(tiny_base, prepared3, monkeypatch):
    """codec-0 of p+1 is scored from p; the code predictor for frame t gets the state before t; head j scores codebook j+1."""
    from qwen_tts_ext.train.losses import sft_loss

    tts, batch, table = _batch_and_model(tiny_base, prepared3)
    talker = tts.model.talker
    V = talker.config.vocab_size
    recorded = {}
    talker.model.register_forward_hook(lambda m, a, out: recorded.__setitem__("hidden", out.last_hidden_state))

    # An oracle codec head: at each position it predicts exactly the codec-0 id of the NEXT position.
    next_ids = torch.full_like(batch.codec_ids, 0)
    next_ids[:, :-1] = torch.where(batch.frame_mask[:, 1:] | (batch.codec_ids[:, 1:] == 2150), batch.codec_ids[:, 1:], 0)
    oracle = torch.nn.functional.one_hot(next_ids, V).float() * 50.0
    valid = batch.codec0_targets != IGNORE_INDEX
    seen_head = {}

    def oracle_head(h, table=oracle):
        seen_head["rows"] = h
        return table[valid]  # training scores only the positions that have a target, in order

    talker.codec_head.forward = oracle_head

    # Oracle code-predictor states: position j+1 of frame n points (x50) at the row of codebook j+1's code
    # in a random unit-row table that every head uses as its weight, so head j scores ~0 CE only if it
    # reads position j+1 and is scored against codebook j+1 (this runs the fused loss).
    import qwen_tts_ext.train.losses as losses_mod

    cp = talker.code_predictor
    unit = torch.nn.functional.normalize(torch.randn(2048, cp.config.hidden_size, generator=torch.Generator().manual_seed(0)), dim=1)
    for head in cp.lm_head:
        head.weight.data = unit.clone()
    seen = {}
    real_states = losses_mod.subtalker_states

    def oracle_states(talker_, hidden_, codes_, shift=0):
        seen["hidden"], seen["codes"] = hidden_, codes_
        out = real_states(talker_, hidden_, codes_)
        seen["inputs"] = recorded_cp["inputs"]
        oracle = torch.zeros_like(out)
        oracle[:, 1:] = 50.0 * unit[torch.roll(codes_[:, 1:], shifts=-shift, dims=1)]
        return oracle

    recorded_cp = {}
    cp.small_to_mtp_projection.register_forward_hook(lambda m, a, out: recorded_cp.__setitem__("inputs", a[0]))
    monkeypatch.setattr(losses_mod, "subtalker_states", oracle_states)
    with torch.no_grad():
        out = sft_loss(talker, batch, table.vectors)
    assert float(out.talker_ce) < 1e-3, "codec-0 targets are not the next position's ids"
    # ...and the head was applied to exactly those positions' hidden states
    torch.testing.assert_close(seen_head["rows"], recorded["hidden"][valid])
    assert float(out.subtalker_ce) < 1e-3, "head j is not scored against codebook j+1"
    # The code predictor input for frame t starts with the talker state of the position before t.
    hidden = recorded["hidden"]
    frame_pos = [(b, p) for b in range(batch.frame_mask.shape[0]) for p in batch.frame_mask[b].nonzero().flatten().tolist()]
    expected = torch.stack([hidden[b, p - 1] for b, p in frame_pos])
    torch.testing.assert_close(seen["inputs"][:, 0], expected)
    # ...and then codebook 0 through the talker's codec embedding, codebooks 1..14 through the predictor's.
    codes = seen["codes"]
    torch.testing.assert_close(seen["inputs"][:, 1], talker.model.codec_embedding(codes[:, 0]))
    torch.testing.assert_close(seen["inputs"][:, 5], talker.code_predictor.get_input_embeddings()[3](codes[:, 4]))
    # The official double shift (head j learning codebook j+2) must be heavily penalised.
    monkeypatch.setattr(losses_mod, "subtalker_states", lambda *a: oracle_states(*a, shift=1))
    with torch.no_grad():
        assert float(sft_loss(talker, batch, table.vectors).subtalker_ce) > 10.0
    # Shifting the oracle by one more frame (what the official double shift trains) must be heavily penalised.
    shifted = torch.roll(oracle, shifts=-1, dims=1)
    talker.codec_head.forward = lambda h: oracle_head(h, shifted)
    with torch.no_grad():
        bad = sft_loss(talker, batch, table.vectors)
    assert float(bad.talker_ce) > 10.0


def test_sft_loss_equals_the_stock_forward_finetune_path(tiny_base, prepared3):
    """Losses and gradients of the fused SFT loss equal the plain path built on stock ``forward_finetune``."""
    from qwen_tts_ext.train.losses import sft_loss, subtalker_logits, talker_forward

    tts, batch, table = _batch_and_model(tiny_base, prepared3)
    talker = tts.model.talker
    talker.train()
    watched = {"codec_head": talker.codec_head.weight, "lm_head.7": talker.code_predictor.lm_head[7].weight,
               "cp.layer0.q": talker.code_predictor.model.layers[0].self_attn.q_proj.weight,
               "talker.layer1.down": talker.model.layers[1].mlp.down_proj.weight}

    def run(fn):
        talker.zero_grad(set_to_none=True)
        loss, talker_ce, sub = fn()
        loss.backward()
        return talker_ce.detach(), sub.detach(), {k: p.grad.clone() for k, p in watched.items()}

    def fused():
        out = sft_loss(talker, batch, table.vectors)
        return out.loss, out.talker_ce, out.subtalker_ce_per_codebook

    def plain():
        logits, hidden = talker_forward(talker, batch, table.vectors)
        t = batch.codec0_targets
        valid = t != IGNORE_INDEX
        ce = torch.nn.functional.cross_entropy(logits[valid], t[valid])
        src = batch.subtalker_sources
        codes = batch.subtalker_codes[src]
        stock = talker.code_predictor.forward_finetune(inputs_embeds=_stock_inputs(talker, hidden[src], codes)).logits
        torch.testing.assert_close(stock, subtalker_logits(talker, hidden[src], codes))  # our analysis path agrees
        per = torch.nn.functional.cross_entropy(stock.reshape(-1, stock.shape[-1]), codes[:, 1:].reshape(-1), reduction="none")
        per = per.view(codes.shape[0], -1).mean(0)
        return ce + 0.3 * per.mean(), ce, per

    a, b = run(fused), run(plain)
    torch.testing.assert_close(a[0], b[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a[1], b[1], rtol=1e-5, atol=1e-5)
    for k in watched:
        torch.testing.assert_close(a[2][k], b[2][k], rtol=1e-4, atol=1e-6, msg=k)


def test_subtalker_frame_fraction_scores_a_random_subset_without_bias(tiny_base, prepared3):
    """fraction f: the code predictor is scored on round(f x N) frames drawn from torch's RNG; the mean over
    draws is the full loss (an unbiased estimate); the talker loss is untouched."""
    from qwen_tts_ext.train.losses import sft_loss, subtalker_logits, talker_hidden

    tts, batch, table = _batch_and_model(tiny_base, prepared3)
    talker = tts.model.talker.eval()
    with torch.no_grad():
        full = sft_loss(talker, batch, table.vectors)
        n = full.num_frames
        hidden = talker_hidden(talker, batch, table.vectors)
        src = batch.subtalker_sources.nonzero(as_tuple=True)
        codes = batch.subtalker_codes[src]
        logits = subtalker_logits(talker, hidden[src], codes)
        per_frame = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), codes[:, 1:].reshape(-1),
                                                      reduction="none").view(n, -1).mean(1)
        torch.testing.assert_close(per_frame.mean(), full.subtalker_ce, rtol=1e-5, atol=1e-5)
        torch.manual_seed(3)
        part = sft_loss(talker, batch, table.vectors, subtalker_frame_fraction=0.25)
        torch.manual_seed(3)
        keep = torch.randperm(n)[: round(0.25 * n)]
        assert part.num_frames == n and part.num_subtalker_frames == round(0.25 * n)
        torch.testing.assert_close(part.subtalker_ce, per_frame[keep].mean(), rtol=1e-5, atol=1e-5)
        assert float(part.talker_ce) == pytest.approx(float(full.talker_ce), rel=1e-6)
        draws = torch.stack([sft_loss(talker, batch, table.vectors, subtalker_frame_fraction=0.25).subtalker_ce
                             for _ in range(200)])
    assert draws.std() > 0  # different frames each time
    assert abs(float(draws.mean() - full.subtalker_ce)) < 4 * float(draws.std()) / math.sqrt(len(draws))


def test_subtalker_frame_fraction_trains_and_is_validated(tmp_path, tiny_base, prepared3):
    from qwen_tts_ext.errors import UserError
    from qwen_tts_ext.train.loop import train

    s = train(_cfg(*tiny_recipe(tiny_base, prepared3, tmp_path / "frac", "train.max_steps=3",
                                "train.subtalker_frame_fraction=0.5")))
    assert math.isfinite(s["final_loss"])
    for bad in ("0", "1.5", "-0.2"):
        with pytest.raises(UserError, match="subtalker_frame_fraction"):
            _cfg(*tiny_recipe(tiny_base, prepared3, tmp_path / "x", f"train.subtalker_frame_fraction={bad}"))


def _stock_inputs(talker, hidden, codes):
    """``forward_sub_talker_finetune``'s input layout, built from the stock modules."""
    parts = [hidden.unsqueeze(1), talker.get_input_embeddings()(codes[:, :1])]
    for i in range(1, codes.shape[1] - 1):
        parts.append(talker.code_predictor.get_input_embeddings()[i - 1](codes[:, i:i + 1]))
    return torch.cat(parts, dim=1)


def test_overfit_learns_the_inference_alignment(tiny_base, prepared3, trained):
    """Teacher-forced CE at next-frame alignment is far below CE at frame +2; every head beats ln(2048)."""
    from qwen_tts import Qwen3TTSModel

    from qwen_tts_ext.train.losses import subtalker_logits, talker_forward

    out, _ = trained
    _, batch, table = _batch_and_model(tiny_base, prepared3)
    model = Qwen3TTSModel.from_pretrained(str(out / "export"), dtype=torch.float32).model
    talker = model.talker
    with torch.no_grad():
        logits, hidden = talker_forward(talker, batch, table.vectors)
        t = batch.codec0_targets
        valid = t != IGNORE_INDEX
        ce_next = torch.nn.functional.cross_entropy(logits[valid], t[valid])
        t2 = torch.full_like(t, IGNORE_INDEX)
        t2[:, :-1] = t[:, 1:]  # the official double shift: position p scored on frame p+2
        v2 = t2 != IGNORE_INDEX
        ce_plus2 = torch.nn.functional.cross_entropy(logits[v2], t2[v2])
        src = batch.subtalker_sources
        codes = batch.subtalker_codes[src]
        sl = subtalker_logits(talker, hidden[src], codes)
        per_head = torch.nn.functional.cross_entropy(sl.reshape(-1, 2048), codes[:, 1:].reshape(-1), reduction="none").view(-1, 15).mean(0)
    assert float(ce_next) < 0.5 * float(ce_plus2), (float(ce_next), float(ce_plus2))
    assert (per_head < math.log(2048)).all(), per_head


# ----------------------------------------------------------------------------- export / speaker lock


def test_multi_speaker_export_loads_and_speaks_each_name(trained, prepared3):
    from qwen_tts import Qwen3TTSModel

    out, summary = trained
    export = Path(summary["export"])
    cfg = json.loads((export / "config.json").read_text())
    assert cfg["tts_model_type"] == "custom_voice"
    spk = cfg["talker_config"]["spk_id"]
    assert spk == {"alice": 3000, "bob": 3001, "carol": 3002}
    assert not any(k.startswith("speaker_encoder.") for k in load_file(str(export / "model.safetensors")))
    vectors = load_file(str(prepared3 / "speakers.safetensors"))
    for name in spk:
        assert torch.equal(speaker_row(export, name), vectors[name].float())  # float32 export: exact
    tts = Qwen3TTSModel.from_pretrained(str(export), dtype=torch.float32)
    assert tts.get_supported_speakers() == ["alice", "bob", "carol"]
    for name in ("Alice", "bob", "carol"):
        torch.manual_seed(0)
        wavs, sr = tts.generate_custom_voice(text="Hello there.", language="English", speaker=name, max_new_tokens=40)
        assert sr == 24000 and wavs[0].size > 0 and torch.isfinite(torch.from_numpy(wavs[0])).all()


def test_metrics_and_wandb_offline_series(tmp_path, tiny_base, prepared3):
    from qwen_tts_ext.train.loop import train

    out = tmp_path / "wb"
    env_before = os.environ.get("WANDB_MODE")
    os.environ["WANDB_MODE"] = "offline"
    try:
        train(_cfg(*tiny_recipe(tiny_base, prepared3, out, "train.max_steps=4", "log.tracker=wandb",
                                "data.eval_fraction=0.3", "log.eval_every_steps=2", "log.log_samples=true",
                                "eval.max_frames=12", "eval.clips_per_speaker=1")))
    finally:
        if env_before is None:
            os.environ.pop("WANDB_MODE", None)
        else:
            os.environ["WANDB_MODE"] = env_before
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    train_steps = [l["step"] for l in lines if "train/loss" in l]
    assert train_steps == [1, 2, 3, 4]
    for key in ("train/talker_ce", "train/subtalker_ce", "train/lr", "train/grad_norm", "train/frames_per_s", "train/padding_efficiency"):
        assert all(key in l for l in lines if "train/loss" in l), key
    evals = [l for l in lines if "eval/talker_ce" in l]
    assert evals and all("eval/subtalker_ce_cb15" in l for l in evals)
    runs = list((out / "wandb").glob("offline-run-*"))
    assert runs and list(runs[0].glob("*.wandb"))
    # the base model at step 0, then every eval (steps 2 and 4): one clip per speaker each, no judges in this run
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["step-00000000", "step-00000002", "step-00000004"]
    assert len(list((out / "samples" / "step-00000004").glob("*.wav"))) == 3


def test_tensorboard_tracker_writes_events(tmp_path, tiny_base, prepared3):
    from qwen_tts_ext.train.loop import train

    out = tmp_path / "tb"
    train(_cfg(*tiny_recipe(tiny_base, prepared3, out, "train.max_steps=2", "log.tracker=tensorboard")))
    assert list((out / "logs").rglob("events.out.tfevents.*"))
    assert len([l for l in (out / "metrics.jsonl").read_text().splitlines() if "train/loss" in l]) == 2


def test_06b_variant_trains_through_text_projection(tmp_path, tiny_base_06b, corpus3, capsys):
    from qwen_tts_ext.train.loop import train

    prep = make_prepared(tmp_path / "prep06", tiny_base_06b, corpus3, instruct={"alice": "Speak slowly."})
    summary = train(_cfg(*tiny_recipe(tiny_base_06b, prep, tmp_path / "run06", "train.max_steps=6")))
    # stock qwen_tts drops instruct for 0.6B at inference, so training must not put the prefix in
    assert "ignores instruct" in capsys.readouterr().out
    assert math.isfinite(summary["final_loss"])
    assert (Path(summary["export"]) / "model.safetensors").is_file()


def test_existing_custom_voice_speaker_survives(tmp_path, tiny_custom_voice, tiny_base, corpus3):
    """Fine-tuning a CustomVoice checkpoint keeps its built-in speakers (rows and names)."""
    from qwen_tts import Qwen3TTSModel

    from qwen_tts_ext.train.loop import train

    # The speaker vectors come from a Base checkpoint's encoder (CustomVoice has none).
    prep = make_prepared(tmp_path / "prepcv", tiny_base, corpus3)
    summary = train(_cfg(*tiny_recipe(tiny_custom_voice, prep, tmp_path / "runcv", "train.max_steps=4")))
    export = Path(summary["export"])
    spk = json.loads((export / "config.json").read_text())["talker_config"]["spk_id"]
    assert spk["vivian"] == 3065 and spk["ryan"] == 3061 and spk["alice"] == 3000
    assert torch.equal(speaker_row(export, "vivian"), speaker_row(tiny_custom_voice, "vivian"))
    tts = Qwen3TTSModel.from_pretrained(str(export), dtype=torch.float32)
    wavs, _ = tts.generate_custom_voice(text="Hi.", language="English", speaker="vivian", max_new_tokens=8)
    assert wavs[0].size > 0


# ----------------------------------------------------------------------------- resume


def test_kill9_then_resume_matches_uninterrupted(tmp_path, tiny_base, prepared3):
    recipe = ["train.max_steps=12", "checkpoint.every_steps=3", "checkpoint.keep_last=5"]
    script = str(REPO / "finetuning" / "sft_12hz.py")
    env = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}
    full = tmp_path / "full"
    subprocess.run([sys.executable, script, *tiny_recipe(tiny_base, prepared3, full, *recipe)], check=True,
                   env=env, capture_output=True)
    cut = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, script, *tiny_recipe(tiny_base, prepared3, cut, *recipe)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (cut / "checkpoints" / "step-00000006").is_dir():
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (cut / "checkpoints" / "step-00000006").is_dir()
    assert not (cut / "export").exists(), "the run was not interrupted before the end"
    r = subprocess.run([sys.executable, script, *tiny_recipe(tiny_base, prepared3, cut, *recipe, "checkpoint.resume=true")],
                       env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert max_abs_diff_state(full / "export", cut / "export") == 0.0


# ----------------------------------------------------------------------------- bad config


@pytest.mark.parametrize(
    "extra, message",
    [
        (["train.lrr=1"], "unknown config key 'train.lrr'"),
        (["train.batch_size=two"], "expected an integer"),
        (["data.path=/nonexistent/prep"], "no such folder"),
        (["checkpoint.resume=true"], "holds no run to resume"),
    ],
)
def test_bad_config_exits_2_with_one_line(tmp_path, tiny_base, prepared3, extra, message):
    args = tiny_recipe(tiny_base, prepared3, tmp_path / "bad", *extra)
    r = subprocess.run([sys.executable, str(REPO / "finetuning" / "sft_12hz.py"), *args], capture_output=True, text=True)
    assert r.returncode == 2, r.stderr[-1500:]
    assert message in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "bad" / "export").exists()


def test_speaker_without_embedding_and_dim_mismatch(tmp_path, tiny_base, tiny_base_06b, prepared3):
    import shutil

    from safetensors.torch import save_file

    from qwen_tts_ext.errors import UserError
    from qwen_tts_ext.train.loop import train

    data = tmp_path / "prep"
    shutil.copytree(prepared3, data)
    vecs = load_file(str(data / "speakers.safetensors"))
    save_file({k: v for k, v in vecs.items() if k != "carol"}, str(data / "speakers.safetensors"))
    with pytest.raises(UserError, match="carol"):
        train(_cfg(*tiny_recipe(tiny_base, data, tmp_path / "r1", "train.max_steps=1")))
    save_file({k: torch.zeros(7) for k in vecs}, str(data / "speakers.safetensors"))
    with pytest.raises(UserError, match="hidden size"):
        train(_cfg(*tiny_recipe(tiny_base, data, tmp_path / "r2", "train.max_steps=1")))


def test_row_assignment_skips_used_rows_and_errors_past_the_end():
    from qwen_tts_ext.errors import UserError
    from qwen_tts_ext.train.speaker_lock import assign_rows

    assert assign_rows(["a", "B", "c"], {"x": 3001}, 3072) == [3000, 3002, 3003]
    assert assign_rows(["Vivian", "new"], {"vivian": 3065}, 3072) == [3065, 3000]
    with pytest.raises(UserError, match="no free codec-embedding row"):
        assign_rows([f"s{i}" for i in range(73)], {}, 3072)


def test_model_that_is_not_a_tts_checkpoint_is_a_one_line_error(tmp_path, tiny_llm, prepared3):
    r = subprocess.run([sys.executable, str(REPO / "finetuning" / "sft_12hz.py"),
                        *tiny_recipe(tiny_llm, prepared3, tmp_path / "x")], capture_output=True, text=True)
    assert r.returncode == 2 and "is a Qwen3 LLM, not a Qwen3-TTS checkpoint" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()[-1]) < 300

"""INT4 talker export on a tiny checkpoint fine-tuned on espeak-ng clips: format, AWQ vs RTN, folder, loading, speech."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from _quantize_helpers import GROUP, finetuned_tiny
from qwen_tts_ext.quantize.int4 import (
    Int4Linear, dequantize, effective_weight, pack_nibbles, quantize_weight, unpack_nibbles,
)

HELDOUT = 2


@pytest.fixture(scope="module")
def ft(tmp_path_factory, tiny_base, espeak_corpus):
    """(export, prepared): the tiny Base fine-tuned ~100 steps on the espeak-ng clips (custom_voice export)."""
    return finetuned_tiny(tmp_path_factory.mktemp("q-ft"), tiny_base, espeak_corpus)


def _quantize(ft, out: Path, *extra: str) -> dict:
    from qwen_tts_ext.config import load_config
    from qwen_tts_ext.quantize.config import QuantizeConfig
    from qwen_tts_ext.quantize.pipeline import quantize_checkpoint

    cfg = load_config(QuantizeConfig, None, [f"model={ft[0]}", f"calib={ft[1]}", f"output={out}",
                                             f"group_size={GROUP}", f"heldout_rows={HELDOUT}", "judges=[]", *extra])
    return quantize_checkpoint(cfg, progress=False)


@pytest.fixture(scope="module")
def awq_out(ft, tmp_path_factory):
    out = tmp_path_factory.mktemp("q-out") / "int4"
    return out, _quantize(ft, out, "method=awq")


# ----------------------------------------------------------------------------- format


def test_nibbles_round_trip_and_layout():
    q = torch.randint(0, 16, (5, 12), dtype=torch.uint8)
    p = pack_nibbles(q)
    assert p.shape == (5, 6) and p.dtype == torch.uint8
    assert torch.equal(p[:, 0], q[:, 0] | (q[:, 1] << 4))  # low nibble = even channel
    assert torch.equal(unpack_nibbles(p), q)


def test_int4_weight_reconstructs_and_awq_scale_moves_to_the_input():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(48, 128, generator=g)
    rtn = quantize_weight(w, 32)
    assert rtn.qweight.shape == (48, 64) and rtn.scales.shape == (48, 4) and rtn.zeros.shape == (48, 4)
    assert int(unpack_nibbles(rtn.qweight).max()) <= 15
    rel = float((effective_weight(rtn) - w).norm() / w.norm())
    assert 0.01 < rel < 0.15
    s = torch.rand(128, generator=g) + 0.5
    awq = quantize_weight(w, 32, s)
    assert torch.allclose(awq.act_scale, 1 / s)
    x = torch.randn(7, 128, generator=g)
    mod = Int4Linear(awq)
    assert torch.allclose(mod(x), x @ effective_weight(awq).T, atol=1e-4)
    assert torch.allclose(mod(x), (x / s) @ dequantize(awq).T, atol=1e-4)


def test_group_size_must_divide_the_width():
    with pytest.raises(ValueError, match="does not divide"):
        quantize_weight(torch.randn(4, 96), 64)


# ----------------------------------------------------------------------------- AWQ vs round-to-nearest


def test_awq_beats_round_to_nearest_on_the_same_data(awq_out):
    rep = awq_out[1]["report"]
    assert len(rep["layers"]) == 14  # 2 layers x q,k,v,o,gate,up,down
    for row in rep["layers"]:  # ratio 0 (= RTN) is in the search: never worse on its own rows
        assert row["sqnr_awq_db"] >= row["sqnr_rtn_db"] - 1e-9, row
    assert rep["mean_sqnr_awq_db"] > rep["mean_sqnr_rtn_db"] + 0.3
    assert sum(r["awq_ratio"] > 0 for r in rep["layers"]) >= 7  # most projections chose a real scale
    q = rep["quality"]
    assert q["awq"]["positions"] == q["rtn"]["positions"] > 50  # same held-out rows for both
    assert q["awq"]["ce_reference"] == q["rtn"]["ce_reference"]
    assert q["rtn"]["ce_increase"] > 0
    assert q["awq"]["ce_increase"] < q["rtn"]["ce_increase"]
    assert q["awq"]["kl"] < q["rtn"]["kl"]


# ----------------------------------------------------------------------------- the folder


def _raw(folder: Path, name: str, ck) -> bytes:
    loc = ck.location(name)
    with open(loc.file, "rb") as fh:
        fh.seek(loc.offset)
        return fh.read(loc.nbytes)


def test_unquantized_tensors_are_byte_identical(ft, awq_out):
    from qwen_tts_ext.checkpoint_io import LazyCheckpoint

    out, res = awq_out
    quantized = set(res["info"]["quantized"])
    with LazyCheckpoint(ft[0]) as src, LazyCheckpoint(out) as dst:
        assert set(dst.keys()) == set(src.keys()) - {f"{n}.weight" for n in quantized}
        for k in dst.keys():
            assert dst.dtype(k) == src.dtype(k) and dst.shape(k) == src.shape(k), k
            assert _raw(out, k, dst) == _raw(ft[0], k, src), k
    for f in sorted(Path(ft[0], "speech_tokenizer").rglob("*")):
        if f.is_file():
            twin = out / "speech_tokenizer" / f.relative_to(Path(ft[0], "speech_tokenizer"))
            assert hashlib.sha256(twin.read_bytes()).digest() == hashlib.sha256(f.read_bytes()).digest()


def test_provenance_card_report_and_sizes(ft, awq_out):
    out, res = awq_out
    info = json.loads((out / "quantization.json").read_text())
    assert info["group_size"] == GROUP and info["bits"] == 4 and info["method"] == "awq" and info["zero_point"]
    assert len(info["calibration"]["sha256"]) == 64 and info["calibration"]["heldout_rows"] == HELDOUT
    assert info["versions"]["torchao"] and info["versions"]["torch"]
    assert all(".mlp." in n or ".self_attn." in n for n in info["quantized"])
    assert json.loads((out / ".qwen-tts-ext.json").read_text())["command"] == "quantize"
    card = (out / "README.md").read_text()
    assert "apply_quantized" in card and info["calibration"]["sha256"] in card and f"4 / {GROUP}" in card
    assert "| awq |" in (out / "quantize_report.md").read_text()
    s = info["sizes"]
    assert s["projections_before"] / s["projections_after"] > 5  # float32 source: 8x less the scales
    assert s["weights_after"] < s["weights_before"]


def test_save_load_round_trips_exactly(ft, awq_out):
    """The engine's loader gives back the very codes written, and the held-out CE the command measured in memory."""
    from safetensors.torch import load_file

    from qwen_tts_ext.quantize.calibrate import codec0_logprobs, load_calibration
    from qwen_tts_ext.synthesis.engine import Synthesizer

    out, res = awq_out
    synth = Synthesizer.load(out)
    stored = load_file(str(out / "int4.safetensors"))
    for name in res["info"]["quantized"]:
        mod = synth.model.get_submodule(name)
        assert isinstance(mod, Int4Linear)
        for part in ("qweight", "scales", "zeros", "act_scale"):
            if f"{name}.{part}" in stored:
                assert torch.equal(getattr(mod, part), stored[f"{name}.{part}"]), (name, part)
    data = load_calibration(synth.model, synth.tts.processor.tokenizer, str(ft[1]), rows=128, heldout=HELDOUT,
                            batch_size=4, seed=0)
    assert data.sha256 == res["info"]["calibration"]["sha256"]
    lp, tg = codec0_logprobs(synth.model, data.heldout, data.speaker_vectors)
    ce = float(-lp.gather(1, tg[:, None]).mean())
    assert ce == pytest.approx(res["report"]["quality"]["awq"]["ce"], abs=1e-6)


def test_quantized_generation_runs_on_cpu_and_stops_within_the_cap(awq_out):
    from _synthesis_helpers import single_thread

    from qwen_tts_ext.synthesis.engine import SynthesisOptions, Synthesizer

    with single_thread():
        synth = Synthesizer.load(awq_out[0])
        assert "alice" in synth.speakers
        result = synth.synthesize("Hello there.", synth.voice(speaker="alice"),
                                  SynthesisOptions(seed=0, cap_margin=0.5, cap_slack_seconds=0.2))
    (seg,) = result.segments
    assert 0 < seg.frames <= seg.frame_cap
    assert result.audio.size > 0 and bool(torch.isfinite(torch.from_numpy(result.audio)).all())


def test_cli_rtn_with_8bit_text_embedding_and_code_predictor(ft, tmp_path, capsys):
    from qwen_tts_ext.quantize import load_tts
    from safetensors.torch import load_file

    from qwen_tts_ext.quantize.checkpoint import Int8Embedding, Int8Linear
    from qwen_tts_ext.quantize.cli import main

    out = tmp_path / "rtn-e8"
    rc = main(["--model", str(ft[0]), "--calib", str(ft[1]), "--output", str(out), "--method", "rtn",
               "--embed-8bit", "--code-predictor-8bit", "--heldout-rows", "0", f"group_size={GROUP}", "judges=[]"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert cap.out.strip().splitlines()[-1] == f"wrote {out}"
    rep = json.loads((out / "quantize_report.json").read_text())
    assert all(r["awq_ratio"] == 0 for r in rep["layers"]) and rep["quality"] == {}
    s = rep["sizes"]
    assert s["text_embedding_after"] < s["text_embedding_before"] / 3
    assert s["code_predictor_8bit_after"] < s["code_predictor_8bit_before"] / 3
    info = json.loads((out / "quantization.json").read_text())
    assert len(info["int8"]) == 23 and "code predictor" not in info["kept"] and "text embedding" not in info["kept"]
    tts = load_tts(out)
    emb = tts.model.get_submodule("talker.model.text_embedding")
    assert isinstance(emb, Int8Embedding)
    src = load_file(str(ft[0] / "model.safetensors"))
    with torch.no_grad():
        ref = torch.nn.Embedding.from_pretrained(src["talker.model.text_embedding.weight"])
        ids = torch.arange(0, 40)
        assert torch.allclose(emb(ids), ref(ids), atol=float(ref.weight.abs().max()) / 127)
        head = tts.model.get_submodule("talker.code_predictor.lm_head.3")
        assert isinstance(head, Int8Linear)
        x = torch.randn(5, head.in_features)
        w = src["talker.code_predictor.lm_head.3.weight"]
        assert torch.allclose(head(x), x @ w.T, atol=float((x.abs().sum(1).max() * w.abs().max()) / 127))
    from qwen_tts_ext.synthesis.engine import SynthesisOptions, Synthesizer

    synth = Synthesizer(tts)
    seg = synth.synthesize("Hi.", synth.voice(speaker="alice"), SynthesisOptions(cap_margin=0.5,
                                                                                 cap_slack_seconds=0.2)).segments[0]
    assert 0 < seg.frames <= seg.frame_cap
    # a second run over its own output needs --overwrite; with it, the folder is replaced
    assert main(["--model", str(ft[0]), "--calib", str(ft[1]), "--output", str(out), "--method", "rtn",
                 "--heldout-rows", "0", f"group_size={GROUP}", "judges=[]"]) == 2
    capsys.readouterr()


@pytest.mark.slow  # the model speaks 4 sentences twice (about 2 minutes on a busy 2-core machine)
def test_sentences_calibrate_without_a_dataset(ft, tmp_path, capsys):
    """No --calib: the float model speaks the sentences as a locked speaker; its codes are the calibration rows."""
    from qwen_tts_ext.quantize.cli import main

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Hello there.\nThe quick brown fox jumps over the lazy dog.\n\nOne, two, three.\n"
                       "We will meet again when the morning comes.\n")
    out = tmp_path / "sent"

    def argv(dest):
        return ["--model", str(ft[0]), "--sentences", str(prompts), "--speaker", "Alice", "--language", "english",
                "--output", str(dest), "--heldout-rows", "1", "max_frames=30", f"group_size={GROUP}", "judges=[]"]

    assert main(argv(out)) == 0, capsys.readouterr().err
    info = json.loads((out / "quantization.json").read_text())
    cal = info["calibration"]
    assert cal["rows"] == 3 and cal["heldout_rows"] == 1 and "spoken by the float model as Alice" in cal["data"]
    rep = json.loads((out / "quantize_report.json").read_text())
    assert rep["quality"]["awq"]["positions"] > 0 and rep["mean_sqnr_awq_db"] >= rep["mean_sqnr_rtn_db"]
    # the same sentences, seed and speaker give the same codes: the hash is reproducible
    assert main(argv(tmp_path / "sent2")) == 0
    assert json.loads((tmp_path / "sent2" / "quantization.json").read_text())["calibration"]["sha256"] == cal["sha256"]
    capsys.readouterr()


@pytest.mark.slow  # 3 sentences spoken twice plus silero-vad (about 2 minutes on a busy 2-core machine)
def test_judges_score_float_and_int4_renderings(ft, tmp_path):
    """--judges: the same sentences, seeds and speaker through the float and the int4 projections, judged offline."""
    res = _quantize(ft, tmp_path / "judged", "judges=[timing]", "speaker=bob", "language=english", "heldout_rows=0")
    j = res["report"]["judges"]
    assert j["speaker"] == "bob" and len(j["sentences"]) == 3
    assert set(j["frames"]) == {"float", "int4"} and all(f > 0 for f in j["frames"]["int4"])
    m = j["metrics"]
    assert m["stopped_by_eos"]["better"] == "higher" and m["stopped_by_eos"]["int4"] is not None
    assert m["duration_ratio"]["float"] is not None and m["duration_ratio"]["int4"] is not None
    assert "| stopped_by_eos |" in (tmp_path / "judged" / "quantize_report.md").read_text()

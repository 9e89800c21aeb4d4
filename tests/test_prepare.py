"""Data preparation core: audio decoding, rejects with reasons, codes, speaker vectors, output layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from _prep_helpers import make_mixed_corpus, make_ref_corpus, read_jsonl
from qwen_tts_ext.errors import UserError
from qwen_tts_ext.prep import PrepareConfig, prepare
from qwen_tts_ext.prep import audio as A
from qwen_tts_ext.prep.encode import padding_ratio, plan_batches
from qwen_tts_ext.prep.speakers import SpeakerEncoder, mean_embedding
from qwen_tts_ext.prepared import load_speakers

MAX_SECONDS = 8.0


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    return make_mixed_corpus(tmp_path_factory.mktemp("mixed"))


@pytest.fixture(scope="module")
def prepared(mixed, tiny_base, tmp_path_factory):
    manifest, _ = mixed
    out = tmp_path_factory.mktemp("prep") / "out"
    cfg = PrepareConfig(manifest=str(manifest), model=str(tiny_base), output=str(out), max_seconds=MAX_SECONDS,
                        shard_size=3, batch_seconds=12, progress=False)
    return prepare(cfg)


@pytest.fixture(scope="module")
def tokenizer(tiny_base):
    from qwen_tts import Qwen3TTSTokenizer

    return Qwen3TTSTokenizer.from_pretrained(str(tiny_base / "speech_tokenizer"))


@pytest.fixture(scope="module")
def spk_encoder(tiny_base):
    return SpeakerEncoder.from_checkpoint(tiny_base)


# --------------------------------------------------------------------------- audio


def test_load_audio_downmixes_and_resamples_48k_stereo_flac(tmp_path):
    import soxr

    sr = 48000
    t = np.arange(sr) / sr
    left = 0.5 * np.sin(2 * np.pi * 440 * t).astype(np.float32)
    right = 0.2 * np.sin(2 * np.pi * 1000 * t).astype(np.float32)
    sf.write(tmp_path / "s.flac", np.stack([left, right], 1), sr, subtype="PCM_24")
    wav = A.load_audio(tmp_path / "s.flac")
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert len(wav) == 24000
    src, _ = sf.read(tmp_path / "s.flac", dtype="float32")
    expected = soxr.resample(src.mean(axis=1).astype(np.float32), sr, 24000, quality="VHQ")
    np.testing.assert_allclose(wav, expected, atol=1e-6)
    # the 440 Hz tone survives, nothing above 12 kHz appears
    spec = np.abs(np.fft.rfft(wav))
    assert abs(np.argmax(spec) * 24000 / len(wav) - 440) < 2


def test_load_audio_is_peak_safe_and_reads_bytes(tmp_path):
    loud = np.full(2400, 1.5, dtype=np.float32)
    sf.write(tmp_path / "loud.wav", loud, 24000, subtype="FLOAT")
    wav = A.load_audio(tmp_path / "loud.wav")
    assert np.max(np.abs(wav)) <= A.PEAK_LIMIT + 1e-6
    data = (tmp_path / "loud.wav").read_bytes()
    np.testing.assert_array_equal(A.load_audio(data), wav)


@pytest.mark.parametrize("case, code", [("missing", "missing_file"), ("empty", "empty_audio"),
                                        ("corrupt", "unreadable"), ("nan", "nan_or_inf")])
def test_load_audio_errors_carry_reason_codes(tmp_path, case, code):
    path = tmp_path / f"{case}.wav"
    if case == "empty":
        path.write_bytes(b"")
    elif case == "corrupt":
        path.write_bytes(b"not audio at all" * 10)
    elif case == "nan":
        sf.write(path, np.array([0.1, np.inf, 0.2] * 100, dtype=np.float32), 16000, subtype="FLOAT")
    with pytest.raises(A.AudioError) as exc:
        A.load_audio(path)
    assert exc.value.code == code and exc.value.message


def test_energy_trim_cuts_edge_silence_only():
    sr = 24000
    tone = 0.3 * np.sin(2 * np.pi * 200 * np.arange(sr) / sr).astype(np.float32)
    gap = np.zeros(sr // 2, dtype=np.float32)
    wav = np.concatenate([np.zeros(sr, np.float32), tone, gap, tone, np.zeros(sr, np.float32)])
    out = A.trim_energy(wav, sr, margin_s=0.1)
    assert abs(len(out) / sr - (2.5 + 0.2)) < 0.05  # both tones + interior gap + 2 margins


def test_vad_trim_keeps_speech(tmp_path):
    from _prep_helpers import speak

    speech, sr = speak("Hello there, this is a test of voice activity.", tmp_path / "t.wav")
    speech = A.resample(speech, sr, 24000)
    wav = np.concatenate([np.zeros(24000, np.float32), speech, np.zeros(24000, np.float32)])
    out = A.trim_vad(wav, 24000, margin_s=0.1)
    assert len(out) < len(wav) - 24000  # at least a second of silence gone
    assert len(out) > 0.8 * len(speech)
    with pytest.raises(A.AudioError) as exc:
        A.trim_vad(np.zeros(48000, np.float32), 24000)
    assert exc.value.code == "no_speech"


def test_plan_batches_reduce_padding_and_cover_every_clip():
    rng = np.random.default_rng(0)
    lengths = [int(x) for x in rng.uniform(0.5, 20, 200) * 24000]
    batches = plan_batches(lengths, batch_seconds=60, max_batch=32)
    assert sorted(i for b in batches for i in b) == list(range(200))
    for b in batches:
        assert len(b) <= 32
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 60 * 24000
    fixed = [list(range(i, min(i + 32, 200))) for i in range(0, 200, 32)]  # official: file order, 32 per batch
    assert padding_ratio(lengths, batches) < 0.1 < padding_ratio(lengths, fixed)


# --------------------------------------------------------------------------- end to end


def test_every_bad_row_lands_in_rejects_with_its_reason(mixed, prepared):
    _, expect = mixed
    rejects = {r["row"]: r for r in read_jsonl(prepared / "rejects.jsonl") if r["kind"] == "clip"}
    assert {row: r["reason"] for row, r in rejects.items()} == {k: v for k, v in expect.items() if v}
    for r in rejects.values():
        assert r["message"] and r["path"] and "line" in r
    stats = json.loads((prepared / "stats.json").read_text())
    good = [k for k, v in expect.items() if v is None]
    assert stats["kept"] == len(good) and stats["rejected"] == len(rejects)
    assert stats["rejected_by_reason"]["duplicate"] == 2
    assert stats["warnings"]["clipping"] == 1  # clipping warns, never rejects
    assert stats["speakers"]["alice"]["clips"] == 3 and stats["speakers"]["bob"]["clips"] == 2


def test_dataset_columns_and_normalised_values(mixed, prepared):
    import datasets

    ds = datasets.load_from_disk(str(prepared / "dataset"))
    for col in ("id", "text", "codes", "num_frames", "speaker", "language", "instruct", "duration", "audio_path"):
        assert col in ds.column_names
    assert len(set(ds["id"])) == len(ds)
    rows = ds.to_list()
    assert [r["speaker"] for r in rows] == ["alice", "bob", "alice", "bob", "alice"]  # lower-cased
    assert [r["language"] for r in rows] == ["english", "german", "french", "spanish", "auto"]  # "en" -> english
    assert rows[2]["instruct"] == "cheerful" and rows[0]["instruct"] == ""
    for r in rows:
        codes = np.array(r["codes"])
        assert codes.shape == (r["num_frames"], 16)
        assert codes.min() >= 0 and codes.max() < 2048
        assert r["num_frames"] == int(np.ceil(r["duration"] * 12.5 - 1e-6))


def test_codes_equal_direct_tokenizer_encode(prepared, tokenizer):
    import datasets

    ds = datasets.load_from_disk(str(prepared / "dataset"))
    for r in ds:
        wav = A.load_audio(r["audio_path"])
        assert abs(len(wav) / 24000 - r["duration"]) < 1e-4
        ours = torch.tensor(r["codes"])
        direct = tokenizer.encode(A.pad_to_frames(wav), sr=24000).audio_codes[0].cpu()
        assert torch.equal(ours, direct), r["id"]
        # without frame padding only the last (partial) frame may differ
        unpadded = tokenizer.encode(wav, sr=24000).audio_codes[0].cpu()
        assert unpadded.shape == ours.shape
        assert torch.equal(unpadded[:-1], ours[:-1])


def test_speaker_vectors_are_float32_means_of_clip_embeddings(prepared, spk_encoder):
    import datasets

    ds = datasets.load_from_disk(str(prepared / "dataset"))
    vectors = load_speakers(prepared)
    meta = json.loads((prepared / "speakers.json").read_text())
    assert set(vectors) == {"alice", "bob"}
    for name in vectors:
        clips = [r["audio_path"] for r in ds if r["speaker"] == name]
        assert meta[name]["clips"] == clips and meta[name]["num_clips"] == len(clips)
        expected = mean_embedding([spk_encoder.embed(A.load_audio(c)) for c in clips])
        assert vectors[name].dtype == np.float32 and vectors[name].shape == (meta[name]["dim"],)
        np.testing.assert_array_equal(vectors[name], expected)
    assert not np.allclose(vectors["alice"], vectors["bob"])


def test_upstream_jsonl_matches_dataset(prepared):
    import datasets

    ds = datasets.load_from_disk(str(prepared / "dataset"))
    lines = read_jsonl(prepared / "train_with_codes.jsonl")
    assert len(lines) == len(ds)
    for line, r in zip(lines, ds):
        assert line["audio"] == r["audio_path"] and line["text"] == r["text"]
        assert line["audio_codes"] == r["codes"]
        assert line["ref_audio"] and line["speaker"] == r["speaker"] and line["language"] == r["language"]
    cfg = json.loads((prepared / "prepare_config.json").read_text())
    assert cfg["fingerprint"] and cfg["identity"]["tokenizer"]["weights"]["size"] > 0


def test_rerun_is_a_no_op_and_a_different_job_is_refused(mixed, prepared, tiny_base, tmp_path):
    import shutil

    manifest, _ = mixed
    copy = tmp_path / "copy"  # work on a copy: other tests read `prepared`
    shutil.copytree(prepared, copy)
    before = (copy / "prepare_config.json").stat().st_mtime_ns
    same = PrepareConfig(manifest=str(manifest), model=str(tiny_base), output=str(copy), max_seconds=MAX_SECONDS,
                         shard_size=5, num_workers=1, progress=False)  # compute-only settings may differ
    assert prepare(same) == copy
    assert (copy / "prepare_config.json").stat().st_mtime_ns == before
    other = PrepareConfig(manifest=str(manifest), model=str(tiny_base), output=str(copy), max_seconds=20.0,
                          progress=False)
    with pytest.raises(UserError, match="different inputs or settings"):
        prepare(other)
    assert (copy / "prepare_config.json").stat().st_mtime_ns == before
    other.overwrite = True  # --overwrite replaces it (atomically)
    assert prepare(other) == copy
    assert json.loads((copy / "prepare_config.json").read_text())["config"]["max_seconds"] == 20.0
    assert json.loads((copy / "stats.json").read_text())["kept"] == 6  # the 9.5 s clip is no longer too long


# --------------------------------------------------------------------------- speaker encoder


def test_speaker_encoder_equals_stock_extract_speaker_embedding(tiny_base, spk_encoder, tmp_path):
    from qwen_tts import Qwen3TTSModel

    from _prep_helpers import speak

    stock = Qwen3TTSModel.from_pretrained(str(tiny_base), dtype=torch.float32).model
    speech, sr = speak("Reference voice for the speaker encoder.", tmp_path / "t.wav")
    wav = A.resample(speech, sr, 24000)
    ref = stock.extract_speaker_embedding(wav, 24000).float().numpy()
    ours = spk_encoder.embed(wav)
    assert ours.dtype == np.float32 and ours.shape == ref.shape == (64,)
    # Equal up to float32 rounding: the stock result itself moves by ~1e-6 with the memory alignment
    # of its weights (unaligned slices of the mmapped file make oneDNN pick other kernels), and we
    # run the convolutions without oneDNN (see SpeakerEncoder.from_checkpoint).
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)
    # Bit for bit with the same kernels: stock weights as real tensors, both with and without oneDNN.
    with torch.no_grad():
        for prm in stock.speaker_encoder.parameters():
            prm.data = prm.data.clone()
    before = torch._C._get_mkldnn_enabled()
    try:
        torch._C._set_mkldnn_enabled(False)
        np.testing.assert_array_equal(ours, stock.extract_speaker_embedding(wav, 24000).float().numpy())
    finally:
        torch._C._set_mkldnn_enabled(before)
    with_onednn = SpeakerEncoder.from_checkpoint(tiny_base, use_mkldnn=True).embed(wav)
    np.testing.assert_array_equal(with_onednn, stock.extract_speaker_embedding(wav, 24000).float().numpy())
    # only the encoder was built: its parameter count equals the stock submodule's
    n = sum(p.numel() for p in spk_encoder.module.parameters())
    assert n == sum(p.numel() for p in stock.speaker_encoder.parameters())


def test_custom_voice_has_no_encoder_and_says_how_to_borrow(tiny_custom_voice):
    with pytest.raises(UserError, match="--speaker-encoder"):
        SpeakerEncoder.from_checkpoint(tiny_custom_voice)


def test_custom_voice_target_borrows_base_encoder(tmp_path, tiny_custom_voice, tiny_base):
    from qwen_tts_ext.testing.speech import make_corpus

    manifest = make_corpus(tmp_path / "c", speakers=("alice",), clips_per_speaker=2)
    cfg = PrepareConfig(manifest=str(manifest), model=str(tiny_custom_voice), output=str(tmp_path / "o"),
                        progress=False)
    with pytest.raises(UserError, match="--speaker-encoder"):
        prepare(cfg)
    assert not (tmp_path / "o").exists()
    cfg.speaker_encoder = str(tiny_base)
    out = prepare(cfg)
    assert set(load_speakers(out)) == {"alice"}


def test_ref_mode_uses_reference_clips_then_all(tmp_path, tiny_base, spk_encoder):
    manifest = make_ref_corpus(tmp_path / "c", n=3)
    base = dict(manifest=str(manifest), model=str(tiny_base), progress=False)
    out_ref = prepare(PrepareConfig(output=str(tmp_path / "ref"), ref_mode="ref", **base))
    meta = json.loads((out_ref / "speakers.json").read_text())
    vec = load_speakers(out_ref)
    refs = sorted(str((manifest.parent / f"wavs/alice_ref_{j}.wav").resolve()) for j in range(2))
    assert meta["alice"]["clips"] == refs and meta["alice"]["source"] == "ref_audio"
    np.testing.assert_array_equal(vec["alice"], mean_embedding([spk_encoder.embed(A.load_audio(p)) for p in refs]))
    assert meta["bob"]["source"] == "clips" and meta["bob"]["num_clips"] == 3  # no refs: falls back to its clips

    out_all = prepare(PrepareConfig(output=str(tmp_path / "all"), ref_mode="all", **base))
    meta_all = json.loads((out_all / "speakers.json").read_text())
    clips = [str((manifest.parent / f"wavs/alice_{i}.wav").resolve()) for i in range(3)]
    assert meta_all["alice"]["clips"] == clips
    np.testing.assert_array_equal(load_speakers(out_all)["alice"],
                                  mean_embedding([spk_encoder.embed(A.load_audio(p)) for p in clips]))

"""Data preparation inputs and CLI: CSV, HF datasets (audiofolder, saved with embedded bytes, parquet),
--shard slices, --dry-run, and one-line errors (exit 2) for top-level mistakes."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from _prep_helpers import read_jsonl
from qwen_tts_ext.prep import PrepareConfig, prepare
from qwen_tts_ext.prep import audio as A
from qwen_tts_ext.errors import UserError
from qwen_tts_ext.prep.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from qwen_tts_ext.testing.speech import make_corpus

    return make_corpus(tmp_path_factory.mktemp("corpus"), speakers=("alice", "bob"), clips_per_speaker=2)


@pytest.fixture(scope="module")
def reference(corpus, tiny_base, tmp_path_factory):
    """The JSONL run every other input form must reproduce."""
    out = tmp_path_factory.mktemp("ref") / "out"
    return prepare(PrepareConfig(manifest=str(corpus), model=str(tiny_base), output=str(out), progress=False))


def _rows(out: Path) -> list[dict]:
    import datasets

    return datasets.load_from_disk(str(out / "dataset")).to_list()


def _codes_by_text(out: Path) -> dict[str, list]:
    return {r["text"] + "|" + r["speaker"]: r["codes"] for r in _rows(out)}


# --------------------------------------------------------------------------- input forms


def test_csv_manifest_gives_same_dataset(corpus, reference, tiny_base, tmp_path):
    rows = read_jsonl(corpus)
    path = corpus.parent / "manifest.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["audio", "text", "speaker", "language"])
        w.writeheader()
        w.writerows(rows)
    out = prepare(PrepareConfig(manifest=str(path), model=str(tiny_base), output=str(tmp_path / "o"), progress=False))
    assert _rows(out) == _rows(reference)


def test_audiofolder_with_renamed_text_column(corpus, reference, tiny_base, tmp_path):
    import shutil

    folder = tmp_path / "af"
    folder.mkdir()
    meta = []
    for r in read_jsonl(corpus):
        name = Path(r["audio"]).name
        shutil.copy(corpus.parent / r["audio"], folder / name)
        meta.append({"file_name": name, "transcription": r["text"], "speaker": r["speaker"]})
    with open(folder / "metadata.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["file_name", "transcription", "speaker"])
        w.writeheader()
        w.writerows(meta)
    cfg = PrepareConfig(manifest=str(folder), model=str(tiny_base), output=str(tmp_path / "o"),
                        text_column="transcription", progress=False)
    out = prepare(cfg)
    assert _codes_by_text(out) == _codes_by_text(reference)
    assert all(Path(r["audio_path"]).parent == folder.resolve() for r in _rows(out))


def test_saved_dataset_with_embedded_bytes_and_parquet(corpus, reference, tiny_base, tmp_path, tiny_base_tokenizer):
    import datasets
    import pyarrow as pa

    recs = read_jsonl(corpus)
    # How hub audio datasets store audio: struct<bytes, path> under an Audio feature (built with
    # pyarrow because `datasets` needs torchcodec to *encode* audio).
    audio = pa.array([{"bytes": (corpus.parent / r["audio"]).read_bytes(), "path": None} for r in recs],
                     type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    table = pa.table({"audio": audio, "text": [r["text"] for r in recs], "speaker": [r["speaker"] for r in recs]})
    features = datasets.Features({"audio": datasets.Audio(), "text": datasets.Value("string"),
                                  "speaker": datasets.Value("string")})
    ds = datasets.Dataset(table, info=datasets.DatasetInfo(features=features))
    ds.save_to_disk(str(tmp_path / "saved"))
    out = prepare(PrepareConfig(manifest=str(tmp_path / "saved"), model=str(tiny_base), output=str(tmp_path / "o1"),
                                progress=False))
    assert _codes_by_text(out) == _codes_by_text(reference)
    for r in _rows(out):  # bytes had no path: the prepared 24 kHz audio is stored in the output
        path = Path(r["audio_path"])
        assert path.is_file() and path.parent == out / "audio"
        wav = A.load_audio(path)
        direct = tiny_base_tokenizer.encode(A.pad_to_frames(wav), sr=24000).audio_codes[0]
        assert torch.equal(direct, torch.tensor(r["codes"]))
    ds.to_parquet(str(tmp_path / "data.parquet"))
    out2 = prepare(PrepareConfig(manifest=str(tmp_path / "data.parquet"), model=str(tiny_base),
                                 output=str(tmp_path / "o2"), progress=False))
    assert _codes_by_text(out2) == _codes_by_text(reference)


@pytest.fixture(scope="module")
def tiny_base_tokenizer(tiny_base):
    from qwen_tts import Qwen3TTSTokenizer

    return Qwen3TTSTokenizer.from_pretrained(str(tiny_base / "speech_tokenizer"))


def test_shard_slices_concatenate_and_merge_to_the_full_dataset(corpus, reference, tiny_base, tmp_path):
    from qwen_tts_ext.prepared import load_speakers

    parts, dirs = [], []
    for i in (1, 0):  # order of the runs does not matter
        dirs.append(prepare(PrepareConfig(manifest=str(corpus), model=str(tiny_base), shard=f"{i}/2",
                                          output=str(tmp_path / f"part{i}"), progress=False)))
    for d in reversed(dirs):
        parts += _rows(d)
    assert parts == _rows(reference)
    assert len(_rows(dirs[0])) == 2 and len(_rows(dirs[1])) == 2
    # merging the slices gives the unsplit dataset, speaker vectors included (bit for bit)
    assert main(["--merge", str(dirs[0]), str(dirs[1]), "--output", str(tmp_path / "merged"), "--quiet"]) == 0
    merged = tmp_path / "merged"
    assert _rows(merged) == _rows(reference)
    ref_vec, vec = load_speakers(reference), load_speakers(merged)
    assert set(vec) == set(ref_vec)
    for name in vec:
        np.testing.assert_array_equal(vec[name], ref_vec[name])
    assert json.loads((merged / "speakers.json").read_text()) == json.loads((reference / "speakers.json").read_text())
    assert (merged / "train_with_codes.jsonl").read_text() == (reference / "train_with_codes.jsonl").read_text()
    assert json.loads((merged / "stats.json").read_text())["kept"] == 4
    with pytest.raises(UserError, match="do not tile"):
        from qwen_tts_ext.prep.merge import merge_prepared

        merge_prepared([dirs[1], dirs[1]], tmp_path / "bad")


def test_dry_run_reports_without_encoding_then_real_run_replaces_it(corpus, tiny_base, tmp_path):
    manifest = tmp_path / "m.jsonl"
    rows = read_jsonl(corpus)
    for r in rows:
        r["audio"] = str(corpus.parent / r["audio"])
    rows.append({"audio": str(tmp_path / "gone.wav"), "text": "missing"})
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "o"
    assert main(["--manifest", str(manifest), "--model", str(tiny_base), "--output", str(out), "--dry-run",
                 "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [".qwen-tts-ext.json", "prepare_config.json", "rejects.jsonl",
                                                     "stats.json"]
    assert [r["reason"] for r in read_jsonl(out / "rejects.jsonl")] == ["missing_file"]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["dry_run"] is True and stats["kept"] == 4 and stats["hours"] > 0
    assert main(["--manifest", str(manifest), "--model", str(tiny_base), "--output", str(out), "--quiet"]) == 0
    assert (out / "dataset").is_dir() and len(_rows(out)) == 4


def test_trim_energy_cuts_edge_silence_in_the_pipeline(corpus, tiny_base, tmp_path):
    import soundfile as sf

    first = read_jsonl(corpus)[0]
    wav, sr = sf.read(corpus.parent / first["audio"], dtype="float32")
    pad = np.zeros(2 * sr, dtype=np.float32)
    sf.write(tmp_path / "padded.wav", np.concatenate([pad, wav, pad]), sr)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"audio": "padded.wav", "text": first["text"]}) + "\n")
    raw = _rows(prepare(PrepareConfig(manifest=str(manifest), model=str(tiny_base), output=str(tmp_path / "raw"),
                                      progress=False)))[0]
    cut = _rows(prepare(PrepareConfig(manifest=str(manifest), model=str(tiny_base), output=str(tmp_path / "cut"),
                                      trim="energy", progress=False)))[0]
    speech = len(wav) / sr
    assert abs(raw["duration"] - (speech + 4)) < 0.01
    assert speech - 0.3 < cut["duration"] < speech + 0.25  # edges cut, 0.1 s margins kept
    assert cut["num_frames"] < raw["num_frames"]


def test_clip_too_short_for_the_models_is_rejected_not_fatal(tmp_path, tiny_base):
    import soundfile as sf

    t = np.arange(24000) / 24000
    sf.write(tmp_path / "blip.wav", (0.3 * np.sin(2 * np.pi * 300 * t[:480])).astype(np.float32), 24000)
    sf.write(tmp_path / "tone.wav", (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), 24000)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"audio": "blip.wav", "text": "blip"}) + "\n"
                        + json.dumps({"audio": "tone.wav", "text": "tone"}) + "\n")
    out = prepare(PrepareConfig(manifest=str(manifest), model=str(tiny_base), output=str(tmp_path / "o"),
                                min_seconds=0.0, progress=False))
    assert [r["reason"] for r in read_jsonl(out / "rejects.jsonl")] == ["embed_failed"]
    assert [r["text"] for r in _rows(out)] == ["tone"]


# --------------------------------------------------------------------------- top-level errors


def _err(capsys, argv) -> str:
    code = main(argv + ["--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_missing_manifest(capsys, tmp_path, tiny_base):
    err = _err(capsys, ["--manifest", str(tmp_path / "nope.jsonl"), "--model", str(tiny_base),
                        "--output", str(tmp_path / "o")])
    assert "does not exist" in err and not (tmp_path / "o").exists()


def test_unknown_column(capsys, tmp_path, corpus, tiny_base):
    err = _err(capsys, ["--manifest", str(corpus), "--model", str(tiny_base), "--output", str(tmp_path / "o"),
                        "--text-column", "transcript"])
    assert "'transcript'" in err and "--text-column" in err and not (tmp_path / "o").exists()
    err = _err(capsys, ["--manifest", str(corpus), "--model", str(tiny_base), "--output", str(tmp_path / "o"),
                        "--speaker-column", "voice"])
    assert "'voice'" in err


def test_unreadable_model_path(capsys, tmp_path, corpus):
    err = _err(capsys, ["--manifest", str(corpus), "--model", str(tmp_path / "no_model"),
                        "--output", str(tmp_path / "o")])
    assert "no_model" in err and not (tmp_path / "o").exists()
    (tmp_path / "empty_model").mkdir()
    err = _err(capsys, ["--manifest", str(corpus), "--model", str(tmp_path / "empty_model"),
                        "--output", str(tmp_path / "o")])
    assert "config.json" in err


def test_output_holding_other_data_is_refused(capsys, tmp_path, corpus, tiny_base, reference):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    err = _err(capsys, ["--manifest", str(corpus), "--model", str(tiny_base), "--output", str(tmp_path / "busy")])
    assert "not written by" in err and (tmp_path / "busy" / "notes.txt").read_text() == "mine"
    # a prepared dataset of other settings
    err = _err(capsys, ["--manifest", str(corpus), "--model", str(tiny_base), "--output", str(reference),
                        "max_seconds=12"])
    assert "different inputs or settings" in err


def test_all_rows_rejected_is_an_error_with_the_report(capsys, tmp_path, tiny_base):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"audio": "a.wav", "text": "x"}) + "\n" + json.dumps({"audio": "b.wav", "text": ""}) + "\n")
    err = _err(capsys, ["--manifest", str(manifest), "--model", str(tiny_base), "--output", str(tmp_path / "o")])
    assert "no usable clips" in err and "missing_file" in err and "rejects.jsonl" in err
    assert not (tmp_path / "o").exists()
    report = Path(err.rsplit("see ", 1)[1])
    assert sorted(r["reason"] for r in read_jsonl(report)) == ["empty_text", "missing_file"]


def test_bad_settings(capsys, tmp_path, corpus, tiny_base):
    base = ["--manifest", str(corpus), "--model", str(tiny_base), "--output", str(tmp_path / "o")]
    assert "0 <= i < n" in _err(capsys, base + ["--shard", "2/2"])
    assert "min_seconds" in _err(capsys, base + ["min_seconds=40"])
    assert "did you mean" in _err(capsys, base + ["max_second=10"])
    assert "trim" in _err(capsys, base + ["--trim", "loud"])
    assert not (tmp_path / "o").exists()


def test_launcher_script_exit_code_and_help(tmp_path):
    script = str(REPO / "finetuning/prepare_data.py")
    r = subprocess.run([sys.executable, script, "--manifest", str(tmp_path / "x.jsonl"), "--model", "m",
                        "--output", str(tmp_path / "o")], capture_output=True, text=True, cwd=str(tmp_path))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("error: ") and "Traceback" not in r.stderr
    h = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True)
    assert h.returncode == 0 and "--dry-run" in h.stdout and "rejects.jsonl" in h.stdout

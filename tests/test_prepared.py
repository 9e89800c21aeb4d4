"""The prep -> train file format (qwen_tts_ext.prepared): round trip, int16 codes, the version, column and code
checks (one line naming the row), format-1 folders, speaker files, and training without the prep package."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from qwen_tts_ext.constants import CODEBOOK_SIZE, NUM_CODE_GROUPS
from qwen_tts_ext.errors import UserError
from qwen_tts_ext.prepared import (COLUMNS, FORMAT_VERSION, META, Rows, concat_prepared, load_speakers,
                                   read_prepared, save_speakers, write_meta, write_prepared)

ROOT = Path(__file__).resolve().parents[1]


def _data(n=5, seed=0):
    rng = np.random.default_rng(seed)
    codes = [rng.integers(0, CODEBOOK_SIZE, size=(int(rng.integers(1, 30)), NUM_CODE_GROUPS)) for _ in range(n)]
    codes[0][0, 0], codes[-1][-1, -1] = 0, CODEBOOK_SIZE - 1  # the range's ends
    records = [{"id": f"{i:06d}_clip{i}", "text": f"text {i}", "num_frames": len(c),
                "speaker": "alice" if i % 2 else "bob", "language": "english", "instruct": "" if i % 3 else "calm",
                "duration": len(c) * 0.08, "audio_path": f"/a/clip{i}.wav", "ref_audio": ""} for i, c in enumerate(codes)]
    return records, codes


def _write(folder: Path, records, codes, version=None) -> Path:
    folder.mkdir(parents=True)
    write_prepared(folder, records, codes, progress=False)
    write_meta(folder, {"fingerprint": "x", "dry_run": False})
    if version is not None:
        meta = json.loads((folder / META).read_text())
        (folder / META).write_text(json.dumps({**meta, "format_version": version}))
    return folder


def _write_v1(folder: Path, records, codes) -> Path:
    """A format-1 folder exactly as the previous prep wrote it (prep/assemble.py save_dataset, 2026-11)."""
    import datasets
    import pyarrow as pa

    offsets = np.zeros(len(codes) + 1, dtype=np.int32)
    offsets[1:] = np.cumsum([c.shape[0] for c in codes])
    flat = np.concatenate(codes).astype(np.int32).reshape(-1)
    frames = pa.FixedSizeListArray.from_arrays(pa.array(flat, type=pa.int32()), 16)
    table = pa.table({
        "id": pa.array([r["id"] for r in records], pa.string()),
        "text": pa.array([r["text"] for r in records], pa.string()),
        "codes": pa.ListArray.from_arrays(pa.array(offsets, type=pa.int32()), frames),
        "num_frames": pa.array([r["num_frames"] for r in records], pa.int32()),
        **{c: pa.array([r[c] for r in records], pa.string()) for c in ("speaker", "language", "instruct")},
        "duration": pa.array([r["duration"] for r in records], pa.float32()),
        **{c: pa.array([r[c] for r in records], pa.string()) for c in ("audio_path", "ref_audio")},
    })
    features = datasets.Features({
        "id": datasets.Value("string"), "text": datasets.Value("string"),
        "codes": datasets.List(datasets.List(datasets.Value("int32"), length=16)),
        "num_frames": datasets.Value("int32"), "speaker": datasets.Value("string"),
        "language": datasets.Value("string"), "instruct": datasets.Value("string"),
        "duration": datasets.Value("float32"), "audio_path": datasets.Value("string"),
        "ref_audio": datasets.Value("string"),
    })
    info = datasets.DatasetInfo(features=features, description="qwen-tts-ext prepared 12 Hz codes")
    folder.mkdir(parents=True)
    datasets.Dataset(table, info=info).save_to_disk(str(folder / "dataset"))
    (folder / META).write_text(json.dumps({"format_version": 1, "fingerprint": "x", "dry_run": False}))
    return folder


def _one_line(exc_info) -> str:
    problems = exc_info.value.problems
    assert len(problems) == 1 and "\n" not in problems[0], problems
    return problems[0]


def _assert_equal(ds, records, codes):
    assert len(ds) == len(records)
    rows = Rows(ds)
    for i, (rec, c) in enumerate(zip(records, codes)):
        row = ds[i]
        for col in COLUMNS:
            if col == "codes":
                np.testing.assert_array_equal(np.array(row["codes"]), c)
            elif col == "duration":
                assert row[col] == pytest.approx(rec[col], rel=1e-6)
            else:
                assert row[col] == rec[col], col
        fast = rows[i]
        assert fast["codes"].dtype == np.int64 and fast["codes"].shape == (len(c), NUM_CODE_GROUPS)
        np.testing.assert_array_equal(fast["codes"], c)
        assert (fast["text"], fast["speaker"], fast["instruct"]) == (rec["text"], rec["speaker"], rec["instruct"])


def test_round_trip_and_codes_are_int16_on_disk(tmp_path):
    import pyarrow as pa

    records, codes = _data()
    folder = _write(tmp_path / "p", records, codes)
    ds = read_prepared(folder)
    _assert_equal(ds, records, codes)
    assert ds.data.column("codes").type == pa.list_(pa.list_(pa.int16(), NUM_CODE_GROUPS))
    assert ds.features["codes"].feature.feature.dtype == "int16"
    assert json.loads((folder / META).read_text())["format_version"] == FORMAT_VERSION
    assert ds.info.version.major == FORMAT_VERSION
    _assert_equal(read_prepared(folder / "dataset"), records, codes)  # the dataset folder itself


def test_format_1_folder_loads_with_the_same_values_and_merges_to_int16(tmp_path):
    records, codes = _data()
    v1 = _write_v1(tmp_path / "v1", records, codes)
    _assert_equal(read_prepared(v1), records, codes)
    ds = concat_prepared([v1, _write(tmp_path / "v2", records, codes)], tmp_path / "merged", progress=False)
    merged = read_prepared(tmp_path / "merged")
    assert merged.features == ds.features and merged.features["codes"].feature.feature.dtype == "int16"
    _assert_equal(merged, records + records, codes + codes)


def test_newer_format_refused_in_one_line_naming_it(tmp_path):
    records, codes = _data()
    newer = FORMAT_VERSION + 1
    folder = _write(tmp_path / "p", records, codes, version=newer)
    with pytest.raises(UserError) as e:
        read_prepared(folder)
    assert f"format {newer}" in _one_line(e) and str(folder) in _one_line(e)
    # a dataset folder moved away from its prepare_config.json still says its format
    import datasets

    ds = datasets.load_from_disk(str(folder / "dataset"))
    ds.info.version = datasets.Version(f"{newer}.0.0")
    ds.save_to_disk(str(tmp_path / "moved"))
    with pytest.raises(UserError) as e:
        read_prepared(tmp_path / "moved")
    assert f"format {newer}" in _one_line(e)


@pytest.mark.parametrize("bad", [CODEBOOK_SIZE, -1, 3072])
def test_out_of_range_code_refused_naming_the_row(tmp_path, bad):
    records, codes = _data()
    bad_codes = [c.copy() for c in codes]
    bad_codes[3][-1, 5] = bad
    _write(tmp_path / "a", records, codes)
    _write(tmp_path / "b", records, bad_codes)
    with pytest.raises(UserError) as e:
        read_prepared(tmp_path / "b")
    line = _one_line(e)
    assert "row 3 (id 000003_clip3)" in line and f"code {bad}" in line
    # in a dataset of several chunks (shards) the row counts from the first chunk
    import datasets
    import pyarrow as pa

    tables = [datasets.load_from_disk(str(tmp_path / x / "dataset")).data.table for x in "ab"]
    datasets.Dataset(pa.concat_tables(tables)).save_to_disk(str(tmp_path / "two"), num_shards=2)
    assert datasets.load_from_disk(str(tmp_path / "two")).data.column("codes").num_chunks == 2
    with pytest.raises(UserError) as e:
        read_prepared(tmp_path / "two")
    assert f"row {len(records) + 3} " in _one_line(e)


def test_wrong_code_group_count_and_empty_rows_refused(tmp_path):
    import datasets
    import pyarrow as pa

    records, codes = _data()
    base = read_prepared(_write(tmp_path / "p", records, codes)).data.table

    def save(name, column):
        table = base.set_column(base.schema.get_field_index("codes"), "codes", column)
        datasets.Dataset(table).save_to_disk(str(tmp_path / name))
        return tmp_path / name

    eight = pa.array([c[:, :8].tolist() for c in codes], pa.list_(pa.list_(pa.int16(), 8)))
    with pytest.raises(UserError) as e:
        read_prepared(save("eight", eight))
    assert "row 0 (id 000000_clip0) has 8 code groups, not 16" in _one_line(e)
    ragged = [c.tolist() for c in codes]
    ragged[2][1] = ragged[2][1][:15]
    with pytest.raises(UserError) as e:
        read_prepared(save("ragged", pa.array(ragged, pa.list_(pa.list_(pa.int64())))))
    assert "row 2 (id 000002_clip2) has 15 code groups" in _one_line(e)
    empty = [c.tolist() for c in codes]
    empty[4] = []
    with pytest.raises(UserError) as e:
        read_prepared(save("empty", pa.array(empty, pa.list_(pa.list_(pa.int16(), 16)))))
    assert "row 4 (id 000004_clip4) has no frames" in _one_line(e)
    with pytest.raises(UserError) as e:
        read_prepared(save("floats", pa.array([c.astype(float).tolist() for c in codes])))
    assert "not integer lists" in _one_line(e)


def test_missing_columns_missing_folder_and_not_a_dataset_refused(tmp_path):
    records, codes = _data()
    ds = read_prepared(_write(tmp_path / "p", records, codes)).remove_columns(["language", "num_frames"])
    ds.save_to_disk(str(tmp_path / "cols"))
    with pytest.raises(UserError) as e:
        read_prepared(tmp_path / "cols")
    assert "lacks column(s) ['num_frames', 'language']" in _one_line(e)
    with pytest.raises(UserError, match="not found"):
        read_prepared(tmp_path / "nope")
    (tmp_path / "junk").mkdir()
    with pytest.raises(UserError, match="is not a prepared dataset"):
        read_prepared(tmp_path / "junk")


def test_speakers_round_trip(tmp_path):
    from safetensors import safe_open

    vecs = {"alice": np.arange(8, dtype=np.float64) / 7, "bob": np.ones(8, np.float32)}
    save_speakers(vecs, {"alice": ["a.wav"], "bob": ["b1.wav", "b2.wav"]}, tmp_path, {"alice": "clips"})
    back = load_speakers(tmp_path)
    assert set(back) == {"alice", "bob"} and all(v.dtype == np.float32 for v in back.values())
    np.testing.assert_array_equal(back["alice"], vecs["alice"].astype(np.float32))
    assert load_speakers(tmp_path / "speakers.safetensors").keys() == back.keys()
    with safe_open(str(tmp_path / "speakers.safetensors"), framework="pt") as f:  # training/synthesis read it as torch
        assert f.metadata()["kind"] == "qwen3-tts x-vectors" and f.get_tensor("bob").dtype.is_floating_point
    meta = json.loads((tmp_path / "speakers.json").read_text())
    assert meta["bob"] == {"clips": ["b1.wav", "b2.wav"], "num_clips": 2, "dim": 8}
    assert meta["alice"]["source"] == "clips"
    with pytest.raises(UserError, match="does not exist"):
        load_speakers(tmp_path / "nope")


def test_prepare_refuses_an_output_of_another_format_in_one_line(tmp_path):
    from qwen_tts_ext.prep.config import PrepareConfig
    from qwen_tts_ext.prep.preflight import check_existing_output

    records, codes = _data()
    folder = _write_v1(tmp_path / "v1", records, codes)
    with pytest.raises(UserError) as e:
        check_existing_output(folder, "another", PrepareConfig(manifest="m.jsonl", output=str(folder)))
    assert "prepared-data format 1 (this prepare writes 2); pass --overwrite" in _one_line(e)


def test_train_does_not_import_prep():
    """Training reads prepared folders through qwen_tts_ext.prepared alone."""
    modules = [m for m in ("qwen_tts_ext.train.loop", "qwen_tts_ext.train.data", "qwen_tts_ext.train.setup",
                           "qwen_tts_ext.train.speaker_lock", "qwen_tts_ext.train.cli")
               if (ROOT / (m.replace(".", "/") + ".py")).is_file()]
    code = ("import importlib, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "print(sorted(k for k in sys.modules if k == 'qwen_tts_ext.prep' or k.startswith('qwen_tts_ext.prep.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"  # (qwen_tts prints a flash-attn notice first)
    # function-level imports too: no train module names the prep package
    named = [str(p.relative_to(ROOT)) for p in (ROOT / "qwen_tts_ext" / "train").glob("*.py")
             if re.search(r"qwen_tts_ext\.prep\b|from qwen_tts_ext import prep\b", p.read_text(encoding="utf-8"))]
    assert named == []


@pytest.mark.parametrize("case", ["newer_format", "code_out_of_range"])
def test_sft_refuses_bad_prepared_data_before_anything_is_written(tmp_path, tiny_base, capsys, case):
    from qwen_tts_ext.train.cli import main
    from tests._cli_contract import refuse

    records, codes = _data()
    if case == "code_out_of_range":
        codes[1][2, 3] = CODEBOOK_SIZE
    data = _write(tmp_path / "prep", records, codes, version=FORMAT_VERSION + 1 if case == "newer_format" else None)
    save_speakers({"alice": np.zeros(8), "bob": np.ones(8)}, {}, data)
    needle = f"format {FORMAT_VERSION + 1}" if case == "newer_format" else "row 1 (id 000001_clip1) has code 2048"
    refuse(main, ["--config", ROOT / "configs" / "sft_tiny.yaml", "--model", tiny_base, "--data", data,
                  "--output-dir", tmp_path / "run"], needle, [tmp_path, tiny_base], capsys)

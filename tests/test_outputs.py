"""The one output policy (qwen_tts_ext/outputs.py): never lose, move or mix what the user owns."""

from __future__ import annotations

import os

import pytest

from qwen_tts_ext.errors import UserError
from qwen_tts_ext.outputs import (
    MARKER,
    check_output_dir,
    check_output_file,
    output_dir,
    output_files,
    owner,
)
from tests._cli_contract import snapshot


def test_new_and_empty_folders_are_written_atomically_with_a_marker(tmp_path):
    for dest in (tmp_path / "new" / "deep", tmp_path / "empty"):
        if dest.name == "empty":
            dest.mkdir()
        with output_dir(dest, command="x") as tmp:
            (tmp / "a.txt").write_text("1")
            assert not (dest / "a.txt").exists()  # nothing visible before the end
        assert (dest / "a.txt").read_text() == "1" and owner(dest) == "x"
        assert oct(os.stat(dest).st_mode & 0o777) == "0o755"  # not mkdtemp's 0700
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "new"]  # no temp folders left


def test_a_failure_leaves_nothing_behind(tmp_path):
    dest = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with output_dir(dest, command="x") as tmp:
            (tmp / "half.bin").write_bytes(b"0" * 10)
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_user_files_are_never_replaced_moved_or_mixed(tmp_path):
    mine = tmp_path / "reports"
    mine.mkdir()
    (mine / "keep.txt").write_text("mine")
    note = tmp_path / "note.txt"
    note.write_text("a file")
    before = snapshot(tmp_path)
    for dest, overwrite, needle in ((mine, False, "not written by"), (mine, True, "not written by"),
                                    (note, True, "is an existing file"), (note / "x", False, "is a file")):
        with pytest.raises(UserError, match=needle):
            with output_dir(dest, command="x", overwrite=overwrite):
                pytest.fail("the block must not run")
    assert snapshot(tmp_path) == before


def test_own_previous_output_needs_overwrite_and_another_commands_is_refused(tmp_path):
    dest = tmp_path / "out"
    with output_dir(dest, command="x") as tmp:
        (tmp / "old.txt").write_text("old")
    with pytest.raises(UserError, match="pass --overwrite"):
        check_output_dir(dest, command="x")
    with pytest.raises(UserError, match="not written by `qwen-tts-ext y`"):
        check_output_dir(dest, command="y", overwrite=True)
    with output_dir(dest, command="x", overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in dest.iterdir()) == [MARKER, "new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_legacy_outputs_are_recognised_by_their_files(tmp_path):
    dest = tmp_path / "old"
    dest.mkdir()
    (dest / "darwin_blend.json").write_text("{}")
    assert owner(dest) is None and owner(dest, {"blend": ["darwin_blend.json"]}) == "blend"
    check_output_dir(dest, command="blend", overwrite=True, legacy={"blend": ["darwin_blend.json"]})


def test_inputs_may_not_overlap_the_output(tmp_path):
    src = tmp_path / "model"
    (src / "sub").mkdir(parents=True)
    for dest, needle in ((src, "itself"), (tmp_path, "contains the --model"), (src / "sub" / "o", "inside the --model")):
        with pytest.raises(UserError, match=needle):
            check_output_dir(dest, command="x", inputs={"--model": src})


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_unwritable_parent_is_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(UserError, match="no permission"):
            check_output_dir(ro / "out", command="x")
    finally:
        ro.chmod(0o700)


def test_single_files(tmp_path):
    wav, side = tmp_path / "a.wav", tmp_path / "a.json"
    with pytest.raises(UserError, match="must end in .wav"):
        check_output_file(tmp_path / "a.txt", suffix=".wav")
    note = tmp_path / "note.txt"
    note.write_text("x")
    with pytest.raises(UserError, match="is a file"):
        check_output_file(note / "x.wav", suffix=".wav")
    (tmp_path / "d.wav").mkdir()
    with pytest.raises(UserError, match="is a folder"):
        check_output_file(tmp_path / "d.wav", suffix=".wav")
    (tmp_path / "d.wav").rmdir()
    with output_files(wav, side) as (tw, ts):
        assert tw.suffix == ".wav" and tw.parent == tmp_path  # writers that read the suffix still work
        tw.write_bytes(b"RIFF")
        ts.write_text("{}")
    assert wav.read_bytes() == b"RIFF" and sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "a.wav", "note.txt"]
    with pytest.raises(UserError, match="pass --overwrite"):
        check_output_file(wav, suffix=".wav", owned=lambda p: True)
    with pytest.raises(UserError, match="not written by this command"):
        check_output_file(wav, overwrite=True, suffix=".wav", owned=lambda p: False)
    check_output_file(wav, overwrite=True, suffix=".wav", owned=lambda p: True)
    with pytest.raises(RuntimeError):
        with output_files(wav) as (tw,):
            tw.write_bytes(b"half")
            raise RuntimeError
    assert wav.read_bytes() == b"RIFF" and sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "a.wav", "note.txt"]

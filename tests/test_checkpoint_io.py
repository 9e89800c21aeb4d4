"""checkpoint_io: locating checkpoints, header-only reading, sharded writing, support-file copy."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from qwen_tts_ext import checkpoint_io as cio
from qwen_tts_ext.errors import UserError


def sample_tensors(seed=0):
    """One tensor of each kind a checkpoint holds: bf16, f32, int64, f16, a 0-d scalar."""
    g = torch.Generator().manual_seed(seed)
    return {
        "a.weight": torch.randn(4, 6, generator=g).to(torch.bfloat16),
        "b.bias": torch.randn(7, generator=g),
        "c.ids": torch.arange(5, dtype=torch.int64),
        "d.half": torch.randn(3, 2, generator=g).to(torch.float16),
        "e.scalar": torch.tensor(3.5),
    }


def assert_same_bytes(a: dict, b: dict):
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert torch.equal(a[k].view(-1).view(torch.uint8), b[k].reshape(-1).contiguous().view(torch.uint8)), k


@pytest.mark.parametrize("max_shard", [None, 40])
def test_write_then_read_back_with_stock_safetensors(tmp_path, max_shard):
    ts = sample_tensors()
    files = cio.write_safetensors_sharded(ts, tmp_path, max_shard_bytes=max_shard, metadata={"who": "me"})
    if max_shard is None:
        assert [f.name for f in files] == ["model.safetensors"]
        assert not (tmp_path / cio.INDEX_FILE).exists()
    else:
        assert len(files) > 1 and files[0].name == f"model-00001-of-{len(files):05d}.safetensors"
        index = json.loads((tmp_path / cio.INDEX_FILE).read_text())
        assert set(index["weight_map"]) == set(ts)
        assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in ts.values())
    loaded = {}
    for f in files:
        loaded.update(load_file(f))
        with safe_open(str(f), "pt") as h:
            assert h.metadata() == {"format": "pt", "who": "me"}
    assert_same_bytes(ts, loaded)
    # the lazy reader agrees, from headers only
    with cio.LazyCheckpoint(tmp_path) as ck:
        assert set(ck.keys()) == set(ts) and len(ck) == len(ts)
        for k, t in ts.items():
            assert ck.shape(k) == tuple(t.shape) and ck.dtype(k) == t.dtype
            assert ck.location(k).nbytes == t.numel() * t.element_size()
            assert torch.equal(ck.get(k), t)
        assert ck.metadata()["who"] == "me"


def test_generator_input_is_sharded_without_knowing_sizes(tmp_path):
    ts = sample_tensors(1)
    files = cio.write_safetensors_sharded(((k, v) for k, v in ts.items()), tmp_path, max_shard_bytes=40)
    assert len(files) > 1 and not list(tmp_path.glob(".shard-*"))
    with cio.LazyCheckpoint(tmp_path) as ck:
        assert_same_bytes(ts, {k: ck.get(k) for k in ck.keys()})
    # the same bytes as from a mapping, and the same shard layout as plan_shards gives
    other = tmp_path / "from_mapping"
    assert [f.read_bytes() for f in cio.write_safetensors_sharded(ts, other, max_shard_bytes=40)] == \
        [f.read_bytes() for f in files]
    plan = cio.plan_shards([cio.TensorSpec.of(k, v) for k, v in ts.items()], 40)
    assert len(plan) == len(files)
    with pytest.raises(ValueError, match="duplicate"):
        cio.write_safetensors_sharded(iter([("x", torch.zeros(1)), ("x", torch.ones(1))]), tmp_path / "dup")


def test_empty_checkpoint_is_one_header_only_file(tmp_path):
    files = cio.write_safetensors_sharded({}, tmp_path, max_shard_bytes=40)
    assert [f.name for f in files] == [cio.SINGLE_FILE]
    with cio.LazyCheckpoint(tmp_path) as ck:
        assert ck.keys() == [] and ck.metadata() == {"format": "pt"}


def test_weight_files_and_errors(tmp_path):
    with pytest.raises(UserError, match="no model.safetensors"):
        cio.weight_files(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(UserError, match="pickle"):
        cio.weight_files(tmp_path)
    cio.write_safetensors_sharded(sample_tensors(), tmp_path, max_shard_bytes=40)
    files = cio.weight_files(tmp_path)
    assert len(files) > 1
    files[-1].unlink()
    with pytest.raises(UserError, match="missing"):
        cio.weight_files(tmp_path)


def test_resolve_checkpoint(tmp_path, monkeypatch):
    assert cio.resolve_checkpoint(tmp_path) == tmp_path.resolve()
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(UserError, match="is a file"):
        cio.resolve_checkpoint(f)
    with pytest.raises(UserError, match="no such folder"):
        cio.resolve_checkpoint(tmp_path / "nope" / "deeper" / "x")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="Hugging Face Hub failed"):
        cio.resolve_checkpoint("no-such-org-xyz/no-such-model", what="--llm")


def test_copy_support_files_skips_root_weights(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "speech_tokenizer").mkdir(parents=True)
    for name in ("config.json", "generation_config.json", "vocab.json", "README.md"):
        (src / name).write_text(name)
    (src / "speech_tokenizer" / "model.safetensors").write_bytes(b"keep")
    (src / "model.safetensors").write_bytes(b"weights")
    (src / "model-00001-of-00002.safetensors").write_bytes(b"weights")
    (src / cio.INDEX_FILE).write_text("{}")
    (src / ".git").mkdir()
    cio.copy_support_files(src, dst, exclude=["README.md"])
    names = sorted(p.relative_to(dst).as_posix() for p in dst.rglob("*"))
    assert names == ["config.json", "generation_config.json", "speech_tokenizer",
                     "speech_tokenizer/model.safetensors", "vocab.json"]




@pytest.mark.parametrize("max_shard", [None, 40])
def test_deferred_casts_write_the_same_bytes_piece_by_piece(tmp_path, max_shard):
    """The export's streaming casts (``converted``, pieces of a few rows) give the bytes a whole-tensor cast gives."""
    ts = sample_tensors()
    ts["big"] = torch.randn(37, 5)
    whole = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in ts.items()}
    pieces = {k: cio.converted(v, torch.bfloat16 if v.is_floating_point() else v.dtype, piece_bytes=24)
              for k, v in ts.items()}
    assert len(list(pieces["big"].pieces())) > 5  # really written in several pieces
    a, b = tmp_path / "a", tmp_path / "b"
    cio.write_safetensors_sharded(whole, a, max_shard_bytes=max_shard)
    cio.write_safetensors_sharded(pieces, b, max_shard_bytes=max_shard)
    assert [f.read_bytes() for f in sorted(a.iterdir())] == [f.read_bytes() for f in sorted(b.iterdir())]


def test_deferred_whose_pieces_disagree_with_its_shape_is_refused(tmp_path):
    short = cio.Deferred(torch.float32, (4, 4), lambda: iter([torch.zeros(3, 4)]))
    with pytest.raises(ValueError, match="pieces gave 48 bytes"):
        cio.write_safetensors_sharded({"x": short}, tmp_path / "out")

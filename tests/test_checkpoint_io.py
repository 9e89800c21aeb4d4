"""checkpoint_io: lazy reading, streaming/sharded writing, support-file copy, atomic output folders."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from qwen_tts_ext import checkpoint_io as cio
from qwen_tts_ext.errors import UserError


def _tensors(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "a.weight": torch.randn(4, 6, generator=g).to(torch.bfloat16),
        "b.bias": torch.randn(7, generator=g),
        "c.ids": torch.arange(5, dtype=torch.int64),
        "d.half": torch.randn(3, 2, generator=g).to(torch.float16),
        "e.scalar": torch.tensor(3.5),
    }


def _assert_same(a: dict, b: dict):
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert torch.equal(a[k].view(-1).view(torch.uint8), b[k].reshape(-1).contiguous().view(torch.uint8)), k


@pytest.mark.parametrize("max_shard", [None, 40])
def test_write_then_read_back_with_stock_safetensors(tmp_path, max_shard):
    ts = _tensors()
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
    _assert_same(ts, loaded)
    # the lazy reader agrees, from headers only
    with cio.LazyCheckpoint(tmp_path) as ck:
        assert set(ck.keys()) == set(ts)
        for k, t in ts.items():
            assert ck.shape(k) == tuple(t.shape) and ck.dtype(k) == t.dtype
            assert ck.nbytes(k) == t.numel() * t.element_size()
            assert torch.equal(ck.get(k), t)
            buf = torch.empty(1024, dtype=torch.uint8)
            assert torch.equal(ck.read_into(k, buf), t)
        assert ck.metadata()["who"] == "me"


def test_generator_input_is_sharded_without_knowing_sizes(tmp_path):
    ts = _tensors(1)
    files = cio.write_safetensors_sharded(((k, v) for k, v in ts.items()), tmp_path, max_shard_bytes=40)
    assert len(files) > 1 and not list(tmp_path.glob(".shard-*"))
    with cio.LazyCheckpoint(tmp_path) as ck:
        _assert_same(ts, {k: ck.get(k) for k in ck.keys()})


def test_stream_writer_copy_and_order_checks(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    ts = _tensors(2)
    save_file(ts, str(src / "model.safetensors"))
    out = tmp_path / "out"
    with cio.LazyCheckpoint(src) as ck:
        specs = [cio.TensorSpec(k, ck.st_dtype(k), ck.shape(k)) for k in ck.keys()]
        w = cio.SafetensorsStreamWriter(out, specs)
        with pytest.raises(ValueError, match="plan order"):
            w.write(specs[1].name, ts[specs[1].name])
        for s in specs:
            w.copy_tensor_from(s.name, ck.location(s.name))
        w.close()
    # byte-identical tensor payloads
    assert (out / "model.safetensors").read_bytes().endswith((src / "model.safetensors").read_bytes()[-64:])
    _assert_same(ts, load_file(out / "model.safetensors"))

    w = cio.SafetensorsStreamWriter(tmp_path / "bad", [cio.TensorSpec("x", "F32", (2,))])
    with pytest.raises(ValueError, match="planned"):
        w.write("x", torch.zeros(3))
    with pytest.raises(ValueError, match="never written"):
        w.close()


def test_weight_files_and_errors(tmp_path):
    with pytest.raises(UserError, match="no model.safetensors"):
        cio.weight_files(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(UserError, match="pickle"):
        cio.weight_files(tmp_path)
    cio.write_safetensors_sharded(_tensors(), tmp_path, max_shard_bytes=40)
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


def test_sha256_and_hf_cache_name(tmp_path):
    import hashlib

    f = tmp_path / "x.bin"
    f.write_bytes(os.urandom(100_000))
    assert cio.sha256_file(f, chunk_bytes=4096) == hashlib.sha256(f.read_bytes()).hexdigest()
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    digest = "a" * 64
    (blobs / digest).write_bytes(b"x")
    (tmp_path / "link.safetensors").symlink_to(blobs / digest)
    assert cio.hf_cache_sha256(tmp_path / "link.safetensors") == digest
    assert cio.hf_cache_sha256(f) is None


def test_sha256_cache_hits_and_invalidates(tmp_path, monkeypatch):
    import hashlib

    monkeypatch.setenv("QWEN_TTS_EXT_CACHE", str(tmp_path / "cache"))
    f = tmp_path / "w.safetensors"
    f.write_bytes(b"a" * 1000)
    calls = []
    assert cio.sha256_file_cached(f, progress=calls.append) == hashlib.sha256(b"a" * 1000).hexdigest()
    assert calls and (tmp_path / "cache" / "sha256.json").is_file()
    calls.clear()
    assert cio.sha256_file_cached(f, progress=calls.append) == hashlib.sha256(b"a" * 1000).hexdigest()
    assert calls == []  # served from the cache
    f.write_bytes(b"b" * 1001)  # size/mtime change -> hashed again
    assert cio.sha256_file_cached(f, progress=calls.append) == hashlib.sha256(b"b" * 1001).hexdigest()
    assert calls
    monkeypatch.setenv("QWEN_TTS_EXT_HASH_CACHE", "0")
    monkeypatch.setenv("QWEN_TTS_EXT_CACHE", str(tmp_path / "cache2"))
    cio.sha256_file_cached(f)
    assert not (tmp_path / "cache2").exists()


def test_read_into_without_preadv(tmp_path, monkeypatch):
    ts = _tensors(4)
    cio.write_safetensors_sharded(ts, tmp_path)
    monkeypatch.setattr(cio, "_HAS_PREADV", False)
    with cio.LazyCheckpoint(tmp_path) as ck:
        buf = torch.empty(4096, dtype=torch.uint8)
        for k, t in ts.items():
            assert torch.equal(ck.read_into(k, buf), t)

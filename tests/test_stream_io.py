"""blend.stream_io: raw byte-range reads, the streaming writer with file-to-file copies, source hashes."""

from __future__ import annotations

import hashlib
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from qwen_tts_ext import checkpoint_io as cio
from qwen_tts_ext.blend import stream_io as sio
from tests.test_checkpoint_io import assert_same_bytes, sample_tensors


@pytest.mark.parametrize("max_shard", [None, 40])
def test_read_into_agrees_with_safe_open(tmp_path, max_shard):
    ts = sample_tensors()
    cio.write_safetensors_sharded(ts, tmp_path, max_shard_bytes=max_shard)
    with sio.StreamingCheckpoint(tmp_path) as ck:
        assert ck.total_bytes == sum(t.numel() * t.element_size() for t in ts.values())
        buf = torch.empty(1024, dtype=torch.uint8)
        for k, t in ts.items():
            assert ck.nbytes(k) == t.numel() * t.element_size() and ck.st_dtype(k) == cio.TORCH_TO_ST[t.dtype]
            assert torch.equal(ck.read_into(k, buf), t) and torch.equal(ck.get(k), t)
        with pytest.raises(ValueError, match="too small"):
            ck.read_into("a.weight", torch.empty(1, dtype=torch.uint8))
    assert ck._fds == {}  # closed on exit


def test_stream_writer_copy_and_order_checks(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    ts = sample_tensors(2)
    save_file(ts, str(src / "model.safetensors"))
    out = tmp_path / "out"
    with sio.StreamingCheckpoint(src) as ck:
        specs = [cio.TensorSpec(k, ck.st_dtype(k), ck.shape(k)) for k in ck.keys()]
        w = sio.SafetensorsStreamWriter(out, specs)
        with pytest.raises(ValueError, match="plan order"):
            w.write(specs[1].name, ts[specs[1].name])
        for s in specs:
            w.copy_tensor_from(s.name, ck.location(s.name))
        w.close()
    # byte-identical tensor payloads
    assert (out / "model.safetensors").read_bytes().endswith((src / "model.safetensors").read_bytes()[-64:])
    assert_same_bytes(ts, load_file(out / "model.safetensors"))

    w = sio.SafetensorsStreamWriter(tmp_path / "bad", [cio.TensorSpec("x", "F32", (2,))])
    with pytest.raises(ValueError, match="planned"):
        w.write("x", torch.zeros(3))
    with pytest.raises(ValueError, match="never written"):
        w.close()


def test_sha256_and_hf_cache_name(tmp_path):
    f = tmp_path / "x.bin"
    f.write_bytes(os.urandom(100_000))
    assert sio.sha256_file(f, chunk_bytes=4096) == hashlib.sha256(f.read_bytes()).hexdigest()
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    digest = "a" * 64
    (blobs / digest).write_bytes(b"x")
    (tmp_path / "link.safetensors").symlink_to(blobs / digest)
    assert sio.hf_cache_sha256(tmp_path / "link.safetensors") == digest
    assert sio.hf_cache_sha256(f) is None


def test_sha256_cache_hits_and_invalidates(tmp_path, monkeypatch):
    monkeypatch.setenv("QWEN_TTS_EXT_CACHE", str(tmp_path / "cache"))
    f = tmp_path / "w.safetensors"
    f.write_bytes(b"a" * 1000)
    calls = []
    assert sio.sha256_file_cached(f, progress=calls.append) == hashlib.sha256(b"a" * 1000).hexdigest()
    assert calls and (tmp_path / "cache" / "sha256.json").is_file()
    calls.clear()
    assert sio.sha256_file_cached(f, progress=calls.append) == hashlib.sha256(b"a" * 1000).hexdigest()
    assert calls == []  # served from the cache
    f.write_bytes(b"b" * 1001)  # size/mtime change -> hashed again
    assert sio.sha256_file_cached(f, progress=calls.append) == hashlib.sha256(b"b" * 1001).hexdigest()
    assert calls
    monkeypatch.setenv("QWEN_TTS_EXT_HASH_CACHE", "0")
    monkeypatch.setenv("QWEN_TTS_EXT_CACHE", str(tmp_path / "cache2"))
    sio.sha256_file_cached(f)
    assert not (tmp_path / "cache2").exists()


def test_read_into_without_preadv(tmp_path, monkeypatch):
    ts = sample_tensors(4)
    cio.write_safetensors_sharded(ts, tmp_path)
    monkeypatch.setattr(sio, "_HAS_PREADV", False)
    with sio.StreamingCheckpoint(tmp_path) as ck:
        buf = torch.empty(4096, dtype=torch.uint8)
        for k, t in ts.items():
            assert torch.equal(ck.read_into(k, buf), t)

#!/usr/bin/env python
"""Training-throughput benchmark: our SFT loop vs a faithful CPU port of the official loop.

    python scripts/bench_train.py                          # defaults: ~5 minutes on 2 cores
    python scripts/bench_train.py --steps 30 --clips 12    # longer, steadier numbers
    python scripts/bench_train.py --no-multiproc --no-write
    python scripts/bench_train.py --shape 0.6b                # released 0.6B widths, bf16: ~15 minutes

One run builds a small Qwen3-TTS checkpoint with the factory (talker hidden 256, 4 layers), speaks an
espeak-ng corpus (speakers x clips, 1 to 4 sentences per clip, so lengths vary as in real data),
prepares it once with ``qwen_tts_ext.prep.prepare`` (12 Hz codes + speaker vectors), and then trains
on CPU in float32, with the same batch size and number of optimizer steps, in separate
subprocesses (so each peak RSS is its own):

(a) ``ours``: ``qwen_tts_ext.train.loop.train`` with the recipe defaults (length-bucketed batches,
    speaker vectors from data prep, text embedding frozen);
(b) ``official``: a re-implementation of ``finetuning/sft_12hz.py`` + ``finetuning/dataset.py`` of
    QwenLM/Qwen3-TTS in float32/SDPA on CPU (the original hard-codes bf16, flash-attention 2 and
    4-step accumulation): a shuffled, unbucketed DataLoader; per sample the transcript is tokenized
    and the reference audio is re-loaded with librosa and turned into a mel spectrogram; per step
    the speaker encoder runs on those mels; the batch is padded to the longest sample + 8; the loss
    goes through ``talker(labels=...)`` with ``output_hidden_states=True`` and
    ``forward_sub_talker_finetune``; AdamW over all parameters. (Its label-shift defects do not
    change the amount of compute and are kept.) The official script trains one speaker and needs
    equal-length reference mels in a batch; here each speaker's reference is its first clip
    resampled to 24 kHz and cut to 3 s, and all rows of that speaker point at it.
(c) ``ours`` in 2 processes under ``accelerate launch --multi_gpu --num_processes 2`` (the same
    per-process batch; without CUDA accelerate runs them on CPU over gloo. ``accelerate launch
    --cpu --num_processes 2`` would start a single process: accelerate 1.12 distributes CPU runs
    only through mpirun).

Throughput is measured from the first to the last optimizer step (so model loading, the first
step's warm-up, and our end-of-run checkpoint/export are excluded). Our loop is measured by what it
writes itself: the per-optimizer-step timing records of its ``metrics.jsonl`` (end time of the step,
data wait and forward+backward per micro-batch, optimizer time, frames and positions over all
processes), so the run is the real loop, unpatched. The official port records the same from inside
its own loop (and a global optimizer-step hook). Each configuration runs ``--repeats`` times,
alternating; the table shows each configuration's fastest run and the headline ratio uses the median
runs (the machine may be shared). Results go to stdout and, between markers, to ``docs/benchmarks.md``.

``--shape 0.6b|1.7b`` runs (a) and (b) on a released model's shape instead (``build_released_tts``: real
widths, the 151,936-row text embedding, the released speaker encoder, random weights; ``--layers N`` keeps N
of the 28 talker layers and the ratio is then per layer count) in bf16 as the official script trains: ours
with ``train.pure_bf16=true train.precision=no``, the port with bf16 weights under accelerate's
``mixed_precision="bf16"``. At this width one step of 2 short clips takes tens of seconds on a CPU core, so
the defaults are small (batch 2, the official script's default; clips of 1-2 sentences; 3 steps; 2 runs
each; about 15 minutes on 2 cores). The report adds where the gain comes from: the port times its speaker
encoder, forward+backward and optimizer each step; a split process times alone the text embedding's cost
when it trains (dense backward, clipping, AdamW step: fused and for-loop), AdamW over the other parameters
(fused vs for-loop), the fused heads and the code predictor's share (for the bucketing estimate), and an
estimate with the official script's gradient accumulation of 4. ``--unfrozen-run`` adds a run of ours
with ``train.freeze_text_embedding=false``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from statistics import median
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "benchmarks.md"
START, END = "<!-- bench_train:start -->", "<!-- bench_train:end -->"
REF_SECONDS = 3.0
# --shape: talker layers, optimizer steps and repeats by default (chosen so the whole run fits in ~15 min on 2 cores)
SHAPE_DEFAULTS = {"0.6b": {"layers": 28, "steps": 3, "repeats": 2, "batch_size": 2, "sentences": 2},
                  "1.7b": {"layers": 8, "steps": 3, "repeats": 2, "batch_size": 2, "sentences": 2}}
SPEAKERS = ("alice", "bob", "carol", "dave")


# =========================================================================== setup (orchestrator)


def tiny_spec(hidden: int = 256, intermediate: int = 512, layers: int = 4, cp_layers: int = 2):
    """The benchmark model: a factory checkpoint, 1.7B-like layout (code predictor half as wide)."""
    from qwen_tts_ext.testing.tiny_checkpoint import TinySpec

    return TinySpec(variant="1.7b", tts_model_type="base", hidden_size=hidden, intermediate_size=intermediate,
                    num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2, head_dim=hidden // 4,
                    code_predictor_layers=cp_layers)


def make_varied_corpus(out_dir: Path, speakers: int, clips: int, max_sentences: int = 4) -> Path:
    """espeak-ng clips of 1..max_sentences sentences (about 2.5 to 13 s for 4) per speaker; manifest.jsonl
    like make_corpus."""
    from qwen_tts_ext.testing.speech import SENTENCES, espeak_available, espeak_to_wav

    if not espeak_available():
        raise SystemExit("error: espeak-ng is required for the benchmark corpus (apt-get install espeak-ng)")
    sentences = SENTENCES["english"]
    (out_dir / "wavs").mkdir(parents=True, exist_ok=True)
    rows = []
    for s in range(speakers):
        name = SPEAKERS[s] if s < len(SPEAKERS) else f"speaker{s}"
        voice = "en-us" + ("+f2", "+m3", "+f4", "+m7")[s % 4]
        for k in range(clips):
            n = 1 + (k * 5 + s) % max_sentences  # 1..max_sentences sentences, mixed order
            text = " ".join(sentences[(k + j + s) % len(sentences)] for j in range(n))
            rel = f"wavs/{name}_{k:03d}.wav"
            if not (out_dir / rel).is_file():
                espeak_to_wav(text, out_dir / rel, voice=voice, speed=150 + 10 * (k % 3), pitch=35 + 12 * s)
            rows.append({"audio": rel, "text": text, "speaker": name, "language": "english"})
    manifest = out_dir / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return manifest


def official_jsonl(prep_dir: Path, out_dir: Path) -> Path:
    """The official recipe's input (audio, text, audio_codes, ref_audio) from the prepared rows, with one
    24 kHz, REF_SECONDS-long reference clip per speaker (the official dataset asserts 24 kHz and
    concatenates the reference mels of a batch, so they must have one length)."""
    import numpy as np
    import soundfile as sf

    from qwen_tts_ext.prep.audio import load_audio

    rows = [json.loads(line) for line in (prep_dir / "train_with_codes.jsonl").read_text().splitlines() if line]
    refs: dict[str, str] = {}
    (out_dir / "refs").mkdir(parents=True, exist_ok=True)
    for r in rows:
        if r["speaker"] not in refs:
            wav = load_audio(r["audio"])  # resampled to 24 kHz
            n = int(REF_SECONDS * 24000)
            wav = np.pad(wav, (0, max(0, n - len(wav))))[:n]
            path = out_dir / "refs" / f"{r['speaker']}.wav"
            sf.write(path, wav.astype(np.float32), 24000)
            refs[r["speaker"]] = str(path)
        r["ref_audio"] = refs[r["speaker"]]
    out = out_dir / "official_train.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return out


def model_tag(args) -> str:
    """The benchmark model's name: ``0.6b-l28`` (released shape) or ``h256-i512-l4-cp2`` (factory model)."""
    if args.shape:
        return f"{args.shape}-l{args.layers}"
    return f"h{args.hidden}-i{args.intermediate}-l{args.layers}-cp{args.cp_layers}"


def setup(work: Path, args, log) -> dict:
    """Model, corpus, prepared data and the official-format jsonl (reused when already in ``work``)."""
    import torch

    from qwen_tts_ext.prep import PrepareConfig, prepare
    from qwen_tts_ext.testing.tiny_checkpoint import build_released_tts, build_tiny_tts

    speakers, clips = args.speakers, args.clips
    work.mkdir(parents=True, exist_ok=True)
    tag = model_tag(args)
    model = work / f"model-{tag}"
    if not (model / "config.json").is_file():
        log(f"building the benchmark model in {model}")
        if args.shape:  # released widths, random weights, stored in the dtype the runs load
            build_released_tts(model, args.shape, layers=args.layers, seed=0, overwrite=True,
                               dtype=torch.bfloat16 if args.dtype == "bfloat16" else torch.float32)
        else:
            build_tiny_tts(model, tiny_spec(args.hidden, args.intermediate, args.layers, args.cp_layers), seed=0,
                           overwrite=True)
    size = f"{speakers}x{clips}" + (f"-s{args.sentences}" if args.sentences != 4 else "")
    corpus = work / f"corpus-{size}"
    log(f"speaking {speakers} x {clips} clips of 1 to {args.sentences} sentences with espeak-ng")
    manifest = make_varied_corpus(corpus, speakers, clips, args.sentences)
    prep = work / f"prepared-{tag}-{size}"
    log("preparing (12 Hz codes + speaker vectors)")
    prepare(PrepareConfig(manifest=str(manifest), model=str(model), output=str(prep), progress=False, overwrite=True))
    jsonl = official_jsonl(prep, work / f"official-{tag}-{size}")
    return {"model": str(model), "prep": str(prep), "official_jsonl": str(jsonl), "params": count_parameters(model)}


def count_parameters(model_dir: Path) -> int:
    """Parameters in the checkpoint's safetensors files (read from their headers)."""
    from safetensors import safe_open

    total = 0
    for f in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as st:
            for k in st.keys():
                n = 1
                for dim in st.get_slice(k).get_shape():
                    n *= dim
                total += n
    return total


# =========================================================================== measurement (workers)


class Recorder:
    """The official port's per-micro-batch (time, frames, real positions, slots) and per-optimizer-step times."""

    def __init__(self):
        from torch.optim.optimizer import register_optimizer_step_post_hook

        self.micro: list[tuple[float, int, int, int]] = []
        self.steps: list[float] = []
        self.parts: list[tuple[float, float, float]] = []  # per step: speaker encoder, rest of fwd+bwd, optimizer
        register_optimizer_step_post_hook(lambda *a, **k: self.steps.append(time.perf_counter()))

    def batch(self, frames: int, real: int, slots: int) -> None:
        self.micro.append((time.perf_counter(), frames, real, slots))

    def result(self, name: str, wall: float, **extra) -> dict:
        import torch

        n = len(self.steps)
        steady_frames = sum(m[1] for m in self.micro[1:n])  # micro-batches 2..N (one per step)
        return {
            "name": name, "steps": n, "micro_batches": len(self.micro),
            "frames_total": sum(m[1] for m in self.micro),
            "frames_steady": steady_frames,
            "time_steady": (self.steps[-1] - self.steps[0]) if n > 1 else float("nan"),
            "steps_steady": n - 1,
            # input pipeline: from the end of step k-1 to the start of micro-batch k's compute
            "data_wait": sum(self.micro[k][0] - self.steps[k - 1] for k in range(1, min(n, len(self.micro)))),
            # steps 2..N, like the throughput: the speaker encoder's forward, the rest of fwd+bwd, the optimizer
            "speaker_encoder": sum(p[0] for p in self.parts[1:n]),
            "fwd_bwd": sum(p[1] for p in self.parts[1:n]),
            "optimizer": sum(p[2] for p in self.parts[1:n]),
            "real_positions": sum(m[2] for m in self.micro), "slots": sum(m[3] for m in self.micro),
            "wall": wall,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
            "threads": torch.get_num_threads(),
            "rank": int(os.environ.get("RANK", "0")), "world_size": int(os.environ.get("WORLD_SIZE", "1")),
            **extra,
        }


def from_metrics(path: Path) -> dict:
    """Our loop's own per-step timing records (``metrics.jsonl``) -> the measures of the table. Frames and
    positions are over all processes; seconds are the main process's."""
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    steps = sorted((r for r in records if "timing/t" in r), key=lambda r: r["step"])
    n, steady = len(steps), steps[1:]  # throughput counts steps 2..N (first-to-last optimizer step)
    return {
        "steps": n, "micro_batches": sum(len(r["timing/fwd_bwd_s"]) for r in steps),
        "frames_total": sum(r["timing/frames"] for r in steps),
        "frames_steady": sum(r["timing/frames"] for r in steady),
        "time_steady": steps[-1]["timing/t"] - steps[0]["timing/t"] if n > 1 else float("nan"),
        "steps_steady": n - 1,
        "data_wait": sum(sum(r["timing/data_wait_s"]) for r in steady),
        "fwd_bwd": sum(sum(r["timing/fwd_bwd_s"]) for r in steady),
        "optimizer": sum(r["timing/optimizer_s"] for r in steady),
        "real_positions": sum(r["timing/real_positions"] for r in steps),
        "slots": sum(r["timing/padded_positions"] for r in steps),
        "loop_processes": steps[0]["timing/processes"] if steps else 0,
    }


def worker_ours(args) -> dict:
    """``qwen_tts_ext.train.loop.train`` as users run it; measured afterwards from its metrics.jsonl."""
    import torch

    from qwen_tts_ext.config import load_config
    from qwen_tts_ext.train.config import SFTConfig
    from qwen_tts_ext.train.loop import train

    out_dir = Path(args.run_dir)
    overrides = [
        f"model={args.model}", f"data.path={args.prep}", f"output_dir={out_dir}",
        f"train.max_steps={args.steps}", f"train.batch_size={args.batch_size}", "train.grad_accum=1",
        "train.lr=2e-5", "train.precision='no'", "train.seed=0", "data.eval_fraction=0", "data.num_workers=0",
        "log.tracker=none", f"log.every_steps={args.steps}", "log.log_samples=false", "eval.judges=[]",
        "checkpoint.every_steps=0",
    ]
    if args.dtype == "bfloat16":  # bf16 weights and AdamW state, as the official script trains
        overrides += ["train.pure_bf16=true", "export.dtype=bfloat16"]
    else:
        overrides.append("export.dtype=float32")
    if args.subtalker_fraction:
        overrides.append(f"train.subtalker_frame_fraction={args.subtalker_fraction}")
    overrides += args.set or []  # a toggled recipe key (e.g. train.freeze_text_embedding=false)
    cfg = load_config(SFTConfig, None, overrides)
    t0 = time.perf_counter()
    summary = train(cfg)
    rank = int(os.environ.get("RANK", "0"))
    result = {"name": "ours", "wall": time.perf_counter() - t0, "final_loss": summary.get("final_loss"),
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
              "threads": torch.get_num_threads(), "rank": rank, "world_size": int(os.environ.get("WORLD_SIZE", "1"))}
    if rank == 0:  # the main process wrote the records (its seconds; everyone's frames)
        result.update(from_metrics(out_dir / "metrics.jsonl"))
    return result


def worker_official(args) -> dict:
    """A float32 CPU re-implementation of the official finetuning/sft_12hz.py + dataset.py."""
    import librosa
    import torch
    from accelerate import Accelerator
    from qwen_tts import Qwen3TTSModel
    from qwen_tts.core.models.modeling_qwen3_tts import mel_spectrogram

    rec = Recorder()
    bf16 = args.dtype == "bfloat16"
    # bf16: as the official script (weights loaded in bf16, accelerate's mixed_precision="bf16", i.e. autocast)
    accelerator = Accelerator(gradient_accumulation_steps=1, mixed_precision="bf16" if bf16 else "no",
                              cpu=args.device == "cpu")
    torch.manual_seed(0)
    t0 = time.perf_counter()
    tts = Qwen3TTSModel.from_pretrained(args.model, dtype=torch.bfloat16 if bf16 else torch.float32,
                                        attn_implementation="sdpa")
    config = tts.model.config
    tc = config.talker_config
    rows = [json.loads(line) for line in Path(args.official_jsonl).read_text().splitlines() if line]

    class OfficialStyleDataset(torch.utils.data.Dataset):
        def __len__(self):
            return len(rows)

        def __getitem__(self, idx):
            item = rows[idx]
            prompt = f"<|im_start|>assistant\n{item['text']}<|im_end|>\n<|im_start|>assistant\n"
            ids = tts.processor(text=prompt, return_tensors="pt", padding=True)["input_ids"]
            ids = ids if ids.dim() == 2 else ids.unsqueeze(0)
            wav, sr = librosa.load(item["ref_audio"], sr=None, mono=True)  # re-read every time, as upstream
            assert sr == 24000, "the official dataset only accepts 24 kHz reference audio"
            with torch.inference_mode():
                mel = mel_spectrogram(torch.from_numpy(wav.astype("float32")).unsqueeze(0), n_fft=1024, num_mels=128,
                                      sampling_rate=24000, hop_size=256, win_size=1024, fmin=0, fmax=12000).transpose(1, 2)
            return {"text_ids": ids[:, :-5], "codes": torch.tensor(item["audio_codes"], dtype=torch.long), "ref_mel": mel}

    def collate(batch):
        # Positions: 0-2 role tokens | 3-5 think codec tokens over tts_pad | 6 speaker slot | 7 tts_bos +
        # codec_pad | text tokens + codec_pad | tts_eos + codec_pad | codec_bos | frames | codec_eos;
        # padded to the longest sample + 8.
        lengths = [b["text_ids"].shape[1] + b["codes"].shape[0] for b in batch]
        B, T = len(batch), max(lengths) + 8
        input_ids = torch.zeros(B, T, 2, dtype=torch.long)
        codec_ids = torch.zeros(B, T, 16, dtype=torch.long)
        text_mask = torch.zeros(B, T, dtype=torch.bool)
        codec_emb_mask = torch.zeros(B, T, dtype=torch.bool)
        codec_mask = torch.zeros(B, T, dtype=torch.bool)
        attention = torch.zeros(B, T, dtype=torch.long)
        labels = torch.full((B, T), -100, dtype=torch.long)
        for i, b in enumerate(batch):
            text, codes = b["text_ids"][0], b["codes"]
            n_text, n_frames = text.shape[0], codes.shape[0]
            first_frame = 8 + n_text - 1  # text tokens occupy 8 .. 8 + n_text - 4, then tts_eos, codec_bos
            end = first_frame + n_frames  # position of codec_eos
            input_ids[i, :3, 0] = text[:3]
            input_ids[i, 3:7, 0] = config.tts_pad_token_id
            input_ids[i, 7, 0] = config.tts_bos_token_id
            input_ids[i, 8:8 + n_text - 3, 0] = text[3:]
            input_ids[i, 8 + n_text - 3, 0] = config.tts_eos_token_id
            input_ids[i, 8 + n_text - 2:end + 1, 0] = config.tts_pad_token_id
            text_mask[i, :end + 1] = True
            input_ids[i, 3:8, 1] = torch.tensor([tc.codec_nothink_id, tc.codec_think_bos_id, tc.codec_think_eos_id, 0,
                                                 tc.codec_pad_id])
            input_ids[i, 8:8 + n_text - 2, 1] = tc.codec_pad_id
            input_ids[i, first_frame - 1, 1] = tc.codec_bos_id
            input_ids[i, first_frame:end, 1] = codes[:, 0]
            input_ids[i, end, 1] = tc.codec_eos_token_id
            labels[i, first_frame:end] = codes[:, 0]
            labels[i, end] = tc.codec_eos_token_id
            codec_ids[i, first_frame:end] = codes
            codec_emb_mask[i, 3:end + 1] = True
            codec_emb_mask[i, 6] = False
            codec_mask[i, first_frame:end] = True
            attention[i, :end + 1] = 1
        return {"input_ids": input_ids, "ref_mels": torch.cat([b["ref_mel"] for b in batch], dim=0),
                "attention_mask": attention, "text_embedding_mask": text_mask.unsqueeze(-1),
                "codec_embedding_mask": codec_emb_mask.unsqueeze(-1), "codec_0_labels": labels,
                "codec_ids": codec_ids, "codec_mask": codec_mask}

    loader = torch.utils.data.DataLoader(OfficialStyleDataset(), batch_size=args.batch_size, shuffle=True,
                                         collate_fn=collate, generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW(tts.model.parameters(), lr=2e-5, weight_decay=0.01)
    model, optimizer, loader = accelerator.prepare(tts.model, optimizer, loader)
    model.train()
    step, loss = 0, None
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)  # GPU time, not launch time
    while step < args.steps:
        for batch in loader:
            sync()
            rec.batch(int(batch["codec_mask"].sum()), int(batch["attention_mask"].sum()), int(batch["attention_mask"].numel()))
            t_start = time.perf_counter()
            with accelerator.accumulate(model):
                codec_ids, codec_mask = batch["codec_ids"], batch["codec_mask"]
                spk = model.speaker_encoder(batch["ref_mels"].to(model.device).to(model.dtype)).detach()
                sync()
                t_spk = time.perf_counter()
                text_emb = model.talker.text_projection(model.talker.model.text_embedding(batch["input_ids"][:, :, 0]))
                text_emb = text_emb * batch["text_embedding_mask"]
                codec_emb = model.talker.model.codec_embedding(batch["input_ids"][:, :, 1]) * batch["codec_embedding_mask"]
                codec_emb[:, 6, :] = spk
                embeds = text_emb + codec_emb
                cp_embeddings = model.talker.code_predictor.get_input_embeddings()
                for g in range(1, 16):
                    embeds = embeds + cp_embeddings[g - 1](codec_ids[:, :, g]) * codec_mask.unsqueeze(-1)
                out = model.talker(inputs_embeds=embeds, attention_mask=batch["attention_mask"],
                                   labels=batch["codec_0_labels"], output_hidden_states=True)
                hidden = out.hidden_states[0][-1][:, :-1, :]
                _, sub_loss = model.talker.forward_sub_talker_finetune(codec_ids[codec_mask], hidden[codec_mask[:, 1:]])
                loss = out.loss + 0.3 * sub_loss
                accelerator.backward(loss)
                sync()
                t_bwd = time.perf_counter()
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                optimizer.zero_grad()
            sync()
            rec.parts.append((t_spk - t_start, t_bwd - t_spk, time.perf_counter() - t_bwd))
            step += 1
            if step >= args.steps:
                break
    return rec.result("official", time.perf_counter() - t0, final_loss=float(loss.detach()) if loss is not None else None)


def worker_split(args) -> dict:
    """What each part costs on a middle-length batch (best of 3): the code predictor's share of one fwd+bwd of
    our loss, the same loss with the heads' plain (unfused) cross-entropy, and one AdamW step over our trained
    parameters with the fused kernel vs torch's for-loop reference (what the official script gets).

    ``--released-split`` (released widths, where one fwd+bwd takes tens of seconds on a CPU core): one
    middle-length clip, one warm-up fwd+bwd then each part once, and what the text embedding costs when it
    trains, timed alone: its backward (a dense 151,936 x 2048 gradient) and one AdamW step over it, fused and
    for-loop, beside one AdamW step over the rest of our trained parameters (the second step of each counts:
    the first allocates the optimizer state)."""
    import torch
    import torch.nn.functional as F
    from qwen_tts import Qwen3TTSModel

    from qwen_tts_ext.train.data import SFTDataset, TextTokenizer, collate_examples, load_prepared
    from qwen_tts_ext.train.layout import IGNORE_INDEX, SpecialIds
    from qwen_tts_ext.train.config import TrainConfig
    from qwen_tts_ext.train.losses import heads_logits, sft_loss, subtalker_states, talker_forward, talker_hidden
    from qwen_tts_ext.train.setup import build_adamw

    dtype = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32  # bf16: our pure_bf16 mode
    tts = Qwen3TTSModel.from_pretrained(args.model, dtype=dtype, attn_implementation="sdpa")
    model = tts.model
    model.train()
    ds = load_prepared(args.prep)
    names = sorted({s.lower() for s in ds["speaker"]})
    data = SFTDataset(ds, TextTokenizer(tts.processor.tokenizer), SpecialIds.from_config(model.config), names)
    order = sorted(range(len(data)), key=lambda i: data.lengths[i])
    size = 1 if args.released_split else args.batch_size
    start = max(0, len(order) // 2 - size // 2)
    batch = collate_examples([data[i] for i in order[start:start + size]])
    vectors = torch.zeros(len(names), model.config.talker_config.hidden_size)

    def full():
        sft_loss(model.talker, batch, vectors).loss.backward()

    def full_unfused():  # the same loss with the heads' logits materialised: modules + F.cross_entropy
        hidden = talker_hidden(model.talker, batch, vectors)
        valid = batch.codec0_targets != IGNORE_INDEX
        talker_ce = F.cross_entropy(model.talker.codec_head(hidden[valid]).float(), batch.codec0_targets[valid])
        src = batch.subtalker_sources.nonzero(as_tuple=True)
        codes = batch.subtalker_codes[src]
        states = subtalker_states(model.talker, hidden[src], codes)[:, 1:]
        logits = heads_logits(states, model.talker.code_predictor.lm_head).float()
        sub_ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), codes[:, 1:].reshape(-1))
        (talker_ce + 0.3 * sub_ce).backward()

    def talker_only():
        logits, _ = talker_forward(model.talker, batch, vectors)
        valid = batch.codec0_targets != IGNORE_INDEX
        F.cross_entropy(logits[valid], batch.codec0_targets[valid]).backward()

    model.talker.model.text_embedding.weight.requires_grad_(False)  # our default
    times: dict[str, list[float]] = {"full": [], "talker": [], "unfused": []}
    parts = (("full", full), ("talker", talker_only), ("unfused", full_unfused))
    # the first round warms up (released width: one fwd+bwd of the full loss, then each part once)
    rounds = [(("warm-up", full),), parts] if args.released_split else [parts] * 4
    for k, round_ in enumerate(rounds):
        for name, fn in round_:
            model.zero_grad(set_to_none=True)
            t = time.perf_counter()
            fn()
            if k:
                times[name].append(time.perf_counter() - t)
    model.zero_grad(set_to_none=True)
    a, b = min(times["full"]), min(times["talker"])
    frames = int(batch.subtalker_sources.sum())
    if args.released_split:
        return {"name": "split", "full": a, "talker": b, "code_predictor_share": max(0.0, (a - b) / a),
                "unfused_heads": min(times["unfused"]), "frames": frames, **released_fixed_costs(model, batch),
                "rank": 0, "world_size": 1, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
    params = [p for p in model.talker.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    adam = {}
    for impl in ("fused", "for-loop"):
        opt = build_adamw(params, TrainConfig(lr=1e-6, adamw_impl=impl))
        ts = []
        for _ in range(4):
            t = time.perf_counter()
            opt.step()
            ts.append(time.perf_counter() - t)
        adam[impl] = min(ts[1:])
    return {"name": "split", "full": a, "talker": b, "code_predictor_share": max(0.0, (a - b) / a),
            "unfused_heads": min(times["unfused"]), "adamw_fused": adam["fused"], "adamw_loop": adam["for-loop"],
            "frames": frames, "rank": 0, "world_size": 1, "peak_rss_mb": 0.0}


def released_fixed_costs(model, batch) -> dict:
    """Per-step costs that do not grow with the batch, timed alone at released width: the trained text
    embedding's backward and its AdamW step, and an AdamW step over the rest of our trained parameters, each
    with the fused kernel (ours) and torch's for-loop reference (what the official script gets on a CPU)."""
    import torch

    from qwen_tts_ext.train.config import TrainConfig
    from qwen_tts_ext.train.setup import build_adamw

    emb = model.talker.model.text_embedding
    emb.weight.requires_grad_(True)
    ts = []
    for _ in range(3):
        emb.weight.grad = None
        t = time.perf_counter()
        emb(batch.text_ids).float().sum().backward()  # the dense [151936, 2048] gradient every step
        ts.append(time.perf_counter() - t)
    out = {"emb_backward": min(ts[1:])}
    rest = [p for p in model.talker.parameters() if p is not emb.weight and p.requires_grad]
    for p in rest + [emb.weight]:
        p.grad = torch.randn_like(p) * 1e-3
    ts = []
    for _ in range(2):  # its share of the gradient clipping (the norm over all trained gradients)
        t = time.perf_counter()
        torch.nn.utils.clip_grad_norm_([emb.weight], 1e9)
        ts.append(time.perf_counter() - t)
    out["emb_clip"] = min(ts)
    for key, params in (("emb", [emb.weight]), ("rest", rest)):
        for impl in ("fused", "for-loop"):
            opt = build_adamw(params, TrainConfig(lr=1e-6, adamw_impl=impl), say=lambda *_: None)
            ts = []
            for _ in range(2):  # the first step allocates the state
                t = time.perf_counter()
                opt.step()
                ts.append(time.perf_counter() - t)
            out[f"adamw_{key}_{impl.replace('-', '_')}"] = ts[-1]
            del opt
    out["emb_params"] = emb.weight.numel()
    out["rest_params"] = sum(p.numel() for p in rest)
    return out


def run_worker(args) -> int:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    res = {"ours": worker_ours, "official": worker_official, "split": worker_split}[args.worker](args)
    rank = int(os.environ.get("RANK", "0"))
    Path(f"{args.result}.rank{rank}.json").write_text(json.dumps(res))
    return 0


# =========================================================================== orchestration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(kind: str, paths: dict, args, work: Path, tag: str, processes: int = 1,
           extra: list[str] | None = None) -> tuple[dict | None, str, str]:
    """Run one worker in a fresh process (or ``processes`` under accelerate); return (merged result, command, error)."""
    result = work / "results" / tag
    result.parent.mkdir(parents=True, exist_ok=True)
    for old in result.parent.glob(f"{tag}.rank*.json"):
        old.unlink()
    run_dir = work / "runs" / tag
    shutil.rmtree(run_dir, ignore_errors=True)
    script = str(Path(__file__).resolve())
    worker = [script, "--worker", kind, "--model", paths["model"], "--prep", paths["prep"],
              "--official-jsonl", paths["official_jsonl"], "--steps", str(args.steps), "--batch-size", str(args.batch_size),
              "--run-dir", str(run_dir), "--result", str(result), "--dtype", args.dtype,
              "--device", args.device] + (extra or [])
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", WANDB_MODE="disabled")
    if args.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # accelerate would otherwise put our loop on a GPU it finds
    cores = os.cpu_count() or 1
    if processes == 1:
        cmd = [sys.executable] + worker + (["--threads", str(args.threads)] if args.threads else [])
    else:
        per = args.threads or max(1, cores // processes)
        env["OMP_NUM_THREADS"] = str(per)
        # `accelerate launch --cpu --num_processes N` starts ONE process in accelerate 1.12 (its simple
        # launcher only distributes CPU runs through mpirun); --multi_gpu goes through torchrun, and
        # without CUDA accelerate then runs MULTI_CPU over gloo.
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(_free_port())] + worker + ["--threads", str(per)]
    proc = subprocess.run(cmd, cwd=str(REPO), env=env, capture_output=True, text=True)
    for heavy in ("checkpoints", "export"):  # the end-of-run checkpoint and export (GBs at released shapes)
        shutil.rmtree(run_dir / heavy, ignore_errors=True)
    shown = " ".join(cmd).replace(f"{sys.executable} -m accelerate.commands.launch", "accelerate launch")
    shown = shown.replace(sys.executable, "python").replace(str(REPO) + "/", "")
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-12:]
        return None, shown, "\n".join(tail)
    parts = [json.loads(p.read_text()) for p in sorted(result.parent.glob(f"{tag}.rank*.json"))]
    if kind == "split":
        return (parts[0] if parts else None), shown, "" if parts else "no result file"
    if len(parts) != processes or any(p["world_size"] != processes for p in parts):
        return None, shown, (f"asked for {processes} processes, got {len(parts)} result file(s) with world size "
                             f"{sorted({p['world_size'] for p in parts})}")
    merged = merge(parts)
    if kind == "ours" and merged.get("loop_processes") != processes:
        return None, shown, (f"the loop's metrics.jsonl says {merged.get('loop_processes')} process(es), "
                             f"not {processes}")
    return merged, shown, ""


def merge(parts: list[dict]) -> dict:
    """Ranks -> one result: the measures are rank 0's (our loop's records count every process's frames and
    positions), the wall time the slowest rank's, RSS adds up."""
    parts = sorted(parts, key=lambda p: p["rank"])
    m = dict(parts[0])
    m["wall"] = max(p["wall"] for p in parts)
    m["peak_rss_mb"] = sum(p["peak_rss_mb"] for p in parts)
    m["peak_rss_mb_per_process"] = [round(p["peak_rss_mb"], 1) for p in parts]
    m["processes"] = len(parts)
    return m


def metrics(r: dict) -> dict:
    t = r["time_steady"]
    return {"frames_s": r["frames_steady"] / t, "steps_s": r["steps_steady"] / t,
            "padding": r["real_positions"] / max(1, r["slots"]), "rss": r["peak_rss_mb"],
            "data_ms": 1000 * r["data_wait"] / max(1, r["steps_steady"])}


def machine() -> dict:
    model = platform.processor() or "unknown"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    mem = ""
    try:
        kb = int(next(l for l in open("/proc/meminfo") if l.startswith("MemTotal")).split()[1])
        mem = f"{kb / 1024 / 1024:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    import torch

    return {"cpu": model, "cores": os.cpu_count(), "memory": mem, "torch": torch.__version__,
            "python": platform.python_version()}


def render(results: dict, failures: dict, commands: dict, mach: dict, args, load: tuple, corpus: dict,
           runs: dict | None = None, split: dict | None = None) -> str:
    start, end = markers(args)
    title = "## Training loop: ours vs the official recipe (scripts/bench_train.py)"
    if start != START:
        title += f", talker hidden {args.hidden} x {args.layers} layers"
    lines = [start, title, "",
             "<!-- generated by scripts/bench_train.py; rerun it to refresh this section -->", "",
             f"Machine: {mach['cpu']}, {mach['cores']} cores, {mach['memory']} RAM; torch {mach['torch']}, "
             f"Python {mach['python']}. Load average before/after: {load[0]:.1f} / {load[1]:.1f}. "
             + ("**The machine was busy with other jobs while these numbers were taken** (load average at the "
              "start above 1.5), so absolute numbers are noisy; " if load[0] > 1.5 else
              "Run on 2 small cores: throughput is noisy from run to run; ") + "each configuration ran "
             f"{args.repeats} time(s), alternating, and the fastest run is shown.", "",
             f"Workload: factory model (talker hidden {args.hidden}, {args.layers} layers, intermediate "
             f"{args.intermediate}; code predictor hidden {args.hidden // 2}, {args.cp_layers} layers), "
             f"{corpus['rows']} espeak-ng clips ({args.speakers} speakers x {args.clips}, "
             f"{corpus['min_frames']}-{corpus['max_frames']} frames, {corpus['frames']} frames in all), "
             f"CPU {args.dtype}, {args.threads or 'default'} torch thread(s) per process, batch size {args.batch_size}, "
             f"{args.steps} optimizer steps, no gradient accumulation. "
             "Throughput counts steps 2..N (first-to-last optimizer step); padding efficiency = real positions / "
             "padded slots over all batches; input pipeline = time waiting for the next batch (loading, tokenizing, "
             "collating: our loop's data-wait records; in the official port, from the end of one optimizer step to the "
             "start of the next batch's compute); peak RSS is each process's own maximum (summed over "
             "processes).", "",
             "| run | processes | frames/s | steps/s | padding efficiency | input pipeline (ms/step) | peak RSS (MB) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for key, label in (("ours", "ours (qwen_tts_ext.train.loop)"), ("official", "official loop, CPU port"),
                       ("ours_2proc", "ours, 2 processes (accelerate, gloo)"),
                       ("ours_subset", f"ours, sub-talker loss on {args.subtalker_fraction or 0:g} of the frames "
                                       "(less work)")):
        if key in results:
            r = results[key]
            m = metrics(r)
            lines.append(f"| {label} | {r['processes']} | {m['frames_s']:.1f} | {m['steps_s']:.2f} | "
                         f"{m['padding'] * 100:.1f}% | {m['data_ms']:.0f} | {m['rss']:.0f} |")
        elif key in failures:
            lines.append(f"| {label} | - | failed | - | - | - | - |")
    lines.append("")
    if runs:
        lines += ["Every run, frames/s (in run order): " + "; ".join(
            f"{k} " + ", ".join(f"{v:.1f}" for v in vals) for k, vals in runs.items()) + ".", ""]
    if "ours" in results and "official" in results:
        a, b = metrics(results["ours"]), metrics(results["official"])
        if runs and len(runs.get("ours", [])) > 1 and len(runs.get("official", [])) > 1:
            headline = (f"**Ours / official: {median(runs['ours']) / median(runs['official']):.2f}x frames/s** "
                        f"(median of the runs above; fastest runs {a['frames_s'] / b['frames_s']:.2f}x, "
                        f"{a['steps_s'] / b['steps_s']:.2f}x steps/s; ")
        else:
            headline = f"**Ours / official: {a['frames_s'] / b['frames_s']:.2f}x frames/s** ({a['steps_s'] / b['steps_s']:.2f}x steps/s; "
        lines.append(headline + "goal >= 1.5x frames/s with padding efficiency "
                     f">= 90%: padding {a['padding'] * 100:.1f}% vs {b['padding'] * 100:.1f}%; "
                     f"peak RSS {a['rss']:.0f} vs {b['rss']:.0f} MB).")
    if "fwd_bwd" in results.get("ours", {}):
        r = results["ours"]
        per = 1000.0 / max(1, r["steps_steady"])
        lines.append(f"Our loop's own timing records (`metrics.jsonl`, fastest run), per optimizer step: "
                     f"{r['data_wait'] * per:.0f} ms waiting for the batch, {r['fwd_bwd'] * per:.0f} ms forward + "
                     f"backward, {r['optimizer'] * per:.0f} ms in the optimizer.")
    if "ours_subset" in results and "ours" in results:
        a, b = metrics(results["ours_subset"]), metrics(results["ours"])
        lines.append(f"With `train.subtalker_frame_fraction={args.subtalker_fraction:g}` (the code predictor scored on "
                     f"that share of each batch's frames: an unbiased but noisier estimate of the same loss), ours runs "
                     f"at {a['frames_s'] / b['frames_s']:.2f}x its full-objective frames/s. That is less work, so it is "
                     "not part of the comparison with the official loop.")
    if "ours_2proc" in results and "ours" in results:
        a, b = metrics(results["ours_2proc"]), metrics(results["ours"])
        lines.append(f"Two processes vs one: {a['frames_s'] / b['frames_s']:.2f}x frames/s (per-process batch "
                     f"{args.batch_size}, so twice the frames per step; {args.threads or 'default'} torch "
                     f"thread(s) per process on {mach['cores']} cores). Launched with `accelerate launch --multi_gpu "
                     "--num_processes 2` on this GPU-less machine (CPU, gloo): `accelerate launch --cpu --num_processes 2` "
                     "starts a single process in accelerate 1.12.")
    for key, err in failures.items():
        lines += ["", f"`{key}` failed; last lines of its output:", "", "```", err, "```"]
    if split is not None and "ours" in results and "official" in results:
        cp = split["code_predictor_share"]
        pa, pb = metrics(results["ours"])["padding"], metrics(results["official"])["padding"]
        bound = (cp + (1 - cp) / pb) / (cp + (1 - cp) / pa)
        ra, rb = metrics(results["ours"]), metrics(results["official"])
        step_ours = 1000.0 / ra["steps_s"]
        lines += ["", f"Where the speedup comes from (each part timed alone on a middle-length batch of {args.batch_size}, "
                  "best of 3):", "",
                  f"- length bucketing: the code predictor takes {cp * 100:.0f}% of one fwd+bwd of our loss "
                  f"({split['full']:.2f} s in all, {split['talker']:.2f} s without it) and runs on frames only, so "
                  f"padding only inflates the talker's part: padding efficiency {pb * 100:.1f}% -> {pa * 100:.1f}% is "
                  f"worth about {bound:.2f}x;",
                  f"- fused linear cross-entropy for the 16 codec heads (`qwen_tts_ext/train/linear_ce.py`: no "
                  f"`[frames, 15, 2048]` logits kept for backward): fwd+bwd {split['unfused_heads']:.2f} s -> "
                  f"{split['full']:.2f} s ({split['unfused_heads'] / split['full']:.2f}x);",
                  f"- fused AdamW (`train.adamw_impl=fused`, default) over our trained parameters: "
                  f"{split['adamw_loop'] * 1000:.0f} ms -> {split['adamw_fused'] * 1000:.0f} ms per step "
                  "(torch's for-loop reference is what the official script gets on CPU; it also updates the text "
                  "embedding, which ours freezes);",
                  f"- input pipeline: the official loop's adds {rb['data_ms'] - ra['data_ms']:.0f} ms to a "
                  f"{step_ours:.0f} ms step (ours: speaker vectors from data prep, no audio re-read).", ""]
        saved = split["talker"] * (pa / pb - 1) + split["unfused_heads"] - split["full"] \
            + split["adamw_loop"] - split["adamw_fused"] + (rb["data_ms"] - ra["data_ms"]) / 1000
        lines += [f"Timed alone, these parts add up to {saved * 1000:.0f} ms per step against a measured difference of "
                  f"{1000.0 / rb['steps_s'] - step_ours:.0f} ms between the two loops' fastest runs (different batches, "
                  "one warm process per part): they say where the time goes; the end-to-end ratio above is the number "
                  "to quote. On 2 shared cores a single run can be off by 10-20%: compare every run listed above."]
    lines += ["", "Both loops run the same model, objective and batch size on the same data; the official loop's "
              "extra per-step work (librosa + mel + speaker encoder) uses the factory's small ECAPA-TDNN (channels "
              "32-96 instead of the released 512-1536). In these small models the code predictor (16 positions per "
              "frame, 15 heads over 2048 codes) is a large share of the work and runs on frames only, so bucketing's "
              "saving is bounded by the talker's share; `--hidden/--intermediate/--layers` change that share.",
              "", "What differs (all measured in the same run on the same prepared data):", "",
              "- the official loop tokenizes every transcript, re-reads the reference audio with librosa and computes "
              "its mel spectrogram in `__getitem__`, and runs the speaker encoder in every step; ours reads the "
              "speaker vectors computed once by data prep;",
              "- it shuffles without regard to length and pads every batch to the longest sample + 8 positions; ours "
              "buckets by length (less padding);",
              "- it scores the heads through `forward_finetune` + HF's loss (logits kept for backward) and steps "
              "torch's default AdamW; ours fuses each head's matmul with its cross-entropy and uses the fused AdamW "
              "kernel (same math: `tests/test_sft.py` holds the fused loss equal to the stock path);",
              "- it keeps every hidden state (`output_hidden_states=True`) and trains all parameters including the "
              "151936-row text embedding (here the factory's small text vocabulary makes that cheap); ours freezes "
              "the text embedding by default.",
              "", "Commands:", "", "```", f"python scripts/bench_train.py {' '.join(args.argv)}".rstrip()]
    lines += [f"# {k}: {v}" for k, v in commands.items()]
    lines += ["```", end]
    return "\n".join(lines) + "\n"


def per_step(r: dict) -> dict:
    """Seconds per optimizer step (steps 2..N) of one run: input, speaker encoder, fwd+bwd, optimizer, the rest."""
    n = max(1, r["steps_steady"])
    out = {"step": r["time_steady"] / n, "input": r["data_wait"] / n, "speaker": r.get("speaker_encoder", 0.0) / n,
           "fwd_bwd": r.get("fwd_bwd", float("nan")) / n, "optimizer": r.get("optimizer", float("nan")) / n,
           "frames": r["frames_steady"] / n}
    out["other"] = out["step"] - out["input"] - out["speaker"] - out["fwd_bwd"] - out["optimizer"]
    return out


def breakdown(ours: dict, official: dict, split: dict) -> dict:
    """Where the official loop's extra time per frame goes: ms per frame, official minus ours, steps 2..N.

    The measured rows add up to the gap: the optimizer (clip + step + zero_grad), forward+backward, the
    speaker encoder (the port times it every step), the input pipeline and the rest of the step (logging,
    loss reduction). The optimizer and fwd+bwd rows are then split by what was timed alone at the same width
    (``released_fixed_costs`` and the split process): the text embedding (its clipping and a for-loop AdamW
    step in the optimizer row, its dense gradient in the fwd+bwd row), the AdamW kernel over the other
    parameters (for-loop - fused), the fused heads; bucketing is estimated as the talker's share of our
    fwd+bwd times the extra padded positions. What the parts leave of a row is reported as unexplained."""
    a, b = per_step(ours), per_step(official)
    fa, fb = a["frames"], b["frames"]
    pa = ours["real_positions"] / max(1, ours["slots"])
    pb = official["real_positions"] / max(1, official["slots"])
    ms = lambda seconds_a, seconds_b: 1000 * (seconds_b / fb - seconds_a / fa)  # noqa: E731
    rows = {"optimizer": ms(a["optimizer"], b["optimizer"]), "fwd_bwd": ms(a["fwd_bwd"], b["fwd_bwd"]),
            "speaker_encoder": ms(0.0, b["speaker"]), "input": ms(a["input"], b["input"]),
            "other": ms(a["other"], b["other"])}
    talker_pf = (1 - split["code_predictor_share"]) * a["fwd_bwd"] / fa
    parts = {  # per frame of the official run (its per-step costs spread over its frames)
        "optimizer": {"text_embedding": 1000 * (split.get("emb_clip", 0.0) + split["adamw_emb_for_loop"]) / fb,
                      "adamw_kernel": 1000 * (split["adamw_rest_for_loop"] - split["adamw_rest_fused"]) / fb},
        "fwd_bwd": {"bucketing": 1000 * talker_pf * (pa / pb - 1),
                    "text_embedding": 1000 * split["emb_backward"] / fb,
                    "fused_heads": 1000 * (split["unfused_heads"] - split["full"]) / max(1, split["frames"])},
    }
    for row, sub in parts.items():
        sub["unexplained"] = rows[row] - sum(sub.values())
    gap = 1000 * (b["step"] / fb - a["step"] / fa)
    return {"ours_ms": 1000 * a["step"] / fa, "official_ms": 1000 * b["step"] / fb, "gap_ms": gap, "rows_ms": rows,
            "parts_ms": parts, "padding": (pa, pb),
            "text_embedding_ms": parts["optimizer"]["text_embedding"] + parts["fwd_bwd"]["text_embedding"]}


def accumulation_estimate(ours: dict, official: dict, accum: int = 4) -> float:
    """Ours / official frames/s if each optimizer step took ``accum`` micro-batches (the official script's
    hard-coded 4), from each run's measured parts: per micro-batch everything but the optimizer, per optimizer
    step the optimizer; the same frames per micro-batch for both (the mean of the two runs)."""
    a, b = per_step(ours), per_step(official)
    frames = (a["frames"] + b["frames"]) / 2
    micro_a = (a["step"] - a["optimizer"]) / a["frames"] * frames
    micro_b = (b["step"] - b["optimizer"]) / b["frames"] * frames
    return (accum * micro_b + b["optimizer"]) / (accum * micro_a + a["optimizer"])


def step_range(results: dict) -> str:
    """'38-52 s': the fastest runs' seconds per step, lowest to highest."""
    steps = sorted(per_step(r)["step"] for r in results.values())
    return f"{steps[0]:.0f}-{steps[-1]:.0f} s" if steps else "tens of seconds"


def render_released(results: dict, failures: dict, commands: dict, mach: dict, args, load: tuple, corpus: dict,
                    runs: dict | None = None, split: dict | None = None, params: int | None = None) -> str:
    """The ``--shape`` section: the side-by-side ratio at released width in bf16 and where it comes from."""
    from qwen_tts_ext import released as R

    start, end = markers(args)
    d = R.dims(args.shape, args.layers)
    depth = "all 28 talker layers" if args.layers == 28 else f"{args.layers} of the 28 talker layers (the ratio is per layer count)"
    lines = [start, f"## Training loop at the released {args.shape.upper()} shape, bf16: ours vs the official recipe "
             f"(scripts/bench_train.py --shape {args.shape})", "",
             "<!-- generated by scripts/bench_train.py --shape; rerun it to refresh this section -->", "",
             f"Date: {time.strftime('%Y-%m-%d')}. Machine: {mach['cpu']}, {mach['cores']} cores, {mach['memory']} RAM; "
             f"torch {mach['torch']}, Python {mach['python']}. Load average before/after: {load[0]:.1f} / {load[1]:.1f}"
             + (" (**other jobs were running**: absolute numbers are noisy, compare runs side by side)" if load[0] > 1.5
                else "") + f". Each loop ran {args.repeats} time(s), alternating.", "",
             f"Workload: random weights at {d.name}'s released widths with {depth}: talker hidden {d.hidden}, FFN "
             f"{d.intermediate}, 16/8 heads of 128, the {d.text_vocab:,} x {d.text_hidden} text embedding, code predictor "
             f"{d.cp_hidden} x {d.cp_layers} layers, the ECAPA-TDNN speaker encoder"
             + (f"; {params:,} parameters" if params else "") + " (`build_released_tts`; its text tokenizer is "
             "byte-level, so a transcript has about 4x the released tokenizer's text tokens, and its speech tokenizer "
             "is the tiny factory codec: only data prep uses it). bf16 as the official script trains: ours with "
             "`train.pure_bf16=true train.precision=no` (bf16 weights and AdamW state, fused AdamW, text embedding "
             "frozen, speaker vectors from data prep); the official port loads the weights in bf16 and runs under "
             "accelerate's `mixed_precision=\"bf16\"` (autocast), with torch's default AdamW over every parameter "
             "(on a CPU that is the for-loop implementation). "
             f"{corpus['rows']} espeak-ng clips of "
             + ("1 sentence" if args.sentences == 1 else f"1 to {args.sentences} sentences") + f" ({args.speakers} speakers x "
             f"{args.clips}, {corpus['min_frames']}-{corpus['max_frames']} frames), batch size {args.batch_size} "
             "(the official script's default), no gradient accumulation (the official script's is 4: see the estimate "
             f"below), {args.steps} optimizer steps per run, throughput over steps 2..{args.steps}, "
             f"{args.threads or 'default'} torch thread(s).", "",
             "| run | frames/s | s/step | padding efficiency | input (s/step) | speaker encoder (s/step) | "
             "fwd+bwd (s/step) | optimizer (s/step) | peak RSS (MB) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    labels = (("ours", "ours (qwen_tts_ext.train.loop)"), ("official", "official loop, CPU port"),
              ("ours_unfrozen", "ours, text embedding trained (`train.freeze_text_embedding=false`)"))
    for key, label in labels:
        if key in results:
            m, t = metrics(results[key]), per_step(results[key])
            spk = f"{t['speaker']:.2f}" if key == "official" else "-"
            lines.append(f"| {label} | {m['frames_s']:.2f} | {t['step']:.1f} | {m['padding'] * 100:.1f}% | "
                         f"{t['input']:.2f} | {spk} | {t['fwd_bwd']:.1f} | {t['optimizer']:.2f} | {m['rss']:.0f} |")
        elif key in failures:
            lines.append(f"| {label} | failed | - | - | - | - | - | - | - |")
    lines += ["", "Each loop's fastest run. Per step: input = waiting for the batch (ours: the loop's data-wait "
              "records; the port: from the end of one optimizer step to the start of the next batch's compute); "
              "fwd+bwd excludes the port's speaker encoder; optimizer = clip + step + zero_grad (ours also the "
              "schedule).", ""]
    if runs:
        lines += ["Every run, frames/s (in run order): " + "; ".join(
            f"{k} " + ", ".join(f"{v:.2f}" for v in vals) for k, vals in runs.items()) + ".", ""]
    if "ours" in results and "official" in results:
        a, b = metrics(results["ours"]), metrics(results["official"])
        if runs and len(runs.get("ours", [])) > 1 and len(runs.get("official", [])) > 1:
            ratio = median(runs["ours"]) / median(runs["official"])
            how = f"median of the runs above; fastest runs {a['frames_s'] / b['frames_s']:.2f}x"
        else:
            ratio, how = a["frames_s"] / b["frames_s"], "one run each"
        lines.append(f"**Ours / official at the released {args.shape.upper()} shape in bf16: {ratio:.2f}x frames/s** ({how}; "
                     f"padding {a['padding'] * 100:.1f}% vs {b['padding'] * 100:.1f}%; peak RSS {a['rss']:.0f} vs "
                     f"{b['rss']:.0f} MB).")
        if split is not None and "emb_backward" in split:
            bd = breakdown(results["ours"], results["official"], split)
            rows, parts, gap = bd["rows_ms"], bd["parts_ms"], bd["gap_ms"]
            pa, pb = bd["padding"]
            ta, tb = per_step(results["ours"]), per_step(results["official"])

            def row(name, v, how):
                share = f"{100 * v / gap:.0f}%" if gap > 0 else "-"
                return f"| {name} | {v:.0f} | {share} | {how} |"

            lines += ["", f"Where the gain comes from, in ms per frame, official minus ours (ours {bd['ours_ms']:.0f}, "
                      f"official {bd['official_ms']:.0f}: a gap of {gap:.0f} ms per frame). The bold rows are "
                      "measured in the two runs above and add up to the gap; the rows under them split a bold row "
                      "by what was timed alone at the same width, or estimated:", "",
                      "| part | ms per frame | share of the gap | how it is known |", "|---|---:|---:|---|",
                      row("**optimizer** (clip + AdamW step + zero_grad)", rows["optimizer"],
                          f"measured: official {tb['optimizer']:.2f} s/step (torch's for-loop AdamW over all "
                          f"{(split['emb_params'] + split['rest_params']) / 1e6:.0f}M trained parameters), ours "
                          f"{ta['optimizer']:.2f} s/step (fused AdamW over {split['rest_params'] / 1e6:.0f}M)"),
                      row("- text embedding frozen: its clipping and AdamW update", parts["optimizer"]["text_embedding"],
                          f"timed alone: {split.get('emb_clip', 0.0):.2f} s + {split['adamw_emb_for_loop']:.2f} s per "
                          f"step (fused: {split['adamw_emb_fused']:.2f} s)"),
                      row(f"- fused AdamW over the other {split['rest_params'] / 1e6:.0f}M parameters",
                          parts["optimizer"]["adamw_kernel"],
                          f"timed alone: {split['adamw_rest_for_loop']:.2f} s for-loop vs {split['adamw_rest_fused']:.2f} "
                          "s fused per step"),
                      row("- unexplained (AdamW and clipping are memory-bound: other jobs' load hits them most)",
                          parts["optimizer"]["unexplained"], "the row minus the two above"),
                      row("**forward + backward**", rows["fwd_bwd"],
                          f"measured: official {1000 * tb['fwd_bwd'] / tb['frames']:.0f} ms/frame (speaker encoder "
                          f"apart), ours {1000 * ta['fwd_bwd'] / ta['frames']:.0f}"),
                      row(f"- bucketing (padding {pb * 100:.0f}% -> {pa * 100:.0f}%)", parts["fwd_bwd"]["bucketing"],
                          f"**estimate**: the talker's {100 * (1 - split['code_predictor_share']):.0f}% of our fwd+bwd "
                          "(timed alone) times the extra padded positions; the code predictor runs on frames only"),
                      row("- text embedding frozen: no dense 151,936 x 2048 gradient", parts["fwd_bwd"]["text_embedding"],
                          f"timed alone: {split['emb_backward']:.2f} s per step"),
                      row("- fused linear cross-entropy for the 16 heads", parts["fwd_bwd"]["fused_heads"],
                          f"timed alone on one clip ({split['frames']} frames): {split['unfused_heads']:.1f} s unfused vs "
                          f"{split['full']:.1f} s"),
                      row("- unexplained (run-to-run noise, autocast, kept hidden states, other clips per step)",
                          parts["fwd_bwd"]["unexplained"], "the row minus the three above"),
                      row("**speaker encoder every step** (ours: x-vectors from data prep)", rows["speaker_encoder"],
                          f"measured: {tb['speaker']:.2f} s/step"),
                      row("**input pipeline** (ours: no audio re-read, no mel per sample)", rows["input"],
                          f"measured: {tb['input']:.2f} vs {ta['input']:.2f} s/step"),
                      row("**rest of the step** (logging, loss reduction)", rows["other"], "measured"), "",
                      f"The frozen text embedding in all: {bd['text_embedding_ms']:.0f} ms per frame timed alone "
                      f"({100 * bd['text_embedding_ms'] / gap:.0f}% of the gap)" if gap > 0 else
                      f"The frozen text embedding in all: {bd['text_embedding_ms']:.0f} ms per frame timed alone"]
            if "ours_unfrozen" in results:
                u = metrics(results["ours_unfrozen"])
                lines[-1] += (f"; toggled in our own loop (`train.freeze_text_embedding=false`, one run) ours ran at "
                              f"{u['frames_s']:.2f} frames/s, {a['frames_s'] / u['frames_s']:.2f}x slower than "
                              "frozen (fastest runs)")
            lines[-1] += "."
            est = accumulation_estimate(results["ours"], results["official"])
            lines += ["", f"**Estimate** with the official script's gradient accumulation of 4 (each loop's measured "
                      "optimizer time once per 4 micro-batches, everything else per micro-batch): about "
                      f"{est:.2f}x. The optimizer rows are CPU-sized: on a GPU torch's default AdamW is the foreach "
                      "kernel, not the for-loop, so that part of the gap shrinks there, while the padding, speaker "
                      "encoder and input parts scale with the work per frame.", ""]
    for key, err in failures.items():
        lines += ["", f"`{key}` failed; last lines of its output:", "", "```", err, "```"]
    lines += ["What the numbers mean: frames/s = codec frames trained per second over optimizer steps 2..N (model "
              "loading, the first step and our end-of-run checkpoint/export excluded). Both loops train the same "
              "model, objective terms and batch size on the same prepared clips; the official loop also trains the "
              "text embedding and runs the speaker encoder each step, which is what it does at this width. "
              f"A step at this width takes {step_range(results)} on one CPU core, so each run has only "
              f"{args.steps - 1} timed step(s); the parts timed alone are steadier than the runs' difference.", "",
              "Commands:", "", "```", f"python scripts/bench_train.py {' '.join(args.argv)}".rstrip()]
    lines += [f"# {k}: {v}" for k, v in commands.items()]
    lines += ["```", end]
    return "\n".join(lines) + "\n"


def markers(args) -> tuple[str, str]:
    """The default model's section uses the plain markers; other sizes and shapes get their own section."""
    if args.shape:
        return START.replace(" -->", f":{model_tag(args)} -->"), END.replace(" -->", f":{model_tag(args)} -->")
    if (args.hidden, args.intermediate, args.layers, args.cp_layers) == (256, 512, 4, 2):
        return START, END
    tag = f"h{args.hidden}-i{args.intermediate}-l{args.layers}-cp{args.cp_layers}"
    return START.replace(" -->", f":{tag} -->"), END.replace(" -->", f":{tag} -->")


def write_doc(path: Path, section: str, start: str = START, end: str = END) -> None:
    """Replace our marked section (or append it), keeping every other section of the file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.read_text(encoding="utf-8") if path.is_file() else "# Benchmarks\n\n"
    if start in old and end in old:
        head, rest = old.split(start, 1)
        new = head + section.rstrip("\n") + rest.split(end, 1)[1]
    else:
        new = old.rstrip("\n") + "\n\n" + section
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(new)
    os.replace(tmp, path)


def orchestrate(args) -> int:
    from tqdm.auto import tqdm

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_train-"))
    log = lambda msg: print(f"[bench] {msg}", flush=True)  # noqa: E731
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    paths = setup(work, args, log)
    from datasets import load_from_disk

    ds = load_from_disk(str(Path(paths["prep"]) / "dataset"))
    frames = list(ds["num_frames"])
    corpus = {"rows": len(ds), "frames": sum(frames), "min_frames": min(frames), "max_frames": max(frames)}
    log(f"setup done in {time.perf_counter() - t0:.0f}s: {corpus['rows']} clips, {corpus['min_frames']}-"
        f"{corpus['max_frames']} frames; work dir {work}")

    plan = []
    for rep in range(args.repeats):
        order = [("ours", 1), ("official", 1)] if rep % 2 == 0 else [("official", 1), ("ours", 1)]
        plan += [(k, p, rep) for k, p in order]
    if not args.no_multiproc:
        plan.append(("ours_2proc", 2, 0))
    if args.subtalker_fraction:
        plan.append(("ours_subset", 1, 0))
    if args.unfrozen_run:  # our loop training the text embedding, as the official one does
        plan.append(("ours_unfrozen", 1, 0))
    split, _, split_err = launch("split", paths, args, work, "split", extra=["--released-split"] if args.shape else None)
    if split is None:
        log(f"compute split failed:\n{split_err}")
    elif args.shape:
        log(f"code predictor: {split['code_predictor_share'] * 100:.0f}% of one fwd+bwd ({split['full']:.1f} s, "
            f"{split['frames']} frames); fused heads {split['unfused_heads'] / split['full']:.2f}x; text embedding "
            f"backward {split['emb_backward']:.2f} s, AdamW over it {split['adamw_emb_for_loop']:.2f} s for-loop / "
            f"{split['adamw_emb_fused']:.2f} s fused; over the rest {split['adamw_rest_for_loop']:.2f} s / "
            f"{split['adamw_rest_fused']:.2f} s")
    else:
        log(f"code predictor: {split['code_predictor_share'] * 100:.0f}% of one fwd+bwd; fused heads "
            f"{split['unfused_heads'] / split['full']:.2f}x; AdamW fused {split['adamw_fused'] * 1000:.0f} ms vs "
            f"for-loop {split['adamw_loop'] * 1000:.0f} ms")
    best: dict[str, dict] = {}
    failures: dict[str, str] = {}
    commands: dict[str, str] = {}
    runs: dict[str, list[float]] = {}
    for key, procs, rep in tqdm(plan, desc="bench runs", unit="run"):
        kind = "ours" if key.startswith("ours") else "official"
        extra = {"ours_subset": ["--subtalker-fraction", str(args.subtalker_fraction)],
                 "ours_unfrozen": ["--set", "train.freeze_text_embedding=false"]}.get(key)
        res, cmd, err = launch(kind, paths, args, work, f"{key}-{rep}", procs, extra)
        commands[key] = cmd
        if res is None:
            failures[key] = err
            log(f"{key} (run {rep + 1}) failed:\n{err}")
            continue
        m = metrics(res)
        runs.setdefault(key, []).append(m["frames_s"])
        log(f"{key} run {rep + 1}: {m['frames_s']:.2f} frames/s, {1 / m['steps_s']:.1f} s/step, "
            f"padding {m['padding'] * 100:.1f}%, input {m['data_ms']:.0f} ms/step, peak RSS {m['rss']:.0f} MB")
        if key not in best or metrics(best[key])["frames_s"] < m["frames_s"]:
            best[key] = res
        failures.pop(key, None)
    load1 = os.getloadavg()[0]
    if args.shape:
        section = render_released(best, failures, commands, machine(), args, (load0, load1), corpus, runs, split,
                                  paths.get("params"))
    else:
        section = render(best, failures, commands, machine(), args, (load0, load1), corpus, runs, split)
    print()
    start, end = markers(args)
    print(section.replace(start + "\n", "").replace(end + "\n", ""))
    if not args.no_write:
        write_doc(Path(args.output), section, start, end)
        log(f"wrote {args.output}")
    if not args.workdir and not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    log(f"total {time.perf_counter() - t0:.0f}s")
    return 0 if "ours" in best and "official" in best else 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] + " Prints frames/s, steps/s, padding "
                                "efficiency and peak RSS for each loop and the ratio; rewrites its section of "
                                "docs/benchmarks.md.", epilog="\n\n".join(__doc__.split("\n\n")[1:3]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", choices=SHAPE_DEFAULTS, help="a released model's shape (real widths, random "
                   "weights, the 151,936-row text embedding) in bf16 as the official script trains, instead of the "
                   "small factory model; its own defaults (see --layers, --steps, --repeats, --batch-size, "
                   "--sentences) fit about 15 minutes on 2 cores")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per run (default 16; with --shape 3; fewer "
                   "steps weigh the slower first steps of a process more)")
    p.add_argument("--clips", type=int, default=8, help="clips per speaker (default 8)")
    p.add_argument("--speakers", type=int, default=3, help="speakers (default 3)")
    p.add_argument("--batch-size", type=int, default=None, help="batch size of both loops (default 4; with --shape 2, "
                   "the official script's default)")
    p.add_argument("--sentences", type=int, default=None, help="at most this many sentences per clip (default 4: "
                   "about 2.5 to 13 s; with --shape 2: about 2.5 to 7.5 s)")
    p.add_argument("--repeats", type=int, default=None, help="runs per configuration, alternating; the headline "
                   "uses the medians (default 3; with --shape 2)")
    p.add_argument("--hidden", type=int, default=None, help="talker hidden size of the factory model (default 256; "
                   "code predictor: half); not with --shape")
    p.add_argument("--intermediate", type=int, default=None, help="talker FFN size of the factory model (default "
                   "512); not with --shape")
    p.add_argument("--layers", type=int, default=None, help="talker layers (default 4; with --shape: "
                   + ", ".join(f"{k}: {v['layers']}" for k, v in SHAPE_DEFAULTS.items())
                   + " of 28; the ratio is per layer count)")
    p.add_argument("--cp-layers", type=int, default=None, help="code-predictor layers of the factory model (default "
                   "2; the released models have 5); not with --shape")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default=None, help="weights and optimizer state of "
                   "both loops (default float32; with --shape bfloat16: ours train.pure_bf16=true, the official port "
                   "bf16 weights + accelerate mixed_precision=bf16 as its script)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per process (default 1: steadier on a shared machine; the 2-process run "
                        "then uses 2 cores in all)")
    p.add_argument("--no-multiproc", action="store_true", help="skip the 2-process accelerate run (always skipped "
                   "with --shape)")
    p.add_argument("--subtalker-fraction", type=float, default=None, metavar="F",
                   help="also run ours with train.subtalker_frame_fraction=F (less work; reported apart)")
    p.add_argument("--unfrozen-run", action="store_true", help="also run ours with train.freeze_text_embedding=false "
                   "(the text embedding trained, as the official script does; reported apart; the breakdown times "
                   "that part alone either way)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="where both loops train (default cpu; cuda: one GPU each, scripts/gpu_check.sh uses it)")
    p.add_argument("--workdir", help="keep model, corpus and prepared data here (reused by later runs)")
    p.add_argument("--keep", action="store_true", help="keep the temporary work dir")
    p.add_argument("--output", default=str(DOC), help="markdown file whose bench_train section is rewritten")
    p.add_argument("--no-write", action="store_true", help="print only")
    # worker mode (internal)
    p.add_argument("--worker", choices=["ours", "official", "split"], help=argparse.SUPPRESS)
    for name in ("--model", "--prep", "--official-jsonl", "--run-dir", "--result"):
        p.add_argument(name, help=argparse.SUPPRESS)
    p.add_argument("--set", action="append", help=argparse.SUPPRESS)  # a recipe override for our loop
    p.add_argument("--released-split", action="store_true", help=argparse.SUPPRESS)
    return p


def resolve(args) -> str | None:
    """Fill the mode's defaults into ``args`` (in place); return an error message for bad arguments."""
    if args.shape:
        given = [f"--{n.replace('_', '-')}" for n in ("hidden", "intermediate", "cp_layers") if getattr(args, n) is not None]
        if given:
            return f"{', '.join(given)} set(s) the factory model's size; --shape {args.shape} has the released widths"
        d = SHAPE_DEFAULTS[args.shape]
        args.layers = d["layers"] if args.layers is None else args.layers
        if not 1 <= args.layers <= 28:
            return f"--layers must be between 1 and 28 with --shape, got {args.layers}"
        for key in ("steps", "batch_size", "sentences"):
            setattr(args, key, d[key] if getattr(args, key) is None else getattr(args, key))
        args.repeats = d["repeats"] if args.repeats is None else args.repeats
        args.dtype = args.dtype or "bfloat16"
        args.no_multiproc = True  # two released-width processes: twice the memory and time of the budget
        args.hidden, args.intermediate, args.cp_layers = None, None, None
    else:
        args.hidden = 256 if args.hidden is None else args.hidden
        args.intermediate = 512 if args.intermediate is None else args.intermediate
        args.layers = 4 if args.layers is None else args.layers
        args.cp_layers = 2 if args.cp_layers is None else args.cp_layers
        args.steps = 16 if args.steps is None else args.steps
        args.batch_size = 4 if args.batch_size is None else args.batch_size
        args.sentences = 4 if args.sentences is None else args.sentences
        args.repeats = 3 if args.repeats is None else args.repeats
        args.dtype = args.dtype or "float32"
        if args.hidden % 32 or args.hidden < 64 or args.layers < 1 or args.cp_layers < 1 or args.intermediate < 1:
            return "--hidden must be a multiple of 32 (>= 64); --layers, --cp-layers, --intermediate >= 1"
    if args.steps < 2 or min(args.clips, args.speakers, args.batch_size, args.repeats, args.sentences) < 1:
        return "need --steps >= 2 and --clips, --speakers, --batch-size, --repeats, --sentences >= 1"
    if args.subtalker_fraction is not None and not 0 < args.subtalker_fraction < 1:
        return "--subtalker-fraction must be between 0 and 1 (exclusive)"
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            return "--device cuda: torch sees no CUDA GPU"
        args.no_multiproc = True  # the 2-process comparison is a CPU (gloo) measurement
    if args.speakers * args.clips < args.batch_size:
        return f"{args.speakers} x {args.clips} clips cannot fill a batch of {args.batch_size}"
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.worker:
        return run_worker(args)
    error = resolve(args)
    if error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    args.argv = argv
    return orchestrate(args)


if __name__ == "__main__":
    raise SystemExit(main())

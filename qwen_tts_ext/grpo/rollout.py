"""Rollouts: K sampled utterances per prompt from the current policy, through the stock ``generate()``.

A prompt is a JSONL row ``{"text": ..., "speaker": ..., "instruct"?: ..., "tag"?: ..., "language"?: ...}``; a ``tag``
(an emotion tag of configs/emotions.yaml, e.g. "whisper"; unknown tags are free-text instructions) gives the
instruction when ``instruct`` is not set, as synthesis does. The speaker's
vector goes to the speaker slot as an x-vector prompt (as ``train/sampling.synthesize_with_vector`` and the
SFT judged eval do), in non-streaming mode (the layout SFT trains). Each prompt's K samples are one batched
``generate()`` call (K copies of the prompt), capped at ``synthesis/bounds.frame_cap(text)`` frames unless
``rollout.max_frames`` is set. A rollout keeps its codes (codebook 0 and the sub-codes) and whether EOS came.

The rollouts are laid out for the teacher-forced pass with ``train/layout.build_sample`` (the SFT layout).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from qwen_tts_ext.errors import UserError
from qwen_tts_ext.synthesis.bounds import frame_cap
from qwen_tts_ext.train.layout import Batch, build_sample, collate


@dataclass(frozen=True)
class Prompt:
    text: str
    speaker: str  # lower-cased
    instruct: str = ""
    language: str = "auto"


@dataclass
class Rollout:
    prompt: int  # index into the prompt list (the group)
    codes: torch.Tensor  # [T, G] long, on CPU
    stopped: bool  # EOS came before the cap
    cap: int

    @property
    def frames(self) -> int:
        return int(self.codes.shape[0])


def load_prompts(path: str | Path) -> list[Prompt]:
    """Read and check a prompts JSONL file; every bad row is reported at once."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"--prompts {path}: no such file (a JSONL file of {{\"text\", \"speaker\"}} rows)")
    out, problems, emotions = [], [], None
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"{p.name} line {n}: not JSON ({exc.msg})")
            continue
        if not isinstance(row, dict) or not str(row.get("text") or "").strip() or not str(row.get("speaker") or "").strip():
            problems.append(f"{p.name} line {n}: needs a non-empty \"text\" and \"speaker\"")
            continue
        instruct = str(row.get("instruct") or "")
        if not instruct and str(row.get("tag") or "").strip():
            from qwen_tts_ext.synthesis.emotions import load_emotions

            emotions = emotions or load_emotions()
            instruct = emotions.resolve(str(row["tag"])).text
        out.append(Prompt(str(row["text"]).strip(), str(row["speaker"]).strip().lower(), instruct,
                          str(row.get("language") or "auto").lower()))
    if not out and not problems:
        problems.append(f"{p.name}: no prompts")
    UserError.collect(problems)
    return out


def speaker_vectors(model, names: list[str], speakers_file: str = "") -> torch.Tensor:
    """[len(names), H] float32: from ``speakers_file`` (a prepared folder or its speakers.safetensors) when
    given, else the checkpoint's own speaker rows (``spk_id``: a custom_voice checkpoint's speakers)."""
    hidden = model.config.talker_config.hidden_size
    if speakers_file:
        from qwen_tts_ext.prepared import load_speakers

        table = {k.lower(): torch.from_numpy(np.asarray(v)) for k, v in load_speakers(speakers_file).items()}
        where = speakers_file
    else:
        spk = {k.lower(): int(v) for k, v in (getattr(model.config.talker_config, "spk_id", None) or {}).items()}
        weight = model.talker.model.codec_embedding.weight.detach().float().cpu()
        table = {k: weight[row] for k, row in spk.items()}
        where = "the checkpoint's spk_id (pass speakers=PREPARED_DIR for other voices)"
    missing = [n for n in names if n not in table]
    if missing:
        raise UserError(f"speaker(s) {missing} are not in {where}; known: {sorted(table) or 'none'}")
    bad = [n for n in names if tuple(table[n].shape) != (hidden,)]
    if bad:
        raise UserError(f"speaker(s) {bad}: vectors are not of the model's hidden size {hidden} (another model size?)")
    return torch.stack([table[n].float() for n in names])


@torch.no_grad()
def sample_group(model, processor, prompt: Prompt, index: int, vector: torch.Tensor, k: int, *, max_frames: int = 0,
                 gen: dict | None = None) -> list[Rollout]:
    """``k`` samples of ``prompt`` (one batched stock ``generate()``), each a :class:`Rollout`."""
    cap = max_frames or frame_cap(prompt.text)

    def ids(s: str) -> torch.Tensor:
        return processor(text=s, return_tensors="pt")["input_ids"].to(model.device)

    text_ids = ids(f"<|im_start|>assistant\n{prompt.text}<|im_end|>\n<|im_start|>assistant\n")
    instruct = ids(f"<|im_start|>user\n{prompt.instruct}<|im_end|>\n") if prompt.instruct else None
    vec = vector.to(model.device)
    voice = {"ref_spk_embedding": [vec] * k, "x_vector_only_mode": [True] * k, "icl_mode": [False] * k,
             "ref_code": [None] * k}
    codes, _ = model.generate(input_ids=[text_ids] * k, instruct_ids=[instruct] * k, voice_clone_prompt=voice,
                              languages=[prompt.language] * k, non_streaming_mode=True, max_new_tokens=cap + 1,
                              **(gen or {}))
    # the k-th new token is decoded into a frame only at step k+1 (synthesis/engine.py): cap + 1 new tokens give
    # at most cap frames, and a full cap means EOS did not come
    return [Rollout(index, c.detach().long().cpu(), int(c.shape[0]) < cap, cap) for c in codes]


def layout_batch(rollouts: list[Rollout], prompts: list[Prompt], tok, ids, speaker_names: list[str]) -> Batch:
    """The rollouts in the SFT training layout (their speaker's row of ``speaker_names`` at the slot)."""
    samples, spk = [], []
    for r in rollouts:
        p = prompts[r.prompt]
        samples.append(build_sample(tok.text_ids(p.text), r.codes, ids, role_ids=tok.role_ids, language=p.language,
                                    instruct_ids=tok.instruct_ids(p.instruct or None)))
        spk.append(speaker_names.index(p.speaker))
    return collate(samples, spk)


def decode(model, rollouts: list[Rollout]) -> list[tuple[np.ndarray, int]]:
    """Audio of each rollout (a silent frame for an empty one)."""
    out = []
    for r in rollouts:
        if r.frames == 0:
            out.append((np.zeros(1920, dtype=np.float32), 24000))
            continue
        wavs, sr = model.speech_tokenizer.decode([{"audio_codes": r.codes.to(model.device)}])
        out.append((np.asarray(wavs[0], dtype=np.float32), int(sr)))
    return out

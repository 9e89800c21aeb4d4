"""Calibration and held-out talker inputs, laid out exactly as training and ``generate()`` lay them out.

Rows of a prepared dataset (``qwen_tts_ext.prepared.read_prepared``) go through the training layout
(``train.data.SFTDataset`` -> ``train.layout.collate`` -> ``embed_batch``): the talker sees the same
``inputs_embeds`` (text + codec + code-predictor channels, speaker vector at its slot) as at inference
under teacher forcing. A seeded shuffle splits the rows: the first ``heldout`` are never used for
the scale search (they measure the quantized model), the next ``rows`` calibrate it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from qwen_tts_ext.errors import UserError


@dataclass
class CalibrationData:
    calib: list  # list[train.layout.Batch]
    heldout: list
    speaker_vectors: torch.Tensor  # [num_speakers, H] float32
    calib_ids: list[str]
    heldout_ids: list[str]
    sha256: str  # over the calibration rows (id, text, speaker, codes)
    positions: int  # real talker positions in the calibration batches


def split_rows(n: int, rows: int, heldout: int, seed: int) -> tuple[list[int], list[int]]:
    """(calibration indices, held-out indices) of a seeded shuffle of ``range(n)``."""
    if n < 2:
        raise UserError(f"the calibration dataset has {n} row(s); at least 2 are needed (1 held out, 1 to calibrate)")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    held = min(heldout, n // 2) if heldout > 0 else 0
    return sorted(order[held:held + rows]), sorted(order[:held])


def load_calibration(model, tokenizer, prepared: str, *, rows: int, heldout: int, batch_size: int,
                     seed: int) -> CalibrationData:
    """Batches of the prepared dataset at ``prepared`` for ``model`` (a Qwen3TTSForConditionalGeneration)."""
    from qwen_tts_ext.prepared import load_speakers, read_prepared
    from qwen_tts_ext.train.data import SFTDataset, TextTokenizer, collate_examples
    from qwen_tts_ext.train.layout import SpecialIds

    ds = read_prepared(prepared)
    vectors = load_speakers(_speakers_file(prepared))
    names = sorted(vectors)
    missing = sorted({str(s).lower() for s in ds["speaker"]} - set(names))
    if missing:
        raise UserError(f"{prepared}: speakers {missing} have no x-vector in speakers.safetensors; re-run prepare")
    hidden = model.talker.config.hidden_size
    table = torch.stack([torch.as_tensor(vectors[n], dtype=torch.float32) for n in names])
    if table.shape[1] != hidden:
        raise UserError(f"{prepared} was prepared for another model: its speaker vectors have {table.shape[1]} "
                        f"dimensions, the talker {hidden}")
    use_language = True
    data = SFTDataset(ds, TextTokenizer(tokenizer), SpecialIds.from_config(model.config), names,
                      use_instruct=True, use_language=use_language)
    calib_idx, held_idx = split_rows(len(ds), rows, heldout, seed)
    digest = hashlib.sha256()
    ids = ds["id"]

    def batches(idx: list[int], hash_rows: bool) -> list:
        out = []
        # similar lengths together: less padding
        idx = sorted(idx, key=lambda i: data.lengths[i])
        for start in range(0, len(idx), batch_size):
            chunk = idx[start:start + batch_size]
            if hash_rows:
                for i in chunk:
                    row = data.rows[i]
                    digest.update(f"{ids[i]}\t{row['text']}\t{row['speaker']}\n".encode())
                    digest.update(row["codes"].astype("int16").tobytes())
            out.append(collate_examples([data[i] for i in chunk]))
        return out

    calib = batches(calib_idx, True)
    return CalibrationData(calib=calib, heldout=batches(held_idx, False), speaker_vectors=table,
                           calib_ids=[str(ids[i]) for i in calib_idx], heldout_ids=[str(ids[i]) for i in held_idx],
                           sha256=digest.hexdigest(), positions=sum(b.real_positions for b in calib))


def _speakers_file(prepared: str):
    from pathlib import Path

    p = Path(prepared).expanduser()
    return p.parent / "speakers.safetensors" if p.name == "dataset" else p / "speakers.safetensors"


@torch.no_grad()
def run_talker(model, batch, speaker_vectors: torch.Tensor, recorder=None) -> torch.Tensor:
    """The talker's hidden states [B, S, H] for one batch (``recorder.mask`` set to its real positions)."""
    from qwen_tts_ext.train.losses import talker_hidden

    device = next(model.parameters()).device
    batch = batch.to(device)
    if recorder is not None:
        recorder.mask = batch.attention_mask.cpu()
    try:
        return talker_hidden(model.talker, batch, speaker_vectors.to(device))
    finally:
        if recorder is not None:
            recorder.mask = None


@torch.no_grad()
def codec0_logprobs(model, batches: list, speaker_vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-probabilities [N, V] float32 at every scored position, their targets [N]) under teacher forcing."""
    from qwen_tts_ext.train.layout import IGNORE_INDEX

    lps, tgts = [], []
    for b in batches:
        hidden = run_talker(model, b, speaker_vectors)
        keep = (b.codec0_targets != IGNORE_INDEX).to(hidden.device)
        logits = model.talker.codec_head(hidden[keep]).float()
        lps.append(torch.log_softmax(logits, -1).cpu())
        tgts.append(b.codec0_targets[keep.cpu()])
    return torch.cat(lps), torch.cat(tgts)


def ce_kl(ref_lp: torch.Tensor, lp: torch.Tensor, targets: torch.Tensor) -> dict:
    """Teacher-forced codec-0 cross-entropy of both, and KL(reference || quantized), nats per position."""
    ce_ref = float(-ref_lp.gather(1, targets[:, None]).mean())
    ce = float(-lp.gather(1, targets[:, None]).mean())
    kl = float((ref_lp.exp() * (ref_lp - lp)).sum(-1).mean())
    top1 = float((ref_lp.argmax(-1) == lp.argmax(-1)).float().mean())
    return {"ce_reference": ce_ref, "ce": ce, "ce_increase": ce - ce_ref, "kl": kl, "top1_agreement": top1,
            "positions": int(targets.numel())}


def read_sentences(sentences: list[str]) -> list[str]:
    """The sentences themselves, or the lines of the one ``.txt`` file given instead."""
    from pathlib import Path

    if len(sentences) == 1 and str(sentences[0]).endswith(".txt"):
        path = Path(sentences[0]).expanduser()
        if not path.is_file():
            raise UserError(f"--sentences {path}: no such file")
        sentences = path.read_text(encoding="utf-8").splitlines()
    return [s.strip() for s in sentences if s and s.strip()]


@torch.no_grad()
def sentence_calibration(tts, sentences: list[str], speaker: str, language: str, *, rows: int, heldout: int,
                         batch_size: int, seed: int, max_frames: int, progress=None) -> CalibrationData:
    """Calibration without a dataset: the float model speaks each sentence as ``speaker`` (sampled with the
    checkpoint's generation defaults, seeded per sentence, at most ``max_frames`` frames); its own codes are
    then laid out like training rows (speaker slot = the speaker's codec-embedding row, as generate() fills it)."""
    from qwen_tts_ext.train.data import TextTokenizer
    from qwen_tts_ext.train.layout import SpecialIds, build_sample, collate

    model = tts.model
    spk = {str(k).lower(): int(v) for k, v in (model.config.talker_config.spk_id or {}).items()}
    if speaker.lower() not in spk:
        raise UserError(f"--speaker {speaker!r} is not a speaker of the checkpoint (it has: "
                        f"{', '.join(sorted(spk)) or 'none: pass --calib with a prepared dataset'})")
    ids = SpecialIds.from_config(model.config)
    lang = None if not language or language.lower() == "auto" else language.lower()
    try:
        ids.language_id(lang)
    except KeyError as exc:
        raise UserError(str(exc).strip('"')) from None
    tok = TextTokenizer(tts.processor.tokenizer)
    calib_idx, held_idx = split_rows(len(sentences), rows, heldout, seed)
    vector = model.talker.model.codec_embedding.weight[spk[speaker.lower()]].detach().float().cpu()[None]
    defaults = {k: v for k, v in (tts.generate_defaults or {}).items()
                if k in ("do_sample", "top_k", "top_p", "temperature", "repetition_penalty", "subtalker_dosample",
                         "subtalker_top_k", "subtalker_top_p", "subtalker_temperature")}
    device = next(model.parameters()).device
    digest = hashlib.sha256()
    samples = {}
    for i in sorted(calib_idx + held_idx):
        torch.manual_seed(seed + i)
        prompt = tts.processor(text=f"<|im_start|>assistant\n{sentences[i]}<|im_end|>\n<|im_start|>assistant\n",
                               return_tensors="pt", padding=True)["input_ids"]
        prompt = (prompt.unsqueeze(0) if prompt.dim() == 1 else prompt).to(device)
        codes_list, _ = model.generate(input_ids=[prompt], instruct_ids=[None], languages=[lang or "auto"],
                                       speakers=[speaker.lower()], non_streaming_mode=True,
                                       max_new_tokens=max_frames + 1, **defaults)
        codes = codes_list[0].detach().cpu().long()
        if codes.shape[0] == 0:
            continue
        samples[i] = build_sample(tok.text_ids(sentences[i]), codes, ids, role_ids=tok.role_ids, language=lang)
        if i in calib_idx:
            digest.update(f"{i}\t{sentences[i]}\t{speaker}\n".encode())
            digest.update(codes.to(torch.int16).numpy().tobytes())
        if progress:
            progress(1)

    def batches(idx: list[int]) -> list:
        idx = sorted((i for i in idx if i in samples), key=lambda i: samples[i].length)
        return [collate([samples[i] for i in idx[s:s + batch_size]], [0] * len(idx[s:s + batch_size]))
                for s in range(0, len(idx), batch_size)]

    calib = batches(calib_idx)
    if not calib:
        raise UserError("the model produced no frames for any calibration sentence; pass --calib with a dataset")
    return CalibrationData(calib=calib, heldout=batches(held_idx), speaker_vectors=vector,
                           calib_ids=[f"sentence-{i}" for i in calib_idx if i in samples],
                           heldout_ids=[f"sentence-{i}" for i in held_idx if i in samples],
                           sha256=digest.hexdigest(), positions=sum(b.real_positions for b in calib))

"""Training data: a prepared dataset -> laid-out samples -> length-bucketed batches.

Batches group utterances of similar length (less padding) under a ``max_frames_per_batch`` budget;
the order is a seeded function of (seed, epoch), so a resumed run sees the same batches as an
uninterrupted one.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from qwen_tts_ext.errors import UserError
from qwen_tts_ext.prepared import Rows, read_prepared
from qwen_tts_ext.train.layout import SampleLayout, SpecialIds, build_sample, collate


def load_prepared(path: str | Path):
    """The checked ``datasets`` dataset of a ``prepare`` output folder (or its ``dataset/`` folder):
    :func:`qwen_tts_ext.prepared.read_prepared` (format version, columns, every code's range and shape)."""
    return read_prepared(path)


class TextTokenizer:
    """Tokenizes transcripts and instructions the way ``Qwen3TTSModel`` builds its prompts."""

    def __init__(self, tokenizer):
        self.tok = tokenizer
        role = tokenizer("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
        if len(role) != 3:
            raise UserError("the checkpoint's tokenizer does not split '<|im_start|>assistant\\n' into 3 tokens")
        self.role_ids = role

    def text_ids(self, text: str) -> list[int]:
        # Tokenize inside the same markup as inference, then cut the markup off, so BPE merges match.
        full = self.tok(f"<|im_start|>assistant\n{text}<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
        return full[3:-5]

    def instruct_ids(self, instruct: str | None) -> list[int] | None:
        if not instruct:
            return None
        return self.tok(f"<|im_start|>user\n{instruct}<|im_end|>\n", add_special_tokens=False)["input_ids"]


@dataclass
class Example:
    layout: SampleLayout
    speaker_index: int


class SFTDataset(torch.utils.data.Dataset):
    """Lays samples out lazily (cheap) so the dataset can be large; lengths are precomputed for bucketing."""

    def __init__(self, hf_dataset, tokenizer: TextTokenizer, ids: SpecialIds, speaker_names: list[str],
                 use_instruct: bool = True, use_language: bool = True):
        self.ds = hf_dataset
        self.rows = Rows(hf_dataset)
        self.tok = tokenizer
        self.ids = ids
        self.speakers = {n: i for i, n in enumerate(speaker_names)}
        self.use_instruct = use_instruct
        self.use_language = use_language
        frames = hf_dataset["num_frames"]
        texts = hf_dataset["text"]
        # Bucketing key: positions ~ frames + the fixed prefix + about one text token per 2 characters
        # (an estimate, so the dataset need not be tokenized up front; samples are laid out lazily)
        self.lengths = [int(f) + 12 + len(t) // 2 for f, t in zip(frames, texts)]
        self.frames = [int(f) for f in frames]
        for lang in set(hf_dataset["language"]) if self.use_language else ():
            try:
                ids.language_id(lang)
            except KeyError as exc:
                raise UserError(f"dataset language {lang!r} is unknown to the checkpoint: {exc}") from None

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> Example:
        row = self.rows[i]
        layout = build_sample(
            self.tok.text_ids(row["text"]),
            torch.from_numpy(row["codes"]),
            self.ids,
            role_ids=self.tok.role_ids,
            language=row["language"] if self.use_language else None,
            instruct_ids=self.tok.instruct_ids(row["instruct"]) if self.use_instruct else None,
        )
        return Example(layout=layout, speaker_index=self.speakers[row["speaker"].lower()])


def collate_examples(examples: list[Example]):
    return collate([e.layout for e in examples], [e.speaker_index for e in examples])


class BucketBatchSampler(torch.utils.data.Sampler):
    """Seeded, length-bucketed batches: sort by length within large random pools, cut batches under a
    token budget, then shuffle the batch order. ``use_epoch`` changes the permutation deterministically.

    The method is deliberately not called ``set_epoch``: accelerate's prepared dataloaders call
    ``batch_sampler.set_epoch(n)`` with their own iteration count, which restarts at 0 after a resume
    (and in a ``skip_first_batches`` copy), and would silently replay epoch 0's order."""

    def __init__(self, lengths: list[int], batch_size: int, max_tokens_per_batch: int | None = None,
                 seed: int = 0, pool_factor: int = 50, drop_last: bool = False):
        self.lengths = lengths
        self.batch_size = batch_size
        self.max_tokens = max_tokens_per_batch
        self.seed = seed
        self.pool = max(1, pool_factor * batch_size)
        self.drop_last = drop_last
        self.epoch = 0
        self._batches = self._make(0)

    def use_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self._batches = self._make(epoch)

    def _make(self, epoch: int) -> list[list[int]]:
        rng = random.Random(self.seed * 100_003 + epoch)
        order = list(range(len(self.lengths)))
        rng.shuffle(order)
        batches: list[list[int]] = []
        for start in range(0, len(order), self.pool):
            pool = sorted(order[start : start + self.pool], key=lambda i: self.lengths[i])
            cur: list[int] = []
            for i in pool:
                longest = max([self.lengths[j] for j in cur] + [self.lengths[i]])
                too_many = len(cur) >= self.batch_size
                too_long = self.max_tokens is not None and cur and longest * (len(cur) + 1) > self.max_tokens
                if cur and (too_many or too_long):
                    batches.append(cur)
                    cur = []
                cur.append(i)
            if cur and not (self.drop_last and len(cur) < self.batch_size):
                batches.append(cur)
        rng.shuffle(batches)
        return batches

    def __iter__(self):
        return iter(list(self._batches))

    def __len__(self) -> int:
        return len(self._batches)


def split_train_eval(n: int, eval_fraction: float, eval_max: int, seed: int) -> tuple[list[int], list[int]]:
    """A fixed held-out split (by seed); at least one training example is always kept."""
    if eval_fraction <= 0 or n < 4:
        return list(range(n)), []
    k = min(eval_max, max(1, int(math.floor(n * eval_fraction))))
    rng = random.Random(seed + 7)
    idx = list(range(n))
    rng.shuffle(idx)
    return sorted(idx[k:]), sorted(idx[:k])

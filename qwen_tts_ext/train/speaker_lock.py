"""Speaker lock: one codec-embedding row per fine-tuned speaker, and the merged speaker table.

Rows are assigned from 3000 upward, skipping rows the checkpoint's ``spk_id`` already uses (a
CustomVoice checkpoint keeps its built-in speakers), up to the last codec row (vocab - 1 = 3071).
The vector a speaker gets is its float32 mean x-vector from data prep: the same vector is fed at the
speaker slot in training and written into its row at export, so inference sees what training saw.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from qwen_tts_ext.constants import FIRST_SPEAKER_ROW
from qwen_tts_ext.errors import UserError


@dataclass
class SpeakerTable:
    names: list[str]  # lower-cased, in row order
    rows: list[int]
    vectors: torch.Tensor  # [N, H] float32

    def index(self, name: str) -> int:
        return self.names.index(name.lower())

    def spk_id(self) -> dict[str, int]:
        return dict(zip(self.names, self.rows))


def assign_rows(names: list[str], existing: dict[str, int], vocab_size: int, first_row: int = FIRST_SPEAKER_ROW) -> list[int]:
    """Rows for ``names`` (lower-cased): an existing name keeps its row; new names take free rows from ``first_row``."""
    existing = {k.lower(): int(v) for k, v in (existing or {}).items()}
    used = set(existing.values())
    rows = []
    nxt = first_row
    for name in names:
        key = name.lower()
        if key in existing:
            rows.append(existing[key])
            continue
        while nxt in used:
            nxt += 1
        if nxt >= vocab_size:
            raise UserError(
                f"no free codec-embedding row for speaker {name!r}: rows {first_row}..{vocab_size - 1} are taken "
                f"({len(names)} speakers requested, {len(used & set(range(first_row, vocab_size)))} rows already used); "
                "train fewer speakers per checkpoint"
            )
        rows.append(nxt)
        used.add(nxt)
        nxt += 1
    return rows


def load_speaker_vectors(path: str | Path) -> dict[str, torch.Tensor]:
    """``speakers.safetensors`` from data prep: lower-cased name -> float32 vector."""
    from qwen_tts_ext.prepared import load_speakers

    return {k.lower(): torch.from_numpy(v) for k, v in load_speakers(path).items()}


def build_speaker_table(
    dataset_speakers: list[str], vectors: dict[str, torch.Tensor], talker_config, hidden_size: int
) -> SpeakerTable:
    names = sorted({s.lower() for s in dataset_speakers})
    missing = [n for n in names if n not in vectors]
    if missing:
        raise UserError(f"speaker(s) {missing} have no embedding in speakers.safetensors; re-run data prep for them")
    for n in names:
        if vectors[n].shape != (hidden_size,):
            raise UserError(
                f"speaker {n!r} embedding has shape {tuple(vectors[n].shape)} but the model's hidden size is "
                f"{hidden_size}: the data was prepared with a different model size (use the same Base checkpoint)"
            )
    existing = getattr(talker_config, "spk_id", None) or {}
    rows = assign_rows(names, existing, talker_config.vocab_size)
    return SpeakerTable(names=names, rows=rows, vectors=torch.stack([vectors[n] for n in names]))


def merged_speaker_config(talker_config: dict, table: SpeakerTable) -> dict:
    """``talker_config`` dict with ``spk_id``/``spk_is_dialect`` merged (existing speakers kept, names lower-cased)."""
    out = dict(talker_config)
    spk = {k.lower(): v for k, v in (out.get("spk_id") or {}).items()}
    dialect = {k.lower(): v for k, v in (out.get("spk_is_dialect") or {}).items()}
    for name, row in zip(table.names, table.rows):
        spk[name] = row
        dialect.setdefault(name, False)
    out["spk_id"] = spk
    out["spk_is_dialect"] = dialect
    return out


def write_speaker_rows(codec_embedding_weight: torch.Tensor, table: SpeakerTable) -> torch.Tensor:
    """A copy of the codec embedding with each speaker's vector in its row (cast to the weight's dtype)."""
    w = codec_embedding_weight.detach().clone()
    for row, vec in zip(table.rows, table.vectors):
        w[row] = vec.to(w.dtype)
    return w

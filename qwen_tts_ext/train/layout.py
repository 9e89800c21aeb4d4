"""The training batch layout: exactly the sequence ``generate()`` feeds the talker at inference.

One sample is a sequence of positions. Each position carries up to three inputs that are summed:
a *text* token (through ``talker.text_projection(text_embedding(.))``), a *codec* token (through
``talker.model.codec_embedding``), and, on frame positions, codebooks 1..15 of that frame (through
the code predictor's embeddings). The layout mirrors ``Qwen3TTSForConditionalGeneration.generate``
in non-streaming mode (the default of ``generate_custom_voice``, the exported model's entry point)::

    [instruct tokens]                              text only ("<|im_start|>user\\n...<|im_end|>\\n"), optional
    <|im_start|> assistant \\n                      text only
    tts_pad x k        + nothink think_bos think_eos          (k = 3), or, with a language,
    tts_pad x k        + think think_bos LANG think_eos        (k = 4)
    tts_pad            + SPEAKER   (the speaker vector replaces the codec embedding here)
    tts_bos            + codec_pad
    text tokens        + codec_pad
    tts_eos            + codec_pad
    tts_pad            + codec_bos
    tts_pad            + frame 0 (codebook 0 via codec_embedding, 1..15 via code-predictor embeddings)
    ...
    tts_pad            + frame T-1
    tts_pad            + codec_eos   (input of the last position; it is never a source of a target)

Targets use the inference alignment, shifted exactly once, here:
- ``codec0_targets[p]`` is what position ``p``'s output must predict: the codebook-0 id at ``p + 1``
  (frame 0 is predicted from the ``codec_bos`` position, EOS from the last frame's position).
- ``subtalker_sources[p]`` is True where position ``p``'s hidden state feeds the code predictor for
  the frame at ``p + 1`` (as ``past_hidden`` does at inference), and ``subtalker_codes[p]`` holds
  that frame's 16 codes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

IGNORE_INDEX = -100


@dataclass(frozen=True)
class SpecialIds:
    """Ids read from a checkpoint's ``config.json`` (never from the config class defaults)."""

    tts_pad: int
    tts_bos: int
    tts_eos: int
    codec_pad: int
    codec_bos: int
    codec_eos: int
    codec_think: int
    codec_nothink: int
    codec_think_bos: int
    codec_think_eos: int
    languages: dict
    num_code_groups: int = 16

    @classmethod
    def from_config(cls, config) -> "SpecialIds":
        """From a ``Qwen3TTSConfig`` object or its ``config.json`` dict."""
        get = (lambda o, k: o[k]) if isinstance(config, dict) else getattr
        t = get(config, "talker_config")
        return cls(
            tts_pad=get(config, "tts_pad_token_id"),
            tts_bos=get(config, "tts_bos_token_id"),
            tts_eos=get(config, "tts_eos_token_id"),
            codec_pad=get(t, "codec_pad_id"),
            codec_bos=get(t, "codec_bos_id"),
            codec_eos=get(t, "codec_eos_token_id"),
            codec_think=get(t, "codec_think_id"),
            codec_nothink=get(t, "codec_nothink_id"),
            codec_think_bos=get(t, "codec_think_bos_id"),
            codec_think_eos=get(t, "codec_think_eos_id"),
            languages=dict(get(t, "codec_language_id") or {}),
            num_code_groups=get(t, "num_code_groups"),
        )

    def language_id(self, language: str | None) -> int | None:
        """The codec id for a language name; None for "auto"/empty (the no-language prefix)."""
        if not language or language.lower() == "auto":
            return None
        key = language.lower()
        if key not in self.languages:
            raise KeyError(f"language {language!r} is not in the checkpoint (known: {sorted(self.languages)})")
        return self.languages[key]


@dataclass
class SampleLayout:
    """One sample, position by position (length S). ``-1`` means "no token on this channel"."""

    text_ids: torch.Tensor  # [S] long, -1 where the text channel is empty
    codec_ids: torch.Tensor  # [S] long, -1 where the codec channel is empty
    frame_codes: torch.Tensor  # [S, G] long, codes of the frame *input* at each position, -1 elsewhere
    speaker_pos: int  # index of the speaker slot
    codec0_targets: torch.Tensor  # [S] long, IGNORE_INDEX where no target
    subtalker_sources: torch.Tensor  # [S] bool
    subtalker_codes: torch.Tensor  # [S, G] long (valid where subtalker_sources)
    num_frames: int

    @property
    def length(self) -> int:
        return int(self.text_ids.shape[0])


def build_sample(
    text_token_ids: list[int] | torch.Tensor,
    codes: torch.Tensor,
    ids: SpecialIds,
    *,
    role_ids: list[int],
    language: str | None = None,
    instruct_ids: list[int] | None = None,
) -> SampleLayout:
    """Lay out one sample.

    ``text_token_ids``: the transcript's tokens only (no chat markup); ``role_ids``: the three tokens of
    ``"<|im_start|>assistant\\n"``; ``instruct_ids``: the tokens of ``"<|im_start|>user\\n{instruct}<|im_end|>\\n"``
    or None; ``codes``: [T, G] codes of the utterance.
    """
    codes = torch.as_tensor(codes, dtype=torch.long)
    if codes.dim() != 2 or codes.shape[1] != ids.num_code_groups:
        raise ValueError(f"codes must be [frames, {ids.num_code_groups}], got {tuple(codes.shape)}")
    text = [int(t) for t in (text_token_ids.tolist() if torch.is_tensor(text_token_ids) else text_token_ids)]
    if len(role_ids) != 3:
        raise ValueError("role_ids must be the 3 tokens of '<|im_start|>assistant\\n'")
    lang_id = ids.language_id(language)
    think = (
        [ids.codec_nothink, ids.codec_think_bos, ids.codec_think_eos]
        if lang_id is None
        else [ids.codec_think, ids.codec_think_bos, lang_id, ids.codec_think_eos]
    )
    n_frames = int(codes.shape[0])
    text_ch: list[int] = []
    codec_ch: list[int] = []

    def put(t: int, c: int) -> None:
        text_ch.append(t)
        codec_ch.append(c)

    for t in instruct_ids or []:
        put(int(t), -1)
    for t in role_ids:
        put(int(t), -1)
    for c in think:
        put(ids.tts_pad, c)
    speaker_pos = len(text_ch)
    put(ids.tts_pad, -1)  # the speaker vector goes here
    put(ids.tts_bos, ids.codec_pad)
    for t in text:
        put(t, ids.codec_pad)
    put(ids.tts_eos, ids.codec_pad)
    bos_pos = len(text_ch)
    put(ids.tts_pad, ids.codec_bos)
    first_frame = len(text_ch)
    for f in range(n_frames):
        put(ids.tts_pad, int(codes[f, 0]))
    eos_pos = len(text_ch)
    put(ids.tts_pad, ids.codec_eos)

    S = len(text_ch)
    G = ids.num_code_groups
    frame_codes = torch.full((S, G), -1, dtype=torch.long)
    frame_codes[first_frame:eos_pos] = codes
    targets = torch.full((S,), IGNORE_INDEX, dtype=torch.long)
    # position p predicts codebook 0 of the token at p + 1: frames 0..T-1 then EOS
    targets[bos_pos:eos_pos] = torch.cat([codes[:, 0], torch.tensor([ids.codec_eos])])[: eos_pos - bos_pos]
    sources = torch.zeros(S, dtype=torch.bool)
    sources[bos_pos : bos_pos + n_frames] = True  # hidden at p feeds the code predictor for frame at p + 1
    sub_codes = torch.full((S, G), -1, dtype=torch.long)
    sub_codes[bos_pos : bos_pos + n_frames] = codes
    return SampleLayout(
        text_ids=torch.tensor(text_ch, dtype=torch.long),
        codec_ids=torch.tensor(codec_ch, dtype=torch.long),
        frame_codes=frame_codes,
        speaker_pos=speaker_pos,
        codec0_targets=targets,
        subtalker_sources=sources,
        subtalker_codes=sub_codes,
        num_frames=n_frames,
    )


@dataclass
class Batch:
    """Right-padded batch of ``SampleLayout`` plus the per-sample speaker index."""

    text_ids: torch.Tensor  # [B, S] (pad positions and empty slots hold 0; see text_mask)
    text_mask: torch.Tensor  # [B, S] bool
    codec_ids: torch.Tensor  # [B, S]
    codec_mask: torch.Tensor  # [B, S] bool
    frame_codes: torch.Tensor  # [B, S, G] (0 where not a frame; see frame_mask)
    frame_mask: torch.Tensor  # [B, S] bool
    speaker_pos: torch.Tensor  # [B] long
    speaker_index: torch.Tensor  # [B] long, row into the speaker-vector table
    attention_mask: torch.Tensor  # [B, S] long
    codec0_targets: torch.Tensor  # [B, S]
    subtalker_sources: torch.Tensor  # [B, S] bool
    subtalker_codes: torch.Tensor  # [B, S, G]
    num_frames: torch.Tensor  # [B]

    def to(self, device, non_blocking: bool = False) -> "Batch":
        return Batch(**{k: v.to(device, non_blocking=non_blocking) for k, v in self.__dict__.items()})

    @property
    def real_positions(self) -> int:
        return int(self.attention_mask.sum())

    @property
    def padding_efficiency(self) -> float:
        return self.real_positions / float(self.attention_mask.numel())


def collate(samples: list[SampleLayout], speaker_index: list[int]) -> Batch:
    B = len(samples)
    S = max(s.length for s in samples)
    G = samples[0].frame_codes.shape[1]
    text_ids = torch.zeros(B, S, dtype=torch.long)
    codec_ids = torch.zeros(B, S, dtype=torch.long)
    frame_codes = torch.zeros(B, S, G, dtype=torch.long)
    sub_codes = torch.zeros(B, S, G, dtype=torch.long)
    text_mask = torch.zeros(B, S, dtype=torch.bool)
    codec_mask = torch.zeros(B, S, dtype=torch.bool)
    frame_mask = torch.zeros(B, S, dtype=torch.bool)
    sources = torch.zeros(B, S, dtype=torch.bool)
    attn = torch.zeros(B, S, dtype=torch.long)
    targets = torch.full((B, S), IGNORE_INDEX, dtype=torch.long)
    for i, s in enumerate(samples):
        n = s.length
        text_mask[i, :n] = s.text_ids >= 0
        text_ids[i, :n] = s.text_ids.clamp(min=0)
        codec_mask[i, :n] = s.codec_ids >= 0
        codec_ids[i, :n] = s.codec_ids.clamp(min=0)
        fm = s.frame_codes[:, 0] >= 0
        frame_mask[i, :n] = fm
        frame_codes[i, :n] = s.frame_codes.clamp(min=0)
        sources[i, :n] = s.subtalker_sources
        sub_codes[i, :n] = s.subtalker_codes.clamp(min=0)
        attn[i, :n] = 1
        targets[i, :n] = s.codec0_targets
    return Batch(
        text_ids=text_ids,
        text_mask=text_mask,
        codec_ids=codec_ids,
        codec_mask=codec_mask,
        frame_codes=frame_codes,
        frame_mask=frame_mask,
        speaker_pos=torch.tensor([s.speaker_pos for s in samples], dtype=torch.long),
        speaker_index=torch.tensor(speaker_index, dtype=torch.long),
        attention_mask=attn,
        codec0_targets=targets,
        subtalker_sources=sources,
        subtalker_codes=sub_codes,
        num_frames=torch.tensor([s.num_frames for s in samples], dtype=torch.long),
    )


def embed_batch(talker, batch: Batch, speaker_vectors: torch.Tensor) -> torch.Tensor:
    """Sum the three input channels into ``inputs_embeds`` [B, S, H], as ``generate()`` does.

    ``talker`` is ``Qwen3TTSForConditionalGeneration.talker``; ``speaker_vectors`` [num_speakers, H]
    (float32 means from data prep) are placed at each sample's speaker slot.
    """
    text = talker.text_projection(talker.model.text_embedding(batch.text_ids))
    # Re-mask after the projection: its biases make an empty slot non-zero otherwise.
    x = text * batch.text_mask.unsqueeze(-1).to(text.dtype)
    codec = talker.model.codec_embedding(batch.codec_ids) * batch.codec_mask.unsqueeze(-1).to(text.dtype)
    x = x + codec
    cp_embeds = talker.code_predictor.get_input_embeddings()
    fmask = batch.frame_mask.unsqueeze(-1).to(x.dtype)
    for g in range(1, batch.frame_codes.shape[-1]):
        x = x + cp_embeds[g - 1](batch.frame_codes[..., g]) * fmask
    rows = torch.arange(x.shape[0], device=x.device)
    spk = speaker_vectors[batch.speaker_index].to(x.dtype)
    x = x.index_put((rows, batch.speaker_pos), x[rows, batch.speaker_pos] + spk)
    return x

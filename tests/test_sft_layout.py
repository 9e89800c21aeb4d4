"""The training layout is exactly what generate() feeds at inference, and targets are shifted once."""

from __future__ import annotations

import pytest
import torch

from qwen_tts_ext.train.data import TextTokenizer
from qwen_tts_ext.train.layout import IGNORE_INDEX, SpecialIds, build_sample, collate, embed_batch


class _Captured(Exception):
    pass


def _capture_prefill(tts, **kwargs):
    """Run the stock generate_custom_voice and capture the talker's prefill inputs_embeds."""
    seen = {}

    def fake_generate(**kw):
        seen.update(kw)
        raise _Captured

    orig = tts.model.talker.generate
    tts.model.talker.generate = fake_generate
    try:
        with pytest.raises(_Captured):
            tts.generate_custom_voice(**kwargs)
    finally:
        tts.model.talker.generate = orig
    return seen


@pytest.fixture(scope="module")
def cv(tiny_custom_voice):
    from qwen_tts import Qwen3TTSModel

    return Qwen3TTSModel.from_pretrained(str(tiny_custom_voice), dtype=torch.float32)


@pytest.mark.parametrize("language,instruct", [("auto", None), ("english", None), ("english", "Whisper softly.")])
def test_prefix_matches_generate_custom_voice(cv, language, instruct):
    text = "Hello there, friend."
    seen = _capture_prefill(cv, text=text, language=language, speaker="vivian", instruct=instruct, non_streaming_mode=True)
    ref = seen["inputs_embeds"][0]  # [L, H]: everything up to and including the codec_bos position
    ids = SpecialIds.from_config(cv.model.config)
    tok = TextTokenizer(cv.processor.tokenizer)
    codes = torch.randint(0, 2048, (5, 16))
    layout = build_sample(tok.text_ids(text), codes, ids, role_ids=tok.role_ids, language=language,
                          instruct_ids=tok.instruct_ids(instruct))
    batch = collate([layout], [0])
    talker = cv.model.talker
    spk_row = cv.model.config.talker_config.spk_id["vivian"]
    vec = talker.model.codec_embedding.weight[spk_row].detach().unsqueeze(0)
    with torch.no_grad():
        ours = embed_batch(talker, batch, vec)[0]
    bos_pos = int((layout.codec_ids == ids.codec_bos).nonzero()[0])
    assert ref.shape[0] == bos_pos + 1
    torch.testing.assert_close(ours[: bos_pos + 1], ref, rtol=1e-5, atol=1e-6)
    # Frame positions: the sum of the frame's 16 code embeddings + tts_pad, as each generation step feeds.
    with torch.no_grad():
        f0 = talker.model.codec_embedding(codes[0, :1]).sum(0)
        for g in range(1, 16):
            f0 = f0 + talker.code_predictor.get_input_embeddings()[g - 1](codes[0, g : g + 1]).sum(0)
        f0 = f0 + seen["tts_pad_embed"][0, 0]
    torch.testing.assert_close(ours[bos_pos + 1], f0, rtol=1e-5, atol=1e-6)


def test_targets_are_the_next_positions_codebook0_and_eos():
    ids = SpecialIds(tts_pad=1, tts_bos=2, tts_eos=3, codec_pad=2148, codec_bos=2149, codec_eos=2150,
                     codec_think=2154, codec_nothink=2155, codec_think_bos=2156, codec_think_eos=2157,
                     languages={"english": 2050})
    codes = torch.arange(4 * 16).view(4, 16)
    s = build_sample([10, 11, 12], codes, ids, role_ids=[7, 8, 9], language="english")
    S = s.length
    for p in range(S - 1):
        nxt = int(s.codec_ids[p + 1])
        is_audio = nxt == ids.codec_eos or (s.frame_codes[p + 1, 0] >= 0)
        if is_audio:
            assert int(s.codec0_targets[p]) == nxt  # scored from the position before
        else:
            assert int(s.codec0_targets[p]) == IGNORE_INDEX
    assert int(s.codec0_targets[-1]) == IGNORE_INDEX
    # the code predictor for frame t receives the state of the position before frame t
    frame_pos = (s.frame_codes[:, 0] >= 0).nonzero().flatten()
    src_pos = s.subtalker_sources.nonzero().flatten()
    assert torch.equal(src_pos + 1, frame_pos)
    assert torch.equal(s.subtalker_codes[src_pos], codes)
    assert s.num_frames == 4 and int((s.codec0_targets != IGNORE_INDEX).sum()) == 5

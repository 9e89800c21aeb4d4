"""Golden numbers: the SFT loss of the seed-0 tiny model on a fixed batch, pinned to 1e-4.

Tests elsewhere compare paths with each other and with stock code; a change that moves every path
together (a different shift, a different mean, a different layout) would pass them all. These numbers
do not move unless the objective does.

How they were produced: ``build_tiny_tts(TinySpec(), seed=0)`` loaded in float32 with stock
``Qwen3TTSModel.from_pretrained``; the batch below (codes and speaker vectors from ``torch.Generator``
seed 0; two transcripts through the checkpoint's tokenizer; english and auto; one instruct) through ``qwen_tts_ext.train.losses.sft_loss``
with ``subtalker_weight=0.3``; values printed with ``repr`` on this suite's pinned torch 2.11 (CPU).
If a deliberate change to the objective moves them, re-run ``print(golden_loss(...))`` and update the
numbers together with the reason in the commit message.
"""

from __future__ import annotations

import torch

GOLDEN = {"loss": 10.356893539428711, "talker_ce": 8.067304611206055, "subtalker_ce": 7.631962299346924}
TOL = 1e-4


def golden_batch(tts):
    from qwen_tts_ext.train.data import TextTokenizer
    from qwen_tts_ext.train.layout import SpecialIds, build_sample, collate

    ids = SpecialIds.from_config(tts.model.config)
    tok = TextTokenizer(tts.processor.tokenizer)
    g = torch.Generator().manual_seed(0)
    samples = []
    for frames, text, lang, instruct in ((9, "Hello there, golden numbers.", "english", None),
                                         (6, "Hi.", None, "Speak softly.")):
        codes = torch.randint(0, 2048, (frames, ids.num_code_groups), generator=g)
        samples.append(build_sample(tok.text_ids(text), codes, ids, role_ids=tok.role_ids, language=lang,
                                    instruct_ids=tok.instruct_ids(instruct)))
    return collate(samples, [0, 1])


def golden_loss(model_dir) -> dict[str, float]:
    from qwen_tts import Qwen3TTSModel

    from qwen_tts_ext.train.losses import sft_loss

    torch.manual_seed(0)
    tts = Qwen3TTSModel.from_pretrained(str(model_dir), dtype=torch.float32)
    talker = tts.model.talker.eval()
    batch = golden_batch(tts)
    g = torch.Generator().manual_seed(0)
    speakers = torch.randn(2, talker.config.hidden_size, generator=g) * 0.1
    with torch.no_grad():
        out = sft_loss(talker, batch, speakers, subtalker_weight=0.3)
    return {"loss": float(out.loss), "talker_ce": float(out.talker_ce), "subtalker_ce": float(out.subtalker_ce)}


def test_sft_loss_matches_the_golden_numbers(tiny_base):
    got = golden_loss(tiny_base)
    print(got)
    for key, want in GOLDEN.items():
        assert want is not None, f"golden value for {key} not recorded: {got}"
        assert abs(got[key] - want) < TOL, f"{key}: {got[key]!r} != golden {want!r}"
    assert abs(got["loss"] - (got["talker_ce"] + 0.3 * got["subtalker_ce"])) < 1e-5

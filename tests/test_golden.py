"""Golden numbers: the SFT loss of the seed-0 tiny model on a fixed batch, and the losses a 5-step CLI run
logs, pinned to 1e-4.

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

# The 5-step CLI run (`qwen-tts-ext sft`, in-process) on the seed-0 tiny model (``tiny_base``) and the
# synthetic prepared folder of tests/conftest.py (``synthetic_prepared``: 6 clips of 2 speakers, codes and
# speaker vectors from seeded torch generators, written through qwen_tts_ext.prepared; no audio, so
# espeak-ng's output cannot move these numbers). Every recipe key the run depends on is given below
# (no --config file); the rest are SFTConfig's defaults (AdamW fused, weight decay 0.01, betas 0.9/0.999,
# clipping 1.0, sub-talker weight 0.3), so a change to a default moves them too, as it should.
# How they were produced: this test's run, `metrics.jsonl`'s train/* values per step printed with repr,
# on this suite's pinned torch 2.11 (CPU, float32; 2 threads; 1 thread agrees to 1e-6). Step 1 is the
# untrained model's loss; steps 2..5 follow the optimizer, the lr schedule and the batch order.
# If a deliberate change moves them, re-run this test with `-s` (it prints the values) and update them
# together with the reason in the commit message.
GOLDEN_CLI = {
    "train/loss": [10.317981719970703, 10.335772514343262, 10.339329719543457, 10.025819778442383, 9.928037643432617],
    "train/talker_ce": [8.027494430541992, 8.043313026428223, 8.047832489013672, 7.757486343383789, 7.65761137008667],
    "train/subtalker_ce": [7.634957313537598, 7.641530990600586, 7.638322830200195, 7.561110019683838,
                           7.56808614730835],
}
GOLDEN_CLI_FRAMES = [11, 26, 20, 11, 26]  # frames per optimizer step: the bucketed batch order
CLI_ARGS = ["train.max_steps=5", "train.batch_size=2", "train.lr=1e-3", "train.warmup_steps=1", "train.seed=0",
            "train.schedule=cosine", "train.precision=no", "data.eval_fraction=0", "log.tracker=none",
            "log.every_steps=1", "log.log_samples=false", "eval.judges=[]", "checkpoint.every_steps=0", "export.dtype=float32"]


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


def test_cli_run_logs_the_golden_losses(tiny_base, synthetic_prepared, tmp_path, capsys):
    """Five steps through the command line pin the loop (optimizer, schedule, batch order, logging) beside the loss."""
    import json

    from qwen_tts_ext.train.cli import main

    run = tmp_path / "run"
    rc = main([*CLI_ARGS, "--model", str(tiny_base), "--data", str(synthetic_prepared), "--output-dir", str(run)])
    assert rc == 0, capsys.readouterr().err[-2000:]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    got = {key: [r[key] for r in records if key in r] for key in GOLDEN_CLI}
    print(got)
    assert [r["timing/frames"] for r in records if "timing/frames" in r] == GOLDEN_CLI_FRAMES
    for key, want in GOLDEN_CLI.items():
        assert len(got[key]) == len(want), key
        for step, (g, w) in enumerate(zip(got[key], want), start=1):
            assert abs(g - w) < TOL, f"{key} at step {step}: {g!r} != golden {w!r}"

"""The judged SFT evaluation: step-0 and later scores by the offline judges, deltas, the composite,
checkpoint.select=best and the speaker-similarity guard (train/judged_eval.py, evaluation/composite.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from _sft_helpers import make_prepared, tiny_recipe
from qwen_tts_ext.config import load_config
from qwen_tts_ext.errors import UserError
from qwen_tts_ext.evaluation.composite import DEFAULT_WEIGHTS, check_weights, composite, means
from qwen_tts_ext.train.config import SFTConfig

JUDGES = "eval.judges=[speaker,timing]"  # the fast pair: resemblyzer and silero-vad
# the tiny random model speaks noise, in which silero-vad finds no speech: `truncated` has no value there
WEIGHTS = "eval.composite={spk_sim: 1.0, stopped_by_eos: 0.5}"


def _cfg(*overrides: str) -> SFTConfig:
    return load_config(SFTConfig, None, list(overrides))


@pytest.fixture(scope="module")
def corpus2(tmp_path_factory):
    from qwen_tts_ext.testing.speech import make_corpus

    return make_corpus(tmp_path_factory.mktemp("c2"), speakers=("alice", "bob"), clips_per_speaker=3)


@pytest.fixture(scope="module")
def prepared2(tmp_path_factory, tiny_base, corpus2):
    return make_prepared(tmp_path_factory.mktemp("p2") / "prep", tiny_base, corpus2, language="english")


def _records(run: Path) -> list[dict]:
    return [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if l.strip()]


# -- the composite ------------------------------------------------------------------------------------------------

def test_composite_weights_sum_of_means_and_none_when_a_weighted_metric_is_missing():
    rows = [{"id": "a", "spk_sim": 0.8, "truncated": 0.0, "stopped_by_eos": 1.0},
            {"id": "b", "spk_sim": 0.6, "truncated": 1.0, "stopped_by_eos": None}]
    avg = means(rows, ["spk_sim", "truncated", "stopped_by_eos"])
    assert avg == pytest.approx({"spk_sim": 0.7, "truncated": 0.5, "stopped_by_eos": 1.0})
    measured = {"spk_sim", "truncated", "stopped_by_eos"}  # mos_distill and cer: their judges did not run
    assert composite(avg, DEFAULT_WEIGHTS, measured) == pytest.approx(0.7 - 0.5 * 0.5 + 0.5 * 1.0)
    assert composite({**avg, "spk_sim": None}, DEFAULT_WEIGHTS, measured) is None


def test_composite_weights_are_checked_by_name_and_direction():
    assert check_weights(DEFAULT_WEIGHTS) == []
    problems = check_weights({"spk_simm": 1.0, "cer": 0.5, "mos_distill": -1, "speaking_rate": 1, "spk_sim": "x"})
    text = "\n".join(problems)
    assert "did you mean spk_sim" in text
    assert "cer=0.5 rewards the wrong direction" in text and "mos_distill=-1 rewards the wrong direction" in text
    assert "speaking_rate is a target metric" in text and "spk_sim must be a number" in text
    assert len(problems) == 5


def test_recipe_refuses_bad_eval_settings_at_once():
    with pytest.raises(UserError) as err:
        _cfg("model=m", "data.path=d", "eval.judges=[speaker,nope]", "eval.composite={cer: 1}",
             "eval.clips_per_speaker=0")
    text = str(err.value)
    assert "unknown judge 'nope'" in text and "cer=1 rewards the wrong direction" in text
    assert "clips_per_speaker must be >= 1" in text
    with pytest.raises(UserError, match="eval.judges is empty"):
        _cfg("model=m", "data.path=d", "eval.judges=[]", "checkpoint.select=best")
    with pytest.raises(UserError, match="add the speaker judge"):
        _cfg("model=m", "data.path=d", "eval.judges=[timing]", "eval.guard=true")


def test_eval_prompts_held_out_first_then_sentences_then_one_per_tag():
    from qwen_tts_ext.train.judged_eval import eval_prompts

    cfg = _cfg("model=m", "data.path=d", "eval.clips_per_speaker=2", "eval.emotion_tags=[Whispering]")
    rows = [{"text": "Held out one.", "speaker": "Alice", "language": "english"}]
    prompts = eval_prompts(rows, ["alice", "bob"], cfg)
    assert [(p.id, p.text, p.language, p.tag) for p in prompts] == [
        ("alice-0", "Held out one.", "english", ""),
        ("alice-1", cfg.eval.sentences[0], "english", ""),
        ("alice-whispering", "Held out one.", "english", "Whispering"),
        ("bob-0", cfg.eval.sentences[0], "auto", ""),
        ("bob-1", cfg.eval.sentences[1], "auto", ""),
        ("bob-whispering", cfg.eval.sentences[0], "auto", "Whispering"),
    ]
    assert prompts[2].instruct and "whisper" in prompts[2].instruct.lower()  # from configs/emotions.yaml


# -- on the tiny model ------------------------------------------------------------------------------------------------

def test_judged_eval_logs_step0_and_deltas_and_select_best_exports_the_best(tmp_path, tiny_base, prepared2):
    from qwen_tts_ext.train.loop import train

    run = tmp_path / "run"
    summary = train(_cfg(*tiny_recipe(tiny_base, prepared2, run, "train.max_steps=4", JUDGES, "log.eval_every_steps=2",
                                      "eval.max_frames=20", "eval.clips_per_speaker=1", "checkpoint.select=best", WEIGHTS,
                                      "data.eval_fraction=0.34")))
    judged = {r["step"]: r for r in _records(run) if "judge/spk_sim" in r}
    assert sorted(judged) == [0, 2, 4]  # the base model, the eval at step 2, the end
    base = judged[0]
    assert "judge/spk_sim_delta" not in base and -1.0 <= base["judge/spk_sim"] <= 1.0
    assert {"judge/spk_sim/alice", "judge/spk_sim/bob", "judge/stopped_by_eos", "judge/duration_ratio",
            "judge/composite"} <= set(base)
    assert base["judge/composite"] == pytest.approx(base["judge/spk_sim"] + 0.5 * base["judge/stopped_by_eos"])
    for step in (2, 4):
        for key in ("judge/spk_sim", "judge/composite", "judge/duration_ratio"):
            assert judged[step][f"{key}_delta"] == pytest.approx(judged[step][key] - base[key])
    # clips on disk with their scores, one per speaker per eval
    rows = [json.loads(l) for l in (run / "samples" / "step-00000002" / "scores.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["alice-0", "bob-0"] and all("spk_sim" in r for r in rows)
    assert sorted(p.name for p in (run / "samples" / "step-00000002").glob("*.wav")) == ["alice-0.wav", "bob-0.wav"]
    # the held-out clip of a speaker is spoken (its transcript), the other speaker falls back to eval.sentences
    # the export is the eval with the highest composite among the trained steps
    best = max((2, 4), key=lambda s: judged[s]["judge/composite"])
    assert summary["best_step"] == best and summary["best_composite"] == pytest.approx(judged[best]["judge/composite"])
    assert summary["base_composite"] == pytest.approx(base["judge/composite"])
    assert json.loads((run / "export" / "sft_export.json").read_text())["step"] == best
    assert summary["global_step"] == 4


def test_guard_stops_training_when_speaker_similarity_falls_below_the_base(tmp_path, tiny_base, prepared2):
    from qwen_tts_ext.train.loop import train

    run = tmp_path / "run"
    # a margin of -2 asks for spk_sim above the base's + 2: no cosine can, so the guard must stop at the first eval
    summary = train(_cfg(*tiny_recipe(tiny_base, prepared2, run, "train.max_steps=6", JUDGES, "log.eval_every_steps=2",
                                      "eval.max_frames=16", "eval.clips_per_speaker=1", "eval.guard=true",
                                      "eval.guard_margin=-2")))
    assert summary["global_step"] == 2
    assert "fell below the base model's" in summary["stopped_by_guard"]
    assert json.loads((run / "export" / "sft_export.json").read_text())["step"] == 2  # select=last: where it stopped
    assert max(r["step"] for r in _records(run) if "train/loss" in r) == 2


def test_guard_with_a_real_margin_lets_the_run_finish(tmp_path, tiny_base, prepared2):
    from qwen_tts_ext.train.loop import train

    run = tmp_path / "run"
    summary = train(_cfg(*tiny_recipe(tiny_base, prepared2, run, "train.max_steps=4", JUDGES, "log.eval_every_steps=2",
                                      "eval.max_frames=16", "eval.clips_per_speaker=1", "eval.guard=true",
                                      "eval.guard_margin=2")))
    assert summary["global_step"] == 4 and "stopped_by_guard" not in summary


def test_a_clip_that_runs_to_its_cap_is_not_stopped_by_eos(tiny_base):
    """The tiny random talker never emits EOS: every clip fills its cap and must say so (max_frames frames)."""
    import torch
    from qwen_tts import Qwen3TTSModel

    from qwen_tts_ext.train.sampling import synthesize_with_vector

    tts = Qwen3TTSModel.from_pretrained(str(tiny_base), dtype=torch.float32)
    hidden = tts.model.config.talker_config.hidden_size
    torch.manual_seed(0)
    wav, sr, stopped = synthesize_with_vector(tts.model, tts.processor, "Hello there.", torch.randn(hidden) * 0.1,
                                              max_frames=9)
    assert stopped is False
    assert len(wav) == 9 * 1920  # 9 frames of 80 ms at 24 kHz

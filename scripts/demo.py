#!/usr/bin/env python
"""The end-to-end demo on the embedded tiny default: prep -> SFT -> speaker lock -> Darwin blend -> speak.

    bash scripts/demo.sh              # sets up, then runs this
    python scripts/demo.py --out demo_out

Every stage runs the suite's real code, through the same command-line entry points a user calls
(each stage prints its equivalent command). The tiny checkpoint is random, so the voice is noise
shaped by a few seconds of training, but every file it writes has the real format: the exported
checkpoint loads in stock qwen_tts, the WAVs are 24 kHz. A stage whose code is missing is reported
as skipped, never faked. Results land in ``--out`` with ``report.md`` / ``report.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SCRIPT = "[Whispering] Don't wake him. [Angry] Why would you do that? [Excited] We won the game!"


class Demo:
    def __init__(self, out: Path):
        self.out = out
        self.stages: list[dict] = []

    def stage(self, name: str, command: list[str] | None, fn):
        print(f"\n=== {name}", flush=True)
        if command:
            print("$ " + " ".join(shlex.quote(c) for c in command), flush=True)
        t0 = time.perf_counter()
        rec = {"stage": name, "command": " ".join(shlex.quote(c) for c in command) if command else None}
        try:
            result = fn()
            rec.update(status="ok", seconds=round(time.perf_counter() - t0, 2), result=result)
        except ModuleNotFoundError as exc:
            rec.update(status="skipped", seconds=0.0, result=f"not available yet: {exc.name}")
        except SystemExit as exc:  # a CLI returned non-zero through argparse
            rec.update(status="failed", seconds=round(time.perf_counter() - t0, 2), result=f"exit {exc.code}")
        except Exception as exc:  # noqa: BLE001 - the report must say what broke
            traceback.print_exc()
            rec.update(status="failed", seconds=round(time.perf_counter() - t0, 2), result=f"{type(exc).__name__}: {exc}")
        print(f"--> {rec['status']} ({rec['seconds']} s): {rec['result']}", flush=True)
        self.stages.append(rec)
        return rec

    def ok(self, name: str) -> bool:
        return any(s["stage"] == name and s["status"] == "ok" for s in self.stages)


def _run_cli(main, argv: list[str]) -> None:
    code = main(argv)
    if code:
        raise RuntimeError(f"command exited with {code}")


def run(out: Path, steps: int) -> int:
    import torch

    torch.manual_seed(0)
    from qwen_tts_ext.outputs import check_output_dir, owner, write_marker

    check_output_dir(out, command="demo", overwrite=True, flag="--out")  # never a folder the demo did not make
    if owner(out) == "demo":
        shutil.rmtree(out)  # the previous demo's output, replaced on every run
    out.mkdir(parents=True, exist_ok=True)
    write_marker(out, "demo")
    d = Demo(out)
    base, llm = out / "models" / "tiny-base", out / "models" / "tiny-llm"
    corpus, prep, run_dir = out / "corpus", out / "prepared", out / "sft"
    blended = out / "models" / "tiny-voice-darwin"
    wavs = out / "wavs"

    def make_models():
        from qwen_tts_ext.testing.tiny_checkpoint import TinySpec, build_tiny_llm, build_tiny_tts

        build_tiny_tts(base, TinySpec(), seed=0)
        build_tiny_llm(llm, base, seed=1)
        return {"tts": str(base), "llm": str(llm)}

    d.stage("1. tiny checkpoints", ["python", "-m", "qwen_tts_ext.testing.tiny_checkpoint", "tts", str(base)], make_models)

    def make_corpus():
        from qwen_tts_ext.testing.speech import espeak_available, make_corpus

        m = make_corpus(corpus, speakers=("alice", "bob"), clips_per_speaker=4)
        return {"manifest": str(m), "clips": 8, "espeak_ng": espeak_available()}

    d.stage("2. espeak-ng corpus", None, make_corpus)

    prep_cmd = ["--manifest", str(corpus / "manifest.jsonl"), "--model", str(base), "--output", str(prep), "--ref-mode", "all"]

    def prepare():
        from qwen_tts_ext.prep.cli import main

        _run_cli(main, prep_cmd)
        stats = json.loads((prep / "stats.json").read_text())
        return {"output": str(prep), "kept": stats.get("kept", stats.get("clips_kept")), "rejected": stats.get("rejected", stats.get("clips_rejected"))}

    d.stage("3. prepare data", ["python", "finetuning/prepare_data.py", *prep_cmd], prepare)

    sft_cmd = ["--config", str(REPO / "configs" / "sft_tiny.yaml"), "--model", str(base), "--data", str(prep),
               "--output-dir", str(run_dir), f"train.max_steps={steps}"]

    def sft():
        if not d.ok("3. prepare data"):
            raise RuntimeError("needs the prepared dataset")
        from qwen_tts_ext.train.cli import main

        _run_cli(main, sft_cmd)
        summary = json.loads((run_dir / "summary.json").read_text())
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
        first = next(r for r in records if "train/loss" in r)  # timing records carry no loss
        judged = [r for r in records if "judge/spk_sim" in r]  # the judged eval: step 0 and the end
        spk = {f"spk_sim_step{r['step']}": round(r["judge/spk_sim"], 3) for r in judged[:1] + judged[-1:]}
        return {"export": summary["export"], "steps": summary["global_step"],
                "loss_first": round(first["train/loss"], 3), "loss_last": round(summary["final_loss"], 3), **spk}

    d.stage("4. SFT", ["accelerate", "launch", "finetuning/sft_12hz.py", *sft_cmd], sft)

    export = run_dir / "export"

    def lock():
        from qwen_tts import Qwen3TTSModel

        tts = Qwen3TTSModel.from_pretrained(str(export), dtype=torch.float32)
        assert tts.model.tts_model_type == "custom_voice"
        return {"loaded_by": "qwen_tts.Qwen3TTSModel", "tts_model_type": tts.model.tts_model_type,
                "speakers": tts.get_supported_speakers()}

    d.stage("5. speaker lock (stock loader)", None, lock)

    blend_cmd = ["--tts", str(export), "--llm", str(llm), "--alpha", "0.03", "--output", str(blended)]

    def blend():
        if not export.is_dir():
            raise RuntimeError("needs the SFT export")
        from qwen_tts_ext.blend.cli import main

        _run_cli(main, blend_cmd)
        prov = json.loads((blended / "darwin_blend.json").read_text())
        return {"output": str(blended), "tensors_blended": prov["tensors"]["blended"], "formula": prov["formula"]}

    d.stage("6. Darwin FFN blend (alpha 0.03)", ["python", "finetuning/darwin_blend.py", *blend_cmd], blend)

    speak_model = blended if d.ok("6. Darwin FFN blend (alpha 0.03)") else export
    speak_cmd = ["--model", str(speak_model), "--speaker", "alice", "--language", "english", "--seed", "0",
                 "--text", SCRIPT, "--out", str(wavs / "alice_tagged.wav")]

    def speak():
        from qwen_tts_ext.synthesis.cli import main

        code = main(speak_cmd)
        # exit 3 = written, but a segment hit the frame cap (stop-signal failure): a finding, not a crash
        if code not in (0, 3):
            raise RuntimeError(f"command exited with {code}")
        info = json.loads((wavs / "alice_tagged.json").read_text())
        segs = info["segments"]
        return {"wav": str(wavs / "alice_tagged.wav"), "segments": [s["tag"] for s in segs],
                "stopped_by_eos": [s["stopped_by_eos"] for s in segs], "seconds": round(info["seconds"], 2),
                "voice_ids": sorted({str(s["voice_id"]) for s in segs})}

    d.stage("7. speak a tagged script", ["python", "scripts/synthesize.py", *speak_cmd], speak)

    def speak_plain():
        import numpy as np
        import soundfile as sf
        from qwen_tts import Qwen3TTSModel

        tts = Qwen3TTSModel.from_pretrained(str(speak_model), dtype=torch.float32)
        wavs.mkdir(parents=True, exist_ok=True)
        res = {}
        for name in tts.get_supported_speakers():
            torch.manual_seed(0)
            w, sr = tts.generate_custom_voice(text="The quick brown fox jumps over the lazy dog.", language="English",
                                              speaker=name, max_new_tokens=150)
            path = wavs / f"{name}_stock.wav"
            sf.write(path, np.asarray(w[0]), sr)
            res[name] = {"wav": str(path), "seconds": round(len(w[0]) / sr, 2), "sample_rate": sr}
        return res

    d.stage("8. stock generate_custom_voice per speaker", None, speak_plain)

    failed = [s for s in d.stages if s["status"] == "failed"]
    report = {"out": str(out), "stages": d.stages, "wavs": sorted(str(p) for p in wavs.glob("*.wav")) if wavs.exists() else []}
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    lines = ["# qwen-tts-ext demo report", "", f"Output folder: `{out}`", "",
             "| stage | status | seconds | result |", "|---|---|---|---|"]
    for s in d.stages:
        lines.append(f"| {s['stage']} | {s['status']} | {s['seconds']} | {json.dumps(s['result'], default=str)[:300]} |")
    lines += ["", "WAVs (24 kHz):", *[f"- `{w}`" for w in report["wavs"]], "",
              "The tiny checkpoint is random: it demonstrates the pipeline and file formats, not voice quality."]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n" + "\n".join(lines))
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="End-to-end demo on tiny random checkpoints (CPU, a few minutes).")
    p.add_argument("--out", default=str(REPO / "demo_out"), help="output folder: new, empty, or a previous demo output (replaced); anything else is refused")
    p.add_argument("--steps", type=int, default=60, help="SFT optimizer steps")
    a = p.parse_args(argv)
    from qwen_tts_ext.errors import UserError, print_user_error

    try:
        return run(Path(a.out).resolve(), a.steps)
    except UserError as exc:
        print_user_error(exc)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

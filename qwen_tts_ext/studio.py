"""``qwen-tts-ext studio`` / ``python app.py``: a browser studio for tagged scripts (Gradio, localhost only).

Pick a checkpoint and a voice, write a script with emotion tags, choose a Darwin alpha and a seed,
and generate: segments render one by one (the result grows and can be played while the next one
renders), the segment table shows each tag's instruction, length and whether it stopped by EOS, a
waveform + mel image marks the joins, and every result is saved as a timestamped WAV with a JSON
sidecar in ``--output-dir``.

    qwen-tts-ext studio --model ckpt/alice-locked --llm Qwen3-1.7B
    qwen-tts-ext studio --models-dir checkpoints/ --port 7861

Its settings are a ``StudioConfig`` (``qwen_tts_ext/synthesis/config.py``: the shared ``runtime`` and
``synthesis`` groups plus the studio's own keys); every one is checked before the server starts.

Length: about 450 lines: the Gradio layout and its event handlers are one UI and read best in one file;
the checks and the command (``preflight``, ``COMMAND``) sit at the end.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np

from qwen_tts_ext.command import Command, Option
from qwen_tts_ext.errors import UserError
from qwen_tts_ext.synthesis.config import SPEAKING_TYPES, STUDIO_ALIASES, StudioConfig

EXAMPLE_SCRIPT = "[Whispering] Don't wake him. [Angry] Why would you do that? [Excited] We won!"
TABLE_HEADERS = ["#", "tag", "instruction", "text", "s", "frames/cap", "EOS", "RTF"]


def _is_speaking_checkpoint(config_file: Path) -> bool:
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (isinstance(config, dict) and config.get("model_type") == "qwen3_tts"
            and str(config.get("tts_model_type", "base")) in SPEAKING_TYPES)


def find_checkpoints(settings: StudioConfig) -> list[str]:
    """``runtime.model`` and ``--model`` paths, plus every folder under ``--models-dir`` whose config.json
    says it is a Qwen3-TTS base or custom_voice checkpoint."""
    found = list(dict.fromkeys([m for m in [settings.runtime.model, *settings.models] if m]))
    if settings.models_dir:
        root = Path(settings.models_dir).expanduser()
        for cfg in sorted(root.glob("*/config.json")) + sorted(root.glob("*/*/config.json")):
            if _is_speaking_checkpoint(cfg) and str(cfg.parent) not in found:
                found.append(str(cfg.parent))
    return found


class Studio:
    """Model cache + the generation callback (UI-independent, so it is testable without a browser)."""

    def __init__(self, settings: StudioConfig):
        self.settings = settings
        self._models: dict[str, Any] = {}
        self._lock = threading.Lock()  # one model call at a time; never held across a yield
        self._run = 0  # id of the run allowed to continue; ``stop()`` and every new run bump it

    def stop(self) -> None:
        """Stop the current run at its next segment boundary (nothing is saved for it)."""
        with self._lock:
            self._run += 1

    def synthesizer(self, path: str):
        from qwen_tts_ext.devices import resolve_device
        from qwen_tts_ext.synthesis.engine import Synthesizer

        if not path:
            raise UserError("choose a checkpoint first")
        if path not in self._models:
            device, dtype = resolve_device(self.settings.runtime.device, self.settings.runtime.dtype)
            self._models.clear()  # one model in memory at a time
            self._models[path] = Synthesizer.load(path, device=device, dtype=dtype)
        return self._models[path]

    def model_info(self, path: str) -> dict[str, Any]:
        synth = self.synthesizer(path)
        speakers = list(synth.speakers)
        spk_file = Path(path) / "speakers.safetensors"
        if synth.model_type == "base" and spk_file.is_file():
            from safetensors import safe_open

            with safe_open(str(spk_file), framework="pt") as f:
                speakers = sorted(f.keys())
        return {
            "type": synth.model_type,
            "size": synth.model_size,
            "speakers": speakers,
            "languages": synth.languages,
            "needs_reference": synth.model_type == "base" and not speakers,
            "ignores_instructions": synth.ignores_instructions,
            "tags": synth.emotions.tags,
        }

    def run(self, path: str, speaker: str | None, ref_audio: str | None, language: str, script: str, alpha: float,
            llm: str, seed: int, temperature: float | None, greedy: bool):
        """Yield ``(status, segments_so_far, joined_audio, sample_rate, result_or_None, saved_paths_or_None)``."""
        from qwen_tts_ext.synthesis.engine import SynthesisResult
        from qwen_tts_ext.synthesis.joining import Joiner, crossfade_samples
        from qwen_tts_ext.synthesis.output import save_synthesis, timestamped_path

        with self._lock:
            self._run += 1
            run = self._run
            synth = self.synthesizer(path)
            voice = synth.voice(
                speaker=speaker or None,
                ref_audio=ref_audio or None if synth.model_type == "base" else None,
                speakers_file=(Path(path) / "speakers.safetensors") if synth.model_type == "base" and speaker else None,
            )
            # the UI's choices over the settings' synthesis group (bounds, joining, other sampling knobs)
            options = dataclasses.replace(
                self.settings.synthesis, language=language or "auto", seed=int(seed or 0),
                do_sample=False if greedy else None, temperature=temperature if not greedy else None,
            )
            alpha = float(alpha or 0.0)
            n = len(synth.plan(script, options))
        if alpha > 0:
            yield (f"blending alpha {alpha:g} of {llm} ...", [], None, 24000, None, None)
        warnings: list[str] = []
        segments, joiner = [], None
        with self._lock:
            if run != self._run:
                return
            blend = synth.blend.set(alpha, llm or None)
            gen = synth.generate(script, voice, options, warnings)
        yield (_status(0, n, warnings), [], None, 24000, None, None)
        while True:
            with self._lock:  # a newer run or stop() ends this one between segments
                stopped = run != self._run
                if stopped:
                    gen.close()
                else:
                    synth.blend.set(alpha, llm or None)  # a no-op unless a stopped run left another blend
                    seg = next(gen, None)
            if stopped:
                yield (STOPPED.format(done=len(segments), total=n), list(segments),
                       joiner.audio if joiner else None, segments[-1].sample_rate if segments else 24000, None, None)
                return
            if seg is None:
                break
            joiner = joiner or Joiner(crossfade_samples(options.crossfade_ms, seg.sample_rate))
            joiner.add(seg.audio)
            segments.append(seg)
            yield (_status(len(segments), n, warnings), list(segments), joiner.audio, seg.sample_rate, None, None)
        result = SynthesisResult(joiner.audio, segments[0].sample_rate, segments, warnings)
        if result.cap_hits:
            warnings.append(f"{len(result.cap_hits)} segment(s) hit the frame cap without EOS (stop-signal failure)")
        meta = dict(
            text=script, model=synth.describe(), voice=voice.describe(), language=options.language,
            seed=options.seed, alpha=alpha, llm=llm or None,
            blend={k: v for k, v in (blend or {}).items() if k != "alpha_per_tensor"},
            sampling=options.sampling(synth.tts.generate_defaults or {}), source="studio",
        )
        saved = save_synthesis(result, timestamped_path(self.settings.output_dir, script), meta, command="studio")
        yield (_status(n, n, warnings, saved[0]), segments, result.audio, result.sample_rate, result, saved)


STOPPED = "**Stopped after {done}/{total} segment(s)**: the segments rendered so far are shown; nothing was saved."


def _status(done: int, total: int, warnings: list[str], saved: Path | None = None) -> str:
    lines = [f"**{'Done' if saved else 'Rendering'}: {done}/{total} segment(s)**"]
    if saved:
        lines.append(f"Saved `{saved}` (+ `.json` sidecar)")
    lines += [f"- ⚠ {w}" for w in warnings]
    return "\n\n".join(lines)


def _short(text: str, n: int = 48) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def segment_rows(segments) -> list[list[Any]]:
    rows = []
    for s in segments:
        ins = s.instruction if s.instruction_used else (s.instruction and f"(ignored) {s.instruction}")
        rows.append([s.index, s.tag or "", _short(ins or "", 36), _short(s.text, 36), round(s.seconds, 2),
                     f"{s.frames}/{s.frame_cap}", "yes" if s.stopped_by_eos else "NO (cap)", round(s.rtf, 2)])
    return rows


def segment_table(segments) -> str:
    """The segment list as a markdown table (renders every row, unlike a virtualised grid)."""
    if not segments:
        return "*No segments yet.*"
    def esc(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("[", "\\[").replace("]", "\\]")

    lines = ["| " + " | ".join(TABLE_HEADERS) + " |", "|" + "---|" * len(TABLE_HEADERS)]
    lines += ["| " + " | ".join(esc(v) for v in row) + " |" for row in segment_rows(segments)]
    return "\n".join(lines)


def waveform_image(audio: np.ndarray, sample_rate: int, segments, crossfade_ms: float = 40.0) -> np.ndarray:
    """An RGB image: the waveform with the segment joins marked, and its mel spectrogram."""
    import librosa
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from qwen_tts_ext.synthesis.joining import crossfade_samples, join_overlaps

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 4.2), sharex=True, constrained_layout=True)
    t = np.arange(len(audio)) / sample_rate
    ax1.plot(t, audio, lw=0.4, color="tab:blue")
    ax1.set_ylim(-1, 1)
    ax1.set_xlim(0, max(len(audio), 1) / sample_rate)
    ax1.set_ylabel("amplitude")
    lengths = [len(s.audio) for s in segments]
    overlaps = join_overlaps(lengths, crossfade_samples(crossfade_ms, sample_rate))
    start = 0
    for i, s in enumerate(segments):
        if i > 0:
            ax1.axvline(start / sample_rate, color="tab:red", lw=0.8, ls="--")
        ax1.text(start / sample_rate, -0.85, f" [{s.tag}]" if s.tag else " (untagged)", fontsize=8, color="tab:red",
                 bbox=dict(facecolor="white", alpha=0.7, lw=0, pad=1))
        start += lengths[i] - (overlaps[i] if i < len(overlaps) else 0)
    if len(audio) >= 2048:
        mel = librosa.feature.melspectrogram(y=audio.astype(np.float32), sr=sample_rate, n_fft=1024, hop_length=256, n_mels=80)
        db = librosa.power_to_db(mel, ref=np.max)
        ax2.imshow(db, origin="lower", aspect="auto", cmap="magma", extent=[0, len(audio) / sample_rate, 0, 80])
    ax2.set_ylabel("mel bin")
    ax2.set_xlabel("seconds")
    fig.canvas.draw()
    img = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return img


def _pcm16(audio: np.ndarray) -> np.ndarray:
    return (np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16)


def build_app(settings: StudioConfig):
    import gradio as gr

    studio = Studio(settings)
    checkpoints = find_checkpoints(settings)

    def on_model(path):
        if not path:
            return (gr.update(choices=[], value=None), gr.update(), gr.update(visible=False), "No checkpoint selected.")
        try:
            info = studio.model_info(path)
        except UserError as exc:
            raise gr.Error(str(exc)) from None
        spk = info["speakers"]
        note = f"**{info['type']}** checkpoint ({info['size']})"
        if info["ignores_instructions"]:
            note += " — ⚠ this 0.6B model ignores instructions: tags only split the script"
        note += "  \nTags: " + ", ".join(f"`[{t}]`" for t in info["tags"]) + " (other tags = free-text instructions)"
        return (
            gr.update(choices=spk, value=spk[0] if spk else None, visible=bool(spk)),
            gr.update(choices=info["languages"], value="auto"),
            gr.update(visible=info["type"] == "base"),
            note,
        )

    def on_generate(path, speaker, ref_audio, language, script, alpha, llm, seed, temperature, greedy,
                    progress=gr.Progress()):
        try:
            for status, segs, audio, sr, result, saved in studio.run(
                path, speaker, ref_audio, language, script, alpha, llm, seed, temperature, greedy
            ):
                total = max(1, len(studio.synthesizer(path).plan(script)))
                progress(len(segs) / total, desc=f"segment {min(len(segs) + 1, total)}/{total}")
                audio_out = (sr, _pcm16(audio)) if audio is not None and len(audio) else None
                image = (waveform_image(result.audio, sr, segs, settings.synthesis.crossfade_ms) if result is not None
                         else gr.update())
                yield status, audio_out, segment_table(segs), image, (str(saved[0]) if saved else gr.update())
        except UserError as exc:
            raise gr.Error(str(exc)) from None

    with gr.Blocks(title="Qwen3-TTS studio") as app:
        gr.Markdown("# Qwen3-TTS studio\nOne voice, emotion tags, bounded generation. Segments render one by one.")
        with gr.Row():
            with gr.Column(scale=1):
                model = gr.Dropdown(checkpoints, value=checkpoints[0] if checkpoints else None, label="Checkpoint",
                                    allow_custom_value=True, info="a Qwen3-TTS checkpoint folder")
                model_note = gr.Markdown()
                speaker = gr.Dropdown([], label="Speaker", allow_custom_value=False)
                ref_audio = gr.Audio(type="filepath", sources=["upload"], label="Reference clip (Base checkpoints)",
                                     visible=False)
                language = gr.Dropdown(["auto"], value="auto", label="Language")
                script = gr.Textbox(EXAMPLE_SCRIPT, lines=5, label="Script",
                                    info="[Tag] starts a segment; \\[ and \\] are literal brackets")
                with gr.Row():
                    alpha = gr.Slider(0.0, 0.15, value=0.0, step=0.005, label="Darwin alpha",
                                      info="0.03 typical, 0.05 strongest stable; 0.10 breaks the stop signal")
                    seed = gr.Number(settings.synthesis.seed, precision=0, label="Seed")
                llm = gr.Textbox(settings.llm, label="LLM for the blend (Qwen3 folder)", visible=True)
                with gr.Accordion("Sampling", open=False):
                    temperature = gr.Slider(0.1, 1.5, value=settings.synthesis.temperature or 0.9, step=0.05,
                                            label="Temperature")
                    greedy = gr.Checkbox(settings.synthesis.do_sample is False, label="Greedy decoding")
                with gr.Row():
                    generate = gr.Button("Generate", variant="primary")
                    stop = gr.Button("Stop", variant="stop")
            with gr.Column(scale=1):
                status = gr.Markdown("Ready.")
                result_audio = gr.Audio(label="Result", type="numpy", interactive=False, elem_id="result-audio")
                saved = gr.Textbox(label="Saved WAV", interactive=False)
                gr.Markdown("**Segments**")
                table = gr.Markdown("*No segments yet.*", elem_id="segments")
                image = gr.Image(label="Waveform and mel spectrogram", type="numpy", interactive=False)
        outputs = [speaker, language, ref_audio, model_note]
        model.change(on_model, inputs=model, outputs=outputs)
        app.load(on_model, inputs=model, outputs=outputs)
        generate.click(
            on_generate,
            inputs=[model, speaker, ref_audio, language, script, alpha, llm, seed, temperature, greedy],
            outputs=[status, result_audio, table, image, saved],
        )

        # The running generator sees the stop at its next segment boundary and reports it itself (cancelling
        # the Gradio event instead could let an update already in flight overwrite the status).
        stop.click(studio.stop, queue=False)
    return app


DESCRIPTION = """\
Browser studio: pick a checkpoint and voice, write a script with [Emotion] tags, set the Darwin alpha and
seed, and listen segment by segment. Serves on 127.0.0.1 only; results are saved as timestamped WAVs with
JSON sidecars in --output-dir (new files only: nothing there is ever replaced).

Before the server starts, every --model is identified from its config.json, --models-dir is scanned,
the --llm is checked to be a Qwen3 LLM, the device is resolved, the output folder and the port are checked.
"""

EPILOG = """\
examples:
  qwen-tts-ext studio --model runs/v1/export --llm Qwen/Qwen3-1.7B          # or: python app.py ...
  qwen-tts-ext studio --model a/ --model b/ --models-dir checkpoints/ --port 7861 seed=7 crossfade_ms=60

KEY=VALUE overrides take the config keys (synthesis.max_segment_seconds=60) or their short names
(max_segment_seconds=60, device=cuda). The synthesis settings are the defaults of every generation;
seed, temperature and greedy are the UI's starting values.
exit status: 0 server stopped, 2 user error (one line, before the server starts), 130 interrupted.
"""

COMMAND = Command(
    name="studio", prog="qwen-tts-ext studio", description=DESCRIPTION, epilog=EPILOG, config=StudioConfig,
    run="qwen_tts_ext.studio:run", aliases=STUDIO_ALIASES,
    options=[
        Option("models", "--model", "checkpoint folder(s) to offer (repeatable)", many=True, metavar="DIR"),
        Option("models_dir", "--models-dir", "also offer every Qwen3-TTS checkpoint folder under this folder"),
        Option("llm", "--llm", "default Qwen3 LLM folder for the Darwin alpha slider"),
        Option("output_dir", "--output-dir", "where WAVs and sidecars are saved (default outputs/studio)"),
        Option("port", "--port", "server port on 127.0.0.1 (default 7860)"),
        Option("runtime.device", "--device", "cpu, cuda, cuda:N, mps or auto (default cpu)"),
        Option("runtime.dtype", "--dtype", "float32, bfloat16, float16 or auto"),
        Option("synthesis.max_segment_seconds", "--max-segment-seconds", "hard frame cap per segment (default 120)"),
        Option("synthesis.cap_margin", "--cap-margin", "frame cap = margin x expected speech + slack (default 2)"),
        Option("synthesis.crossfade_ms", "--crossfade-ms", "crossfade between segments (default 40)"),
    ],
)


def check_output_folder(path: str) -> Path:
    """The studio's output folder: new or an existing folder we can write to (files are only added)."""
    from qwen_tts_ext.outputs import check_parent

    folder = Path(os.path.abspath(os.path.expanduser(path or "")))
    if not str(path).strip():
        raise UserError("--output-dir is empty; give a folder for the WAVs")
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--output-dir {folder} is a file; choose a folder (the file is left as it is)")
    if folder.is_dir():
        if not os.access(folder, os.W_OK | os.X_OK):
            raise UserError(f"--output-dir {folder}: no permission to write there; choose a location you can write to")
    else:
        check_parent(folder, "--output-dir")
    return folder


def check_port(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            raise UserError(f"port {port} on 127.0.0.1 is in use (another studio?); choose another with --port") from None


def preflight(cfg: StudioConfig) -> list[str]:
    """Every check before the server starts; returns the checkpoints to offer."""
    from qwen_tts_ext.checkpoint_io import require_llm_checkpoint, require_tts_checkpoint
    from qwen_tts_ext.devices import resolve_device

    named = [("runtime.model", cfg.runtime.model)] if cfg.runtime.model else []
    for what, model in named + [("--model", m) for m in cfg.models]:
        require_tts_checkpoint(model, what=what, types=SPEAKING_TYPES)
    if cfg.models_dir:
        root = Path(cfg.models_dir).expanduser()
        if not root.exists():
            raise UserError(f"--models-dir {cfg.models_dir} does not exist")
        if not root.is_dir():
            raise UserError(f"--models-dir {cfg.models_dir} is a file; give the folder that holds checkpoint folders")
    checkpoints = find_checkpoints(cfg)
    if not checkpoints:
        where = f" (none under --models-dir {cfg.models_dir})" if cfg.models_dir else ""
        raise UserError(f"no checkpoints{where}: pass --model CHECKPOINT_DIR (repeatable) or --models-dir DIR")
    if cfg.llm:
        require_llm_checkpoint(cfg.llm, what="--llm")
    device, dtype = resolve_device(cfg.runtime.device, cfg.runtime.dtype)
    cfg.runtime = dataclasses.replace(cfg.runtime, device=device, dtype=dtype)
    check_output_folder(cfg.output_dir)
    check_port(cfg.port)
    return checkpoints


def launch(cfg: StudioConfig) -> None:
    """Build the Gradio app and serve it on 127.0.0.1 until interrupted."""
    from qwen_tts_ext.synthesis.synthesize import quiet_transformers

    quiet_transformers()
    app = build_app(cfg)
    print(f"studio on http://127.0.0.1:{cfg.port} (outputs in {cfg.output_dir})", file=sys.stderr, flush=True)
    import gradio as gr

    # System fonts: the default theme fetches Google Fonts, which hangs page loads on offline machines.
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "DejaVu Sans Mono", "monospace"])
    app.queue(default_concurrency_limit=1).launch(server_name="127.0.0.1", server_port=cfg.port, share=False,
                                                   inbrowser=False, show_error=True, quiet=True, theme=theme,
                                                   footer_links=[])


def run(cfg: StudioConfig) -> int:
    preflight(cfg)
    launch(cfg)
    return 0


def main(argv: list[str] | None = None) -> int:
    return COMMAND.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())

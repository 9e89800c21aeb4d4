"""``ScoreConfig``: every setting of ``qwen-tts-ext score`` (YAML keys = these names; flags map onto them).

No torch or numpy import here: the config is built and checked before any judge loads.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from qwen_tts_ext.errors import UserError


@dataclass
class ScoreConfig:
    """Settings of one scoring run (YAML keys = these names; CLI flags map onto them)."""

    audio: str = ""  # a folder of audio files (wav/flac/ogg/mp3), one audio file, or a JSONL/CSV manifest
    text: str = ""  # one transcript for every clip (instead of sidecars / NAME.txt)
    texts: str = ""  # a text file with one transcript per clip, in the order the clips are listed (sorted)
    ref_audio: str = ""  # one reference clip of the intended speaker for every clip (speaker similarity)
    judges: list[str] = field(default_factory=list)  # judge names ([] = every installed judge)
    asr: str = ""  # local transformers ASR model folder (Whisper, Qwen3-ASR): WER/CER in any language
    speaker_encoder: str = ""  # Base checkpoint: adds the model's own ECAPA similarity (spk_sim_ecapa)
    device: str = "cpu"  # where the judges that can use a GPU run (speaker_ecapa, a transformers --asr)
    threads: int = 0  # CPU threads per judge (0: the judges' default, 1)
    jobs: int = 0  # judges run side by side on each chunk of clips (0: 2 where there are 2+ cores)
    language: str = "auto"  # language of every clip (auto: a manifest's/sidecar's language column, else unknown)
    out_dir: str = ""  # report folder (default outputs/score-<timestamp>)
    overwrite: bool = False  # replace this command's previous report at out_dir
    progress: bool = True  # progress bar on stderr (--quiet turns it off)

    def validate(self) -> None:
        """Value checks (called when the config is built; every problem is reported at once)."""
        problems: list[str] = []
        names = []
        for item in self.judges:
            names.extend(n.strip().lower() for n in str(item).split(",") if n.strip())
        self.judges = list(dict.fromkeys(names))
        if self.text and self.texts:
            problems.append("--text and --texts both give transcripts; give one (--text: one transcript for every "
                            "clip, --texts: a file with one line per clip)")
        if self.threads < 0:
            problems.append(f"threads must be >= 0 (0: the judges' default), got {self.threads}")
        if self.jobs < 0:
            problems.append(f"jobs must be >= 0 (0: 2 where there are 2+ cores), got {self.jobs}")
        if self.text and not self.text.strip():
            problems.append("--text is empty; give the transcript, or leave --text out")
        UserError.collect(problems)

    def check(self) -> None:
        """The required settings, once file, flags and overrides are merged."""
        if not str(self.audio).strip():
            raise UserError("no audio: pass --audio DIR (a folder of WAV/FLAC/OGG files), one audio file, or a "
                            "manifest FILE.jsonl|FILE.csv with audio,text columns")

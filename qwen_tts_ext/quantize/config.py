"""``QuantizeConfig``: every setting of ``qwen-tts-ext quantize`` (YAML keys = these names; flags map onto them).

No torch import here: the config is built and checked before any model loads.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from qwen_tts_ext.errors import UserError

METHODS = ("awq", "rtn")
# judges on a few sentences spoken by the float and the int4 model (custom_voice checkpoints); [] = none
DEFAULT_JUDGES = ("speaker", "distillmos", "dnsmos", "asr", "timing")
JUDGE_NAMES = ("speaker", "speaker_ecapa", "distillmos", "dnsmos", "asr", "timing")
DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass
class QuantizeConfig:
    """Settings of one INT4 export (YAML keys = these names; CLI flags map onto them)."""

    model: str = ""  # Qwen3-TTS checkpoint folder (an SFT export, a blend, a stock checkpoint)
    calib: str = ""  # prepared dataset folder (`qwen-tts-ext prepare` output): the calibration talker inputs
    output: str = ""  # new folder for the quantized checkpoint
    sentences: list[str] = field(default_factory=list)  # instead of calib: sentences (or one .txt file, a line each)
    speaker: str = ""  # with sentences: the checkpoint's speaker who speaks them (the float model generates the codes)
    language: str = "auto"  # with sentences: their language (auto: none in the prompt)
    max_frames: int = 200  # with sentences: frame cap per generated sentence
    method: str = "awq"  # awq (activation-aware scales) | rtn (plain round-to-nearest, the baseline)
    group_size: int = 128  # input channels per scale/zero point; must divide every quantized width
    calib_rows: int = 128  # dataset rows that calibrate (after the held-out rows)
    heldout_rows: int = 8  # dataset rows kept out of calibration, to measure CE / KL (at most half the rows)
    batch_size: int = 4  # rows per talker forward
    grid: int = 20  # scale ratios tried per projection (0, 1/grid, ..., (grid-1)/grid)
    max_rows: int = 4096  # input rows sampled per projection for the scale search and the error report
    judges: list[str] = field(default_factory=lambda: list(DEFAULT_JUDGES))  # [] = none; needs a speaker
    embed_8bit: bool = False  # also store the text embedding (151936 rows at release) as int8 rows
    code_predictor_8bit: bool = False  # also store the code predictor's linears as int8 (per output channel)
    dtype: str = "auto"  # dtype the model is loaded and calibrated in (auto: the checkpoint's)
    device: str = "cpu"  # where calibration runs (cpu, cuda, cuda:0)
    seed: int = 0  # row split and row sampling
    overwrite: bool = False  # replace this command's previous output at `output`

    def validate(self) -> None:
        UserError.collect(self.problems(required=False))

    def problems(self, required: bool = True) -> list[str]:
        out = []
        names = []
        for item in self.judges:
            names.extend(n.strip().lower() for n in str(item).split(",") if n.strip())
        self.judges = list(dict.fromkeys(names))
        unknown = [n for n in self.judges if n not in JUDGE_NAMES]
        if unknown:
            out.append(f"unknown judge(s) {', '.join(unknown)}; choose from {', '.join(JUDGE_NAMES)} ([] = none)")
        self.method = str(self.method).lower()
        if self.method not in METHODS:
            out.append(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.dtype not in DTYPES:
            out.append(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.group_size < 2 or self.group_size % 2:
            out.append(f"group_size must be an even number >= 2 (128 at release), got {self.group_size}")
        for key in ("calib_rows", "batch_size", "grid", "max_rows", "max_frames"):
            if getattr(self, key) < 1:
                out.append(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.heldout_rows < 0:
            out.append(f"heldout_rows must be >= 0, got {self.heldout_rows}")
        if required:
            if not str(self.model).strip():
                out.append("pass --model CKPT (the Qwen3-TTS checkpoint folder to quantize)")
            if str(self.calib).strip() and self.sentences:
                out.append("--calib and --sentences both give calibration data; give one")
            elif not str(self.calib).strip() and not self.sentences:
                out.append("pass --calib PREPARED_DIR (a `qwen-tts-ext prepare` output: the calibration data), "
                           "or --sentences with --speaker")
            elif self.sentences and not str(self.speaker).strip():
                out.append("--sentences needs --speaker (a speaker of the checkpoint who speaks them)")
            if not str(self.output).strip():
                out.append("pass --output DIR (a new folder for the quantized checkpoint)")
        return out

    def check(self) -> None:
        UserError.collect(self.problems())

"""``qwen-tts-ext quantize`` / ``python finetuning/quantize_int4.py``: the INT4 talker export command."""

from __future__ import annotations

from qwen_tts_ext.command import Command, Option
from qwen_tts_ext.quantize.config import QuantizeConfig

DESCRIPTION = """\
INT4 talker export: weight-only 4-bit (asymmetric, zero points, group size 128 by default) for the
talker's attention q/k/v/o and MLP gate/up/down projections of every layer, with activation-aware
(AWQ) per-channel scales searched on real talker inputs: rows of a prepared dataset laid out exactly
as training and generate() lay them out. Everything else (embeddings, codec head, norms, code
predictor, speaker encoder, speech tokenizer) stays byte-identical.

The output is a complete checkpoint folder: model.safetensors (the unquantized tensors), int4.safetensors
(codes two a byte, scales, zero points, AWQ input scales), quantization.json (provenance: what was
quantized, group size, calibration sha256, library versions), README.md, and quantize_report.json/.md:
per-projection output SQNR of round-to-nearest and AWQ, and teacher-forced codec-0 CE and KL against the
float model on held-out rows. synthesize, evaluate, the studio and score load it like any checkpoint.
"""

EPILOG = """\
examples:
  # AWQ INT4 of a fine-tuned voice, calibrated on its own training data
  qwen-tts-ext quantize --model runs/v1/export --calib prepared/my --output runs/v1-int4
  # the round-to-nearest baseline, and the 8-bit text embedding for the smallest footprint
  python finetuning/quantize_int4.py --model A --calib P --output A-rtn --method rtn
  python finetuning/quantize_int4.py --model A --calib P --output A-int4-e8 --embed-8bit
  # no dataset: the model speaks these sentences as one of its speakers, and calibrates on its own codes
  qwen-tts-ext quantize --model A --sentences prompts.txt --speaker alice --language english --output B
  # settings from YAML, overridden on the command line (group size must divide the talker widths)
  qwen-tts-ext quantize --config configs/quantize.yaml model=A calib=P output=B group_size=64

--overwrite replaces only a previous output of this command; a folder holding anything else is refused.
exit status: 0 success, 2 user error (bad arguments, not a Qwen3-TTS checkpoint, output in the way), 130 interrupted.
"""

COMMAND = Command(
    name="quantize", prog="qwen-tts-ext quantize", description=DESCRIPTION, epilog=EPILOG, config=QuantizeConfig,
    run="qwen_tts_ext.quantize.pipeline:run",
    options=[
        Option("model", ("--model", "-m"), "Qwen3-TTS checkpoint folder to quantize (SFT export, blend, stock)"),
        Option("calib", "--calib", "prepared dataset (a `qwen-tts-ext prepare` output) for calibration", metavar="DIR"),
        Option("output", ("--output", "-o"), "folder for the quantized checkpoint (new or empty)"),
        Option("sentences", "--sentences", "without a dataset: sentences (or one .txt file, a line each) that the "
               "float model speaks as --speaker; its codes are the calibration rows", many=True, metavar="TEXT"),
        Option("speaker", "--speaker", "with --sentences: a speaker of the checkpoint"),
        Option("language", "--language", "with --sentences: their language (default auto)"),
        Option("method", "--method", "awq (activation-aware, default) or rtn (round-to-nearest baseline)"),
        Option("group_size", "--group-size", "input channels per scale and zero point (default 128)", metavar="N"),
        Option("calib_rows", "--calib-rows", "dataset rows that calibrate (default 128)", metavar="N"),
        Option("heldout_rows", "--heldout-rows", "rows kept out to measure CE/KL (default 8; 0: none)", metavar="N"),
        Option("judges", "--judges", "judges on 3 sentences spoken by the float and the int4 model (custom_voice "
               "checkpoints; default speaker,distillmos,dnsmos,asr,timing; [] = none)", metavar="LIST"),
        Option("embed_8bit", "--embed-8bit", "also store the text embedding as int8 rows", switch=True),
        Option("code_predictor_8bit", "--code-predictor-8bit", "also store the code predictor's linears as int8",
               switch=True),
        Option("dtype", "--dtype", "dtype to load and calibrate in: auto (the checkpoint's), float32, bfloat16"),
        Option("device", "--device", "where calibration runs: cpu (default), cuda, cuda:N"),
        Option("seed", "--seed", "seed of the row split and sampling (default 0)"),
        Option("overwrite", "--overwrite", "replace a previous output of this command", switch=True),
    ],
)


def main(argv: list[str] | None = None) -> int:
    return COMMAND.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())

"""INT4 talker export (``qwen-tts-ext quantize``): activation-aware 4-bit weights for the talker's projections.

- :mod:`.int4` the format (torchao's affine INT4 arithmetic, codes packed two a byte) and ``Int4Linear``;
- :mod:`.awq` the activation-aware scale search; :mod:`.calibrate` the talker inputs (training layout);
- :mod:`.checkpoint` the folder (write, recognise, load: :func:`load_tts`, :func:`apply_quantized`);
- :mod:`.report` provenance, report and card; :mod:`.pipeline` the command; :mod:`.cli` its flags.

The names below import torch only when called, so ``qwen-tts-ext quantize --help`` stays fast.
"""


def load_tts(folder, **kwargs):
    """``Qwen3TTSModel.from_pretrained`` for plain and quantized folders (see :mod:`.checkpoint`)."""
    from qwen_tts_ext.quantize.checkpoint import load_tts as _load

    return _load(folder, **kwargs)


def apply_quantized(model, folder):
    """Put the INT4 modules of the quantized ``folder`` into a loaded ``Qwen3TTSForConditionalGeneration``."""
    from qwen_tts_ext.quantize.checkpoint import apply_quantized as _apply

    return _apply(model, folder)


def is_quantized(folder) -> bool:
    from qwen_tts_ext.quantize.checkpoint import is_quantized as _is

    return _is(folder)

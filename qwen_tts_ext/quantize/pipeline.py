"""``qwen-tts-ext quantize`` end to end: check, calibrate, search, measure, write.

1. check the inputs before any model loads (the checkpoint from its ``config.json``, the prepared
   dataset, the output folder, the group size against the talker's widths);
2. load the float model and lay out calibration + held-out rows (``calibrate``);
3. run the float talker on the calibration rows with activation recorders (``awq``), and keep the
   held-out rows' codec-0 log-probabilities as the reference;
4. per projection: round-to-nearest and the AWQ search (both measured: output SQNR on the sampled rows);
5. swap in RTN, then AWQ modules and measure teacher-forced codec-0 CE and KL on the held-out rows;
6. write the folder (``checkpoint``), its provenance, card and report, and swap it into place.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
import torch

from qwen_tts_ext.checkpoint_io import (
    LazyCheckpoint, copy_support_files, read_config, require_tts_checkpoint, write_safetensors_sharded,
)
from qwen_tts_ext.command import emit
from qwen_tts_ext.errors import UserError
from qwen_tts_ext.outputs import check_output_dir, output_dir
from qwen_tts_ext.quantize import awq, checkpoint as qck, report
from qwen_tts_ext.quantize.config import QuantizeConfig
from qwen_tts_ext.quantize.int4 import Int4Linear, quantize_weight

COMMAND = "quantize"
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def check_widths(config: dict, group: int) -> None:
    """Every quantized projection's input width is a multiple of ``group`` (from config.json alone)."""
    t = config.get("talker_config")
    if not isinstance(t, dict) or not {"hidden_size", "intermediate_size", "num_attention_heads"} <= set(t):
        raise UserError("the checkpoint's config.json has no talker_config with the talker's widths; "
                        "it is not a complete Qwen3-TTS checkpoint")
    widths = {"hidden_size": t["hidden_size"], "intermediate_size": t["intermediate_size"],
              "num_attention_heads x head_dim": t["num_attention_heads"] * t.get("head_dim", 128)}
    bad = [f"{k} {v}" for k, v in widths.items() if v % group]
    if bad:
        raise UserError(f"group_size {group} does not divide the talker's {', '.join(bad)}; choose a divisor "
                        f"(e.g. {_divisor(list(widths.values()), group)})")


def check_sentences(config: dict, sentences: list[str], speaker: str) -> None:
    """Sentence calibration needs two sentences and a speaker the checkpoint knows (from config.json)."""
    if len(sentences) < 2:
        raise UserError(f"--sentences gives {len(sentences)} sentence(s); at least 2 are needed (1 held out)")
    known = {str(k).lower() for k in (config.get("talker_config", {}).get("spk_id") or {})}
    if speaker.lower() not in known:
        raise UserError(f"--speaker {speaker!r} is not a speaker of the checkpoint (it has: "
                        f"{', '.join(sorted(known)) or 'none: pass --calib with a prepared dataset'})")


def _divisor(widths: list[int], group: int) -> int:
    g = group
    while g > 2 and any(w % g for w in widths):
        g //= 2
    return g


def search_all(cfg: QuantizeConfig, modules: dict, recorder, progress) -> tuple[dict, dict, list[dict]]:
    """Per projection: round-to-nearest, the AWQ search (for ``method=awq``) and both output errors."""
    from tqdm.auto import tqdm

    rtn, awq_q, layers = {}, {}, []
    for n in tqdm(list(modules), desc="search", unit="proj", disable=not progress):
        w = modules[n].weight.detach().cpu()
        st = recorder.stats[awq.input_key(n)]
        scale_dtype = w.dtype if w.dtype in (torch.bfloat16, torch.float16) else torch.float32
        x = st.sample()
        grid = cfg.grid if cfg.method == "awq" else 1  # grid 1 = ratio 0 only: round-to-nearest
        s, ratio, errs = awq.search_scale(w, st.mean_abs(), x, cfg.group_size, grid, scale_dtype)
        _, energy = awq.output_error(w.float(), w.float(), x)
        rtn[n] = quantize_weight(w, cfg.group_size, None, scale_dtype)
        awq_q[n] = quantize_weight(w, cfg.group_size, s, scale_dtype) if s is not None else rtn[n]
        layers.append(report.layer_row(n, tuple(w.shape), ratio, errs, energy, int(x.shape[0])))
    return rtn, awq_q, layers


@contextlib.contextmanager
def swapped(model, modules: dict, table: dict):
    """Inside: ``model``'s projections are the INT4 modules of ``table``; the float ones are put back after."""
    try:
        for n, qw in table.items():
            qck._set_module(model, n, Int4Linear(qw, modules[n].bias).to(modules[n].weight.device))
        yield
    finally:
        for n, mod in modules.items():
            qck._set_module(model, n, mod)


def run(cfg: QuantizeConfig) -> int:
    quantize_checkpoint(cfg, result=emit)
    return 0


def quantize_checkpoint(cfg: QuantizeConfig, *, result=_log, progress: bool | None = None) -> dict:
    from tqdm.auto import tqdm

    from qwen_tts_ext.devices import resolve_device
    from qwen_tts_ext.prepared import read_prepared
    from qwen_tts_ext.quantize.calibrate import read_sentences

    cfg.check()
    folder = require_tts_checkpoint(cfg.model, what="--model", llm_flag=None)
    check_widths(read_config(folder), cfg.group_size)
    if qck.is_quantized(folder):
        raise UserError(f"--model {folder} is already quantized (it has {qck.INFO_FILE}); pass the float checkpoint")
    sentences = read_sentences(cfg.sentences) if cfg.sentences else []
    if cfg.calib:
        read_prepared(cfg.calib)  # a bad dataset is one line before the model loads
    else:
        check_sentences(read_config(folder), sentences, cfg.speaker)
    out = check_output_dir(cfg.output, command=COMMAND, overwrite=cfg.overwrite,
                           inputs={"--model": folder, "--calib": cfg.calib})
    device, _ = resolve_device(cfg.device)
    progress = (sys.stderr.isatty() or None) if progress is None else progress
    t0 = time.perf_counter()

    from qwen_tts import Qwen3TTSModel

    tts = Qwen3TTSModel.from_pretrained(str(folder), device_map=str(device), dtype=_DTYPES.get(cfg.dtype, "auto"))
    model = tts.model.eval()
    from qwen_tts_ext.quantize.calibrate import ce_kl, codec0_logprobs, load_calibration, run_talker, \
        sentence_calibration

    if cfg.calib:
        data = load_calibration(model, tts.processor.tokenizer, cfg.calib, rows=cfg.calib_rows,
                                heldout=cfg.heldout_rows, batch_size=cfg.batch_size, seed=cfg.seed)
    else:
        bar = tqdm(total=min(len(sentences), cfg.calib_rows + cfg.heldout_rows), desc="speak", unit="sentence",
                   disable=not progress)
        data = sentence_calibration(tts, sentences, cfg.speaker, cfg.language, rows=cfg.calib_rows,
                                    heldout=cfg.heldout_rows, batch_size=cfg.batch_size, seed=cfg.seed,
                                    max_frames=cfg.max_frames, progress=bar.update)
        bar.close()
    names = awq.target_names(model)
    modules = {n: model.get_submodule(n) for n in names}
    _log(f"calibrating on {len(data.calib_ids)} rows ({data.positions} talker positions), "
         f"{len(data.heldout_ids)} held out; {len(names)} projections, group {cfg.group_size}")

    recorder = awq.ActivationRecorder(model, names, max_rows=cfg.max_rows, seed=cfg.seed)
    try:
        for b in tqdm(data.calib, desc="calibrate", unit="batch", disable=not progress):
            run_talker(model, b, data.speaker_vectors, recorder)
    finally:
        recorder.close()
    ref = codec0_logprobs(model, data.heldout, data.speaker_vectors) if data.heldout else None

    rtn, awq_q, layers = search_all(cfg, modules, recorder, progress)
    quality = {}
    if ref is not None:
        for label, table in (("rtn", rtn), ("awq", awq_q)):
            with swapped(model, modules, table):
                lp, tg = codec0_logprobs(model, data.heldout, data.speaker_vectors)
            quality[label] = ce_kl(ref[0], lp, tg)
    chosen = awq_q if cfg.method == "awq" else rtn
    judged = None
    if cfg.judges:
        from qwen_tts_ext.quantize.judged import judge_renderings

        def swap(label: str, model=model, modules=modules) -> None:
            for n, mod in modules.items():
                qck._set_module(model, n, mod if label == "float" else
                                Int4Linear(chosen[n], mod.bias).to(mod.weight.device))

        judged = judge_renderings(tts, cfg.speaker, swap, cfg.judges, language=cfg.language, seed=cfg.seed, log=_log)
    embed = None
    if cfg.embed_8bit:
        embed = qck.quantize_rows_int8(model.get_submodule(qck.TEXT_EMBEDDING).weight.detach().cpu())
    int8 = {}
    if cfg.code_predictor_8bit:
        for n in qck.code_predictor_linears(model):
            int8[n] = qck.quantize_rows_int8(model.get_submodule(n).weight.detach().cpu())
    seconds = time.perf_counter() - t0
    del tts, model, modules, recorder

    from safetensors.torch import save_file

    with LazyCheckpoint(folder) as src:
        sizes = report.sizes(src, chosen, embed, int8)
        info = report.provenance(cfg, folder, data, sorted(chosen), sizes, seconds, embed is not None, sorted(int8))
        rep = report.build(cfg, info, layers, quality, judged)
        skip = {f"{n}.weight" for n in [*chosen, *int8]} | ({f"{qck.TEXT_EMBEDDING}.weight"} if embed is not None
                                                             else set())
        with output_dir(out, command=COMMAND, overwrite=cfg.overwrite) as tmp:
            copy_support_files(folder, tmp, exclude=qck.OWN_FILES)
            meta = dict(src.metadata())
            meta.setdefault("format", "pt")
            write_safetensors_sharded(((k, src.get(k)) for k in src.keys() if k not in skip), tmp, metadata=meta)
            save_file(dict(qck.quantized_tensors(chosen, embed, int8)), str(tmp / qck.QUANT_FILE),
                      metadata={"format": "pt", "quantization": qck.FORMAT, "group_size": str(cfg.group_size)})
            (tmp / qck.INFO_FILE).write_text(json.dumps(info, indent=2, default=str) + "\n", encoding="utf-8")
            (tmp / "README.md").write_text(report.model_card(cfg, info, rep), encoding="utf-8")
            report.write(rep, tmp)
    result(report.summary(rep))
    result(f"wrote {out}")
    return {"output": out, "report": rep, "info": info}

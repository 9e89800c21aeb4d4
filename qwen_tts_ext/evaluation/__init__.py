"""Evaluation: the Darwin alpha sweep and its metrics.

    from qwen_tts_ext.evaluation import recommend_alpha, Tolerances, run_sweep, write_report
"""

from qwen_tts_ext.evaluation.metrics import cer, cosine, identity_drift
from qwen_tts_ext.evaluation.recommend import Recommendation, Tolerances, recommend_alpha

__all__ = ["Recommendation", "Tolerances", "cer", "cosine", "identity_drift", "recommend_alpha", "run_sweep", "write_report"]


def __getattr__(name: str):
    if name == "run_sweep":
        from qwen_tts_ext.evaluation.sweep import run_sweep

        return run_sweep
    if name == "write_report":
        from qwen_tts_ext.evaluation.report import write_report

        return write_report
    raise AttributeError(name)

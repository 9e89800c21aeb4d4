"""Describe a voice in words, then lock it: VoiceDesign -> judged corpus -> speaker slot.

The package behind ``qwen-tts-ext design-voice``.

``config.py`` (settings), ``render.py`` (takes from the VoiceDesign model), ``select.py`` (identity
centroid and quality gates), ``lock.py`` (data prep + SFT, the consistency measurement, the card),
``report.py`` (the consistency numbers), ``pipeline.py`` (checks and the order of it all), ``cli.py``.
"""

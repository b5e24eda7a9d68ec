"""The old path of `asr.transcriber`, kept for code that imports it from here."""

from .asr.transcriber import *  # noqa: F403

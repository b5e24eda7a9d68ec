"""The old path of `asr.config`, kept for code that imports it from here."""

from .asr.config import *  # noqa: F403

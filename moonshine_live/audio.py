"""The old path of `capture.audio`, kept for code that imports it from here."""

from .capture.audio import *  # noqa: F403

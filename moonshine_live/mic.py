"""The old path of `capture.mic`, kept for code that imports it from here."""

from .capture.mic import *  # noqa: F403

"""The old path of `capture.sources`, kept for code that imports it from here."""

from .capture.sources import *  # noqa: F403

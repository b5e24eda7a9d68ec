"""The old path of `commands.actions`, kept for code that imports it from here."""

from .commands.actions import *  # noqa: F403

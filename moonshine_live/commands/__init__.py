"""Stage 5, commands: transcripts matched against the grammar, dispatched to callbacks and actions.

`from moonshine_live.commands import CommandConfig` is the public path."""

from __future__ import annotations

from .stage import (
    COMMITTED_EARLY,
    COOLDOWN,
    SHIPPED_GRAMMARS,
    CommandConfig,
    CommandStage,
    resolve_grammar_path,
    shipped_grammar_dirs,
)

__all__ = [
    "COMMITTED_EARLY",
    "COOLDOWN",
    "SHIPPED_GRAMMARS",
    "CommandConfig",
    "CommandStage",
    "resolve_grammar_path",
    "shipped_grammar_dirs",
]

"""Stage 6, the engine: wires capture, segmenting, recognition and commands; lifecycle and events.

`from moonshine_live.engine import Engine, EngineConfig` is the public entry point."""

from __future__ import annotations

from .engine import Engine, EngineConfig

__all__ = ["Engine", "EngineConfig"]

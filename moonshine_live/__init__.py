"""moonshine-live: live microphone to voice commands on a warm Moonshine model."""

from __future__ import annotations

__version__ = "0.1.0"

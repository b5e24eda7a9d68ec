"""The on-disk cache: where converted checkpoints and built artifacts live, and the one way an
artifact is loaded or, when missing or damaged, built.

Why one place: the checkpoint converter, the C++ kernels and the compiled packages all keep files
here; each used to find the directory and handle a damaged file its own way.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from .progress import first_start_step

_LOGGER = logging.getLogger(__name__)

ARTIFACT_SUBDIR = "compiled"
"""Built artifacts (kernel libraries, packages, inductor's own cache) under `cache_root()`."""

Artifact = TypeVar("Artifact")


def cache_root() -> Path:
    """$MOONSHINE_LIVE_CACHE, else $XDG_CACHE_HOME/moonshine-live, else ~/.cache/moonshine-live."""
    if os.environ.get("MOONSHINE_LIVE_CACHE"):
        return Path(os.environ["MOONSHINE_LIVE_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "moonshine-live"


def artifact_dir() -> Path:
    """Where machine-specific built files live (the names say what they were built for)."""
    return cache_root() / ARTIFACT_SUBDIR


def load_or_build(
    artifact: Path,
    what: str,
    load: Callable[[], Artifact],
    build: Callable[[], None],
    expected_s: float,
) -> tuple[Artifact, bool]:
    """(what `load` returns, whether it came from disk): `artifact` loaded if it loads, else
    built by `build` (which writes it atomically) and loaded. A cached file that does not load
    (damaged, truncated, foreign) is built again. A build or load that fails raises: the caller
    decides what its slower path is."""
    if artifact.is_file():
        try:
            return load(), True
        except Exception as exc:  # damaged or foreign: build it again
            _LOGGER.warning("rebuilding the %s: %s does not load (%s)", what, artifact, exc)
    _LOGGER.info("compiling the %s into %s", what, artifact)
    with first_start_step(f"compiling the {what} for this CPU", expected_s):
        build()
    return load(), False

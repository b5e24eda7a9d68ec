"""Find a checkpoint and load it into our `Moonshine`: explicit key map, strict checks.

A checkpoint is a Hugging Face style directory: `config.json`, `model.safetensors` (plain float,
or our int8 form with per-tensor `weight_scale` / `weight_zero_point`), `tokenizer.json`.
It can be named by path, by repo id in the local Hugging Face cache, or left to the embedded
default, which `embedded.py` builds once from the moonshine-cpp wheel.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import ConfigError, WeightsError
from .keymap import hf_to_ours
from .model import Moonshine
from .model_config import MoonshineConfig

_LOGGER = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
KNOWN_REPOS = ("UsefulSensors/moonshine-tiny", "UsefulSensors/moonshine-base")


@dataclass(frozen=True)
class Checkpoint:
    """The three files of a checkpoint directory, checked to exist."""

    directory: Path
    config: MoonshineConfig

    @property
    def weights_path(self) -> Path:
        return self.directory / WEIGHTS_FILE

    @property
    def tokenizer_path(self) -> Path:
        return self.directory / TOKENIZER_FILE

    @classmethod
    def open(cls, directory: str | Path) -> Checkpoint:
        directory = Path(directory)
        if not directory.is_dir():
            raise WeightsError(f"{directory}: checkpoint directory not found")
        for name in (CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE):
            if not (directory / name).is_file():
                raise WeightsError(f"{directory}: checkpoint is missing {name}")
        try:
            config = MoonshineConfig.from_json_file(directory / CONFIG_FILE)
        except ConfigError as exc:
            raise WeightsError(str(exc)) from None
        return cls(directory, config)


def resolve_checkpoint(spec: str | Path | None = None) -> Checkpoint:
    """A checkpoint from a directory, a cached Hugging Face repo id, or None (embedded default)."""
    if spec is None or str(spec) in ("", "default", "base-en"):
        from .embedded import ensure_default_checkpoint

        return Checkpoint.open(ensure_default_checkpoint())
    path = Path(spec).expanduser()
    if path.exists():
        return Checkpoint.open(path)
    if "/" in str(spec) and not str(spec).startswith((".", "/")):
        return Checkpoint.open(hf_cache_snapshot(str(spec)))
    raise WeightsError(
        f"{spec}: no such checkpoint directory; give a directory, a repo id such as "
        f"{KNOWN_REPOS[1]!r}, or nothing for the embedded default"
    )


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache directory, honouring HF_HUB_CACHE and HF_HOME."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache")), "huggingface"
    )
    return Path(home) / "hub"


def hf_cache_snapshot(repo_id: str, revision: str = "main") -> Path:
    """The snapshot directory of `repo_id` in the local hub cache; downloads only if allowed.

    Lookups never touch the network. If the repo is absent and `huggingface_hub` is installed
    and HF_HUB_OFFLINE is unset, it is downloaded (real for users, never used in tests).
    """
    repo_dir = hf_hub_cache() / ("models--" + repo_id.replace("/", "--"))
    ref = repo_dir / "refs" / revision
    commit = ref.read_text().strip() if ref.is_file() else revision
    snapshot = repo_dir / "snapshots" / commit
    if snapshot.is_dir():
        return snapshot
    snapshots = sorted((repo_dir / "snapshots").glob("*")) if repo_dir.is_dir() else []
    if snapshots:
        return snapshots[-1]
    return _download_snapshot(repo_id, revision, repo_dir)


def _download_snapshot(repo_id: str, revision: str, repo_dir: Path) -> Path:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
        raise WeightsError(
            f"{repo_id}: not in the Hugging Face cache ({repo_dir}) and HF_HUB_OFFLINE is set"
        )
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise WeightsError(
            f"{repo_id}: not in the Hugging Face cache ({repo_dir}); install huggingface_hub "
            "to download it, or pass a checkpoint directory"
        ) from None
    _LOGGER.info("downloading %s from the Hugging Face hub", repo_id)
    try:
        return Path(snapshot_download(repo_id, revision=revision))
    except Exception as exc:
        raise WeightsError(f"{repo_id}: download failed: {exc}") from exc


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Float tensors with Hugging Face names from a safetensors file (int8 form dequantized)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .quantized import dequantize_state_dict

    try:
        flat = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise WeightsError(f"{path}: cannot read safetensors file: {exc}") from None
    try:
        return dequantize_state_dict(flat, source=path)
    except (KeyError, ValueError, RuntimeError) as exc:
        raise WeightsError(f"{path}: bad quantized tensors: {exc}") from None


def to_our_names(
    hf_state: dict[str, torch.Tensor], config: MoonshineConfig, source: Path
) -> dict[str, torch.Tensor]:
    """Rename through the key map; unknown keys are an error naming the file."""
    ours: dict[str, torch.Tensor] = {}
    unknown = []
    for name, tensor in hf_state.items():
        if name == "proj_out.weight" and config.tie_word_embeddings:
            continue  # tied to decoder.embed_tokens
        mapped = hf_to_ours(name)
        if mapped is None:
            unknown.append(name)
        else:
            ours[mapped] = tensor
    if unknown:
        raise WeightsError(
            f"{source}: unexpected tensors {sorted(unknown)[:8]} ({len(unknown)} in all)"
        )
    return ours


def load_model(
    checkpoint: Checkpoint,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Moonshine:
    """Build on the meta device and assign the checkpoint's tensors (no double allocation)."""
    state = to_our_names(
        read_state_dict(checkpoint.weights_path), checkpoint.config, checkpoint.weights_path
    )
    with torch.device("meta"):
        model = Moonshine(checkpoint.config)
    _check_fit(state, model.state_dict(), checkpoint.weights_path)
    state = {k: v.to(device=device, dtype=dtype) for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    _materialize_buffers(model, checkpoint.config, device)
    return model.eval().requires_grad_(False)


def _check_fit(
    state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], source: Path
) -> None:
    """Every tensor present, none extra, every shape as the config says; all problems at once."""
    problems = []
    missing = sorted(expected.keys() - state.keys())
    extra = sorted(state.keys() - expected.keys())
    if missing:
        problems.append(f"missing tensors {missing[:8]} ({len(missing)} in all)")
    if extra:
        problems.append(f"tensors the config has no place for {extra[:8]} ({len(extra)} in all)")
    wrong = [
        f"{name} has shape {tuple(state[name].shape)}, the config needs {tuple(t.shape)}"
        for name, t in expected.items()
        if name in state and tuple(state[name].shape) != tuple(t.shape)
    ]
    problems.extend(wrong[:4])
    if problems:
        raise WeightsError(
            f"{source}: checkpoint does not fit its config.json: " + "; ".join(problems)
        )


def _materialize_buffers(
    model: Moonshine, config: MoonshineConfig, device: torch.device | str
) -> None:
    """Non-persistent buffers (RoPE tables) were built on meta; rebuild them for real."""
    from .model import RotaryEmbedding

    model.encoder.rotary = RotaryEmbedding(config, config.encoder_head_dim).to(device)
    model.decoder.rotary = RotaryEmbedding(config, config.decoder_head_dim).to(device)
    model.decoder.causal_mask = torch.ones(0, 0, dtype=torch.bool, device=device)

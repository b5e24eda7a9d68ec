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
from torch import nn

from .errors import ConfigError, WeightsError
from .keymap import hf_to_ours
from .model import Moonshine
from .model_config import MoonshineConfig

_LOGGER = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
KNOWN_REPOS = ("UsefulSensors/moonshine-tiny", "UsefulSensors/moonshine-base")
DEFAULT_INT8_PARTS = ("fc1", "cross_q_o", "head")
"""What `DecodeConfig(weights="int8")` quantizes. Measured 2026-11-24 on the 2-core EPYC (1 thread,
shared machine, medians of 84 decode steps; tokens vs fp32 on 24 TTS command clips + beckett):

    int8 parts                 ms/step   clips whose tokens differ from fp32
    none (fp32)                  30.5    -
    decoder + head               19.2    2 ("minimize the window", "volume up")
    fc1 + cross q/o + head       20.6    0
    fc1 + head                   21.1    2
    decoder + head + cross k/v   19.8    1   (cross k/v run once per utterance: no per-step gain)
    encoder only (not decoder)   27.1    6   (encoder 10 s: 708 vs 746 ms, 1 s: 73 vs 89 ms)

Self-attention and fc2 add ~1.4 ms of gain but flip clips whose fp32 transcript is already wrong
(their top two logits are nearly tied), so they stay float; the encoder stays float (6 flips for
a 5-15% encoder gain). Single-layer microbenchmarks (1 thread, M=1 row): 416x416 fp32 0.031 ms vs
int8 0.063 ms (cache resident, int8 loses), 3328x416 0.49 vs 0.14 ms, 32768x416 head 5.4 vs 1.3 ms.
"""


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


def quantize_linears(
    model: Moonshine, checkpoint: Checkpoint, parts: tuple[str, ...] = DEFAULT_INT8_PARTS
) -> Moonshine:
    """Swap `parts` (see `quantized.INT8_PARTS`) of a float32 CPU model for int8 kernels, in place.

    Weights come packed from the checkpoint's own int8 values and scales (exact); a float
    checkpoint falls back to symmetric per-tensor quantization. The tied embedding stays float for
    the token lookup; the head gets its own int8 copy.
    """
    from safetensors import safe_open

    from .quantized import INT8_PARTS, SCALE_SUFFIX, ZERO_POINT_SUFFIX, Int8Linear, affine_params

    unknown = set(parts) - set(INT8_PARTS)
    if unknown:
        raise ConfigError(f"unknown int8 parts {sorted(unknown)}; choose from {INT8_PARTS}")
    known: dict[str, tuple[float, float]] = {}
    with safe_open(str(checkpoint.weights_path), framework="pt") as f:
        names = set(f.keys())
        for name in names:
            scale_name, zero_name = name + SCALE_SUFFIX, name + ZERO_POINT_SUFFIX
            if scale_name in names and zero_name in names:
                ours = hf_to_ours(name)
                if ours is not None:
                    scale = float(f.get_tensor(scale_name).reshape(()))
                    zero_point = float(f.get_tensor(zero_name).reshape(()))
                    known[ours] = (scale, zero_point)

    def int8(linear: nn.Linear, name: str) -> Int8Linear:
        scale, zp = affine_params(linear.weight, known.get(name + ".weight"))
        return Int8Linear(linear.weight, linear.bias, scale, zp)

    per_layer = {
        "self_attn": ("attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.o_proj"),
        "cross_q_o": ("cross_attn.q_proj", "cross_attn.o_proj"),
        "fc1": ("mlp.fc1",),
        "fc2": ("mlp.fc2",),
        "cross_kv": ("cross_attn.k_proj", "cross_attn.v_proj"),
    }
    wanted = set(parts) | (set(per_layer) - {"cross_kv"} if "decoder" in parts else set())
    targets = [
        f"decoder.layers.{i}.{linear}"
        for part, linears in per_layer.items()
        if part in wanted
        for i in range(len(model.decoder.layers))
        for linear in linears
    ]
    if "encoder" in parts:
        targets += [
            name
            for name, module in model.encoder.named_modules(prefix="encoder")
            if isinstance(module, nn.Linear)
        ]
    for name in targets:
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent), attr, int8(model.get_submodule(name), name))
    if "head" in parts:
        table = model.decoder.embed_tokens if model.proj_out is None else model.proj_out
        scale, zp = affine_params(table.weight, known.get(_param_name(model, table) + ".weight"))
        model.head = Int8Linear(table.weight, None, scale, zp)
    return model


def _param_name(model: nn.Module, module: nn.Module) -> str:
    return next(name for name, m in model.named_modules() if m is module)

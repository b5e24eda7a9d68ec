"""Find a checkpoint and load it into our `Moonshine`: explicit key map, strict checks.

A checkpoint is a Hugging Face style directory: `config.json`, `model.safetensors` (plain float,
or our int8 form with per-tensor `weight_scale` / `weight_zero_point`), `tokenizer.json`.
It can be named by path, by repo id in the local Hugging Face cache, or left to the embedded
default, which `embedded.py` builds once from the moonshine-cpp wheel.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError, WeightsError
from ..model.config import MoonshineConfig
from ..model.network import Moonshine
from .keymap import hf_to_ours
from .quantized import SCALE_SUFFIX, ZERO_POINT_SUFFIX, QuantizedTensor

_LOGGER = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
KNOWN_REPOS = ("UsefulSensors/moonshine-tiny", "UsefulSensors/moonshine-base")
INT8_PARTS = ("self_attn", "cross_q_o", "fc1", "fc2", "head")
"""What `DecodeConfig(weights="int8")` keeps as int8: every linear a decoder step runs, and the
tied output head (which is also the token embedding). The cross-attention k/v projections run
once per utterance on every frame (a real matrix product) and the encoder's linears are
compute-bound: those stay float, where MKL's GEMM beats any dequantizing kernel, unless the CPU has
AMX tiles, where `accel.amx.AmxLinear` runs them from the same int8 tensors (`read_int8`).

Measured 2026-12-01 (2-core Xeon, 2 threads, one row, each weight read once per call as in a
decode step, inside one compiled graph, microseconds per linear):

    shape (out x in)    fp32 eager   fp32 compiled   int8 fused (compiled)
    416 x 416               31.4          44.2             20.6
    3328 x 416 (fc1)       157.8         191.4             92.6
    416 x 1664 (fc2)        78.8          95.2             50.3
    32768 x 416 (head)    2590.9        2485.5           1071.0

The int8 column was measured with the input already in memory. Inside the decode step, inductor
first recomputed the preceding layer norm once per output row; `quantized._stored` stops that
(head with its layer norm: 1.39 -> 0.96 ms, 2026-12-01).
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


def read_flat(path: Path) -> dict[str, torch.Tensor]:
    """The safetensors file as stored: float tensors, or our int8 form with its siblings.

    Read into memory, not mapped: tensors kept from a mapped file keep the whole mapping, so
    every page read while dequantizing stayed resident (29 MB more RSS when ready, 2026-12-01).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        return load(Path(path).read_bytes())
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise WeightsError(f"{path}: cannot read safetensors file: {exc}") from None


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Float tensors with Hugging Face names from a safetensors file (int8 form dequantized)."""
    return _dequantized(read_flat(path), path)


def _dequantized(flat: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    from .quantized import dequantize_state_dict

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
    int8_parts: tuple[str, ...] = (),
) -> Moonshine:
    """Build on the meta device and assign the checkpoint's tensors (no double allocation).

    `int8_parts` (see `INT8_PARTS`; CPU float32 only) keep those linears as `Int8WeightLinear`s
    holding the checkpoint's own int8 tensors, never expanded to float: bit-identical weights
    in a quarter of the memory. Parts the checkpoint stores as float stay float. Speed paths
    (AMX, the int8 op, compiled packages) are applied to the loaded model by `accel`.
    """
    path = checkpoint.weights_path
    flat = read_flat(path)
    with torch.device("meta"):
        model = Moonshine(checkpoint.config)
    int8_q = _use_int8_modules(model, flat, int8_parts, path)
    hf_names = {hf for hf in flat if hf_to_ours(hf) in int8_q}
    siblings = {hf + suffix for hf in hf_names for suffix in (SCALE_SUFFIX, ZERO_POINT_SUFFIX)}
    float_flat = {k: v for k, v in flat.items() if k not in hf_names | siblings}
    del flat
    state = to_our_names(_dequantized(float_flat, path), checkpoint.config, path)
    del float_flat
    expected = model.state_dict()
    for key in expected:
        if key.endswith(".q"):  # an int8 module: its tensor, under each name the model uses
            state[key] = int8_q[_int8_source(key)]
    _check_fit(state, expected, path)
    state = {
        k: v.to(device=device, dtype=dtype) if v.is_floating_point() else v.to(device)
        for k, v in state.items()
    }
    model.load_state_dict(state, strict=True, assign=True)
    _materialize_buffers(model, checkpoint.config, device)
    model.fuse_cross_kv()
    return model.eval().requires_grad_(False)


def _stored_int8(flat: dict[str, torch.Tensor], path: Path) -> dict[str, QuantizedTensor]:
    """{our name: int8 tensor with its scale and zero point} of the checkpoint."""
    from .quantized import read_quantized

    try:
        return {hf_to_ours(name): t for name, t in read_quantized(flat).items()}
    except (KeyError, ValueError) as exc:
        raise WeightsError(f"{path}: bad quantized tensors: {exc}") from None


def read_int8(checkpoint: Checkpoint, wanted: Callable[[str], bool]) -> dict[str, QuantizedTensor]:
    """{our name: int8 tensor with its scale and zero point} the checkpoint stores, for the
    names `wanted` keeps (for a speed path that runs the int8 values themselves)."""
    path = checkpoint.weights_path
    return {name: q for name, q in _stored_int8(read_flat(path), path).items() if wanted(name)}


def _use_int8_modules(
    model: Moonshine, flat: dict[str, torch.Tensor], parts: tuple[str, ...], path: Path
) -> dict[str, torch.Tensor]:
    """Swap the (meta) linears named by `parts` that the checkpoint stores as int8 for
    `Int8WeightLinear`s; returns {our weight name: int8 tensor} for the swapped ones."""
    from .quantized import Int8Embedding, Int8WeightLinear

    unknown = set(parts) - set(INT8_PARTS)
    if unknown:
        raise ConfigError(f"unknown int8 parts {sorted(unknown)}; choose from {INT8_PARTS}")
    if not parts:
        return {}
    stored = _stored_int8(flat, path)
    taken: dict[str, torch.Tensor] = {}

    def int8(module: nn.Module, name: str) -> Int8WeightLinear | None:
        quantized = stored.get(name + ".weight")
        if quantized is None:
            return None
        taken[name + ".weight"] = quantized.q
        meta_q = torch.empty(quantized.shape, dtype=torch.int8, device="meta")
        bias = getattr(module, "bias", None)
        return Int8WeightLinear(meta_q, quantized.scale, quantized.zero_point, bias)

    for part in parts:
        for i, layer in enumerate(model.decoder.layers):
            for linear in _INT8_LINEARS.get(part, ()):
                parent, _, attr = linear.rpartition(".")
                swapped = int8(layer.get_submodule(linear), f"decoder.layers.{i}.{linear}")
                if swapped is not None:
                    setattr(layer.get_submodule(parent), attr, swapped)
    if "head" in parts and model.proj_out is None:
        table = int8(model.decoder.embed_tokens, "decoder.embed_tokens")
        if table is not None:
            model.head = table
            model.decoder.embed_tokens = Int8Embedding(table)
    return taken


def _int8_source(key: str) -> str:
    """The checkpoint weight (our name) an int8 module's `.q` key comes from."""
    module_path = key.removesuffix(".q")
    if module_path in ("head", "decoder.embed_tokens.table"):
        return "decoder.embed_tokens.weight"
    return module_path + ".weight"


_INT8_LINEARS = {
    "self_attn": ("attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.o_proj"),
    "cross_q_o": ("cross_attn.q_proj", "cross_attn.o_proj"),
    "fc1": ("mlp.fc1",),
    "fc2": ("mlp.fc2",),
}


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
    from ..model.rope import RotaryEmbedding

    model.encoder.rotary = RotaryEmbedding(config, config.encoder_head_dim).to(device)
    model.decoder.rotary = RotaryEmbedding(config, config.decoder_head_dim).to(device)
    model.decoder.causal_mask = torch.ones(0, 0, dtype=torch.bool, device=device)

"""`MoonshineConfig`: the model's shape, read from and written to a Hugging Face `config.json`.

Kept apart from the runtime knobs in `config.py` because it describes a checkpoint, not a run: it
comes with the weights and must round-trip through transformers' own config format (both the flat
`rope_theta` / `partial_rotary_factor` / `rope_scaling` keys of transformers 4 and the
`rope_parameters` dict of transformers 5).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError

_LOGGER = logging.getLogger(__name__)

ACTIVATIONS = ("gelu", "silu", "relu", "gelu_new", "gelu_pytorch_tanh", "swish")

# RoPE scaling types and the keys each needs besides `rope_type` (transformers' rope utils).
ROPE_REQUIRED_KEYS: dict[str, frozenset[str]] = {
    "default": frozenset(),
    "linear": frozenset({"factor"}),
    "dynamic": frozenset({"factor"}),
    "yarn": frozenset({"factor"}),
    "longrope": frozenset({"short_factor", "long_factor"}),
    "llama3": frozenset({"factor", "low_freq_factor", "high_freq_factor"}),
}
ROPE_OPTIONAL_KEYS = frozenset(
    {
        "original_max_position_embeddings",
        "attention_factor",
        "beta_fast",
        "beta_slow",
        "mscale",
        "mscale_all_dim",
        "truncate",
        "factor",
        "type",
        "rope_theta",
        "partial_rotary_factor",
        "rope_type",
    }
)
# Types that scale relative to a pre-training length; it defaults to max_position_embeddings.
ROPE_TYPES_WITH_ORIGINAL_LENGTH = frozenset({"yarn", "longrope", "llama3"})


@dataclass(frozen=True)
class MoonshineConfig:
    """Shape and constants of a Moonshine checkpoint (the fields of transformers' config)."""

    vocab_size: int = 32768
    hidden_size: int = 288
    intermediate_size: int = 1152
    encoder_num_hidden_layers: int = 6
    decoder_num_hidden_layers: int = 6
    encoder_num_attention_heads: int = 8
    decoder_num_attention_heads: int = 8
    encoder_num_key_value_heads: int | None = None
    """Key/value heads of encoder attention; fewer than query heads is GQA, 1 is MQA."""
    decoder_num_key_value_heads: int | None = None
    pad_head_dim_to_multiple_of: int | None = None
    """Pad each head to a multiple of this for faster attention kernels; numerically a no-op."""
    encoder_hidden_act: str = "gelu"
    decoder_hidden_act: str = "silu"
    max_position_embeddings: int = 512
    """Longest decoder token sequence the model was trained for (tokens)."""
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None
    """Optional RoPE scaling: {"rope_type": default|linear|dynamic|yarn|longrope|llama3, ...}."""
    partial_rotary_factor: float = 0.9
    """Fraction of each head's dimensions that get rotary embeddings (base: 0.62 -> 32 of 52)."""
    attention_bias: bool = False
    attention_dropout: float = 0.0
    decoder_start_token_id: int = 1
    bos_token_id: int = 1
    eos_token_id: int = 2
    use_cache: bool = True
    tie_word_embeddings: bool = True
    initializer_range: float = 0.02
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    """Keys of config.json we do not use, kept so that writing it back loses nothing."""

    def __post_init__(self) -> None:
        if self.encoder_num_key_value_heads is None:
            object.__setattr__(
                self, "encoder_num_key_value_heads", self.encoder_num_attention_heads
            )
        if self.decoder_num_key_value_heads is None:
            object.__setattr__(
                self, "decoder_num_key_value_heads", self.decoder_num_attention_heads
            )
        if self.rope_scaling is not None:
            object.__setattr__(self, "rope_scaling", _normalize_rope_scaling(self.rope_scaling))
        self._validate()

    def _validate(self) -> None:
        for name in (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "encoder_num_hidden_layers",
            "decoder_num_hidden_layers",
            "encoder_num_attention_heads",
            "decoder_num_attention_heads",
            "max_position_embeddings",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(
                    f"MoonshineConfig.{name} must be a positive integer, got {value!r}"
                )
        for side in ("encoder", "decoder"):
            heads = getattr(self, f"{side}_num_attention_heads")
            kv_heads = getattr(self, f"{side}_num_key_value_heads")
            if self.hidden_size % heads:
                raise ConfigError(
                    f"hidden_size {self.hidden_size} is not divisible by "
                    f"{side}_num_attention_heads {heads}"
                )
            if not isinstance(kv_heads, int) or kv_heads < 1 or heads % kv_heads:
                raise ConfigError(
                    f"{side}_num_key_value_heads must divide {side}_num_attention_heads "
                    f"({heads}), got {kv_heads!r}"
                )
            act = getattr(self, f"{side}_hidden_act")
            if act not in ACTIVATIONS:
                raise ConfigError(f"{side}_hidden_act {act!r} is not one of {ACTIVATIONS}")
        if not 0.0 < self.partial_rotary_factor <= 1.0:
            raise ConfigError(
                f"partial_rotary_factor must be in (0, 1], got {self.partial_rotary_factor}"
            )
        if self.rope_theta <= 0:
            raise ConfigError(f"rope_theta must be positive, got {self.rope_theta}")
        if self.pad_head_dim_to_multiple_of is not None and self.pad_head_dim_to_multiple_of < 1:
            raise ConfigError(
                "pad_head_dim_to_multiple_of must be a positive integer or null, "
                f"got {self.pad_head_dim_to_multiple_of}"
            )
        if self.rope_scaling and self.rope_scaling["rope_type"] == "longrope":
            half = self.rotary_dim(self.decoder_head_dim) // 2
            for key in ("short_factor", "long_factor"):
                if len(self.rope_scaling[key]) != half:
                    raise ConfigError(
                        f"rope_scaling.{key} must have {half} entries (rotary dim / 2), "
                        f"got {len(self.rope_scaling[key])}"
                    )

    # -- derived sizes -------------------------------------------------------------------------

    @property
    def encoder_head_dim(self) -> int:
        return self.hidden_size // self.encoder_num_attention_heads

    @property
    def decoder_head_dim(self) -> int:
        return self.hidden_size // self.decoder_num_attention_heads

    def rotary_dim(self, head_dim: int) -> int:
        """Dimensions per head that rotate: int(head_dim * factor), as transformers computes it."""
        return int(head_dim * self.partial_rotary_factor)

    @property
    def rope_type(self) -> str:
        return self.rope_scaling["rope_type"] if self.rope_scaling else "default"

    # -- presets and (de)serialisation --------------------------------------------------------

    @classmethod
    def from_name(cls, name: str) -> MoonshineConfig:
        """A published preset ("tiny" or "base")."""
        try:
            return cls(**PRESETS[name])
        except KeyError:
            raise ConfigError(
                f"unknown Moonshine preset {name!r}; available: {sorted(PRESETS)}"
            ) from None

    @classmethod
    def from_hf_dict(cls, data: dict[str, Any], source: str = "config") -> MoonshineConfig:
        """Read a transformers config dict (flat 4.x keys or 5.x `rope_parameters`)."""
        data = dict(data)
        model_type = data.get("model_type", "moonshine")
        if model_type != "moonshine":
            raise ConfigError(f"{source}: model_type is {model_type!r}, expected 'moonshine'")
        rope_parameters = data.pop("rope_parameters", None)
        if rope_parameters:
            rope_parameters = dict(rope_parameters)
            data.setdefault("rope_theta", rope_parameters.pop("rope_theta", 10000.0))
            if "partial_rotary_factor" in rope_parameters:
                data.setdefault(
                    "partial_rotary_factor", rope_parameters.pop("partial_rotary_factor")
                )
            rope_type = rope_parameters.get("rope_type", rope_parameters.get("type", "default"))
            if rope_type != "default" and not data.get("rope_scaling"):
                data["rope_scaling"] = rope_parameters
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in data.items() if k in names}
        extra = {k: v for k, v in data.items() if k not in names}
        if isinstance(known.get("eos_token_id"), list):
            known["eos_token_id"] = known["eos_token_id"][0]
        try:
            return cls(**known, extra=extra)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
        except TypeError as exc:
            raise ConfigError(f"{source}: invalid config value: {exc}") from None

    @classmethod
    def from_json_file(cls, path: str | Path) -> MoonshineConfig:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a JSON object")
        return cls.from_hf_dict(data, source=str(path))

    def to_hf_dict(self) -> dict[str, Any]:
        """A config.json dict that transformers 4.x and 5.x both load."""
        data: dict[str, Any] = dict(self.extra)
        for f in dataclasses.fields(self):
            if f.name != "extra":
                data[f.name] = getattr(self, f.name)
        rope_parameters: dict[str, Any] = {
            "rope_type": self.rope_type,
            "rope_theta": self.rope_theta,
            "partial_rotary_factor": self.partial_rotary_factor,
        }
        if self.rope_scaling:
            rope_parameters.update({k: v for k, v in self.rope_scaling.items() if k != "rope_type"})
        data["rope_parameters"] = rope_parameters
        data.update(model_type="moonshine", architectures=["MoonshineForConditionalGeneration"])
        data.setdefault("is_encoder_decoder", True)
        return data

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_hf_dict(), indent=2) + "\n", encoding="utf-8")


def _normalize_rope_scaling(scaling: dict[str, Any]) -> dict[str, Any]:
    """Check a rope_scaling dict and fill `rope_type` from the legacy `type` key."""
    if not isinstance(scaling, dict):
        raise ConfigError(f"rope_scaling must be a JSON object or null, got {scaling!r}")
    scaling = dict(scaling)
    rope_type = scaling.pop("type", None) or scaling.get("rope_type", "default")
    scaling["rope_type"] = rope_type
    scaling.pop("rope_theta", None)
    scaling.pop("partial_rotary_factor", None)
    if rope_type not in ROPE_REQUIRED_KEYS:
        raise ConfigError(
            f"rope_scaling.rope_type {rope_type!r} is not one of {sorted(ROPE_REQUIRED_KEYS)}"
        )
    missing = ROPE_REQUIRED_KEYS[rope_type] - scaling.keys()
    if missing:
        raise ConfigError(f"rope_scaling of type {rope_type!r} is missing {sorted(missing)}")
    unknown = scaling.keys() - ROPE_REQUIRED_KEYS[rope_type] - ROPE_OPTIONAL_KEYS
    if unknown:
        raise ConfigError(f"rope_scaling of type {rope_type!r} has unknown keys {sorted(unknown)}")
    factor = scaling.get("factor")
    if factor is not None and (not isinstance(factor, (int, float)) or factor <= 0):
        raise ConfigError(f"rope_scaling.factor must be a positive number, got {factor!r}")
    return scaling


# Published shapes (UsefulSensors/moonshine-{tiny,base} config.json). The base values are also
# what the moonshine-cpp .ort graphs imply; max_position_embeddings and head padding cannot be
# read from the graphs and come from the published config.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        hidden_size=288,
        intermediate_size=1152,
        encoder_num_hidden_layers=6,
        decoder_num_hidden_layers=6,
        encoder_num_attention_heads=8,
        decoder_num_attention_heads=8,
        max_position_embeddings=194,
        partial_rotary_factor=0.9,
        pad_head_dim_to_multiple_of=8,
    ),
    "base": dict(
        hidden_size=416,
        intermediate_size=1664,
        encoder_num_hidden_layers=8,
        decoder_num_hidden_layers=8,
        encoder_num_attention_heads=8,
        decoder_num_attention_heads=8,
        max_position_embeddings=194,
        partial_rotary_factor=0.62,
        pad_head_dim_to_multiple_of=8,
    ),
}

"""Runtime knobs as frozen dataclasses, validated once; change one with `dataclasses.replace`.

The model's own shape is not here: it comes with the checkpoint (`model.config.MoonshineConfig`).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError

DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "float32", "float16", "bfloat16")
WEIGHTS = ("auto", "float", "int8")


@dataclass(frozen=True)
class DecodeConfig:
    """How the transcriber loads the model and decodes an utterance."""

    model: str | None = None
    """Checkpoint: a directory, a Hugging Face repo id found in the local cache
    (e.g. "UsefulSensors/moonshine-base"), or None for the embedded default (base English)."""
    device: str = "auto"
    """"auto" picks CUDA when available, else CPU."""
    dtype: str = "auto"
    """"auto" is float16 on CUDA and float32 on CPU; bfloat16 only on request."""
    max_tokens_per_s: float = 6.5
    """Token budget per second of audio; stops hallucination loops on noise (tokens/s)."""
    min_new_tokens: int = 6
    """Budget floor so that a very short command still has room to finish (tokens)."""
    max_single_repeats: int = 6
    """A token repeated this many times in a row ends the decode as a loop."""
    max_phrase_repeats: int = 4
    """A 2-4 token phrase repeated this many times in a row ends the decode as a loop."""
    max_chunk_s: float = 20.0
    """Longer audio is cut at pauses into pieces at most this long (seconds)."""
    batch_size: int = 8
    """File work: pieces of a long file decoded together (same text as one by one; the decoder
    reads each weight once per step for the whole batch)."""
    threads: int | None = None
    """torch intra-op threads; None keeps torch's default (one per core)."""
    compile: bool | None = None
    """Compile the decode step (and, on a CPU, the encoder's layers): about half the time per
    token. True costs a one-time build (about two minutes on a 2-core CPU, then cached on disk)
    and under a second per start; the live engine turns it on. None (the default, one-off file
    work): compiled when this machine's compiled packages are already in the cache, eager
    otherwise, never building. False: always eager."""
    weights: str = "auto"
    """"int8" keeps every per-step decoder linear and the output head as the checkpoint's own int8
    weights, dequantized inside fused kernels (CPU, float32, compiled step; bit-identical weights,
    so the float transcripts); "float" runs every layer in `dtype`; "auto" is int8 where it
    applies (compiled, CPU, float32) and float elsewhere."""

    def __post_init__(self) -> None:
        if self.device not in DEVICES and not self.device.startswith("cuda:"):
            raise ConfigError(f"DecodeConfig.device must be one of {DEVICES}, got {self.device!r}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"DecodeConfig.dtype must be one of {DTYPES}, got {self.dtype!r}")
        if not 0.5 <= self.max_tokens_per_s <= 50:
            raise ConfigError(
                f"DecodeConfig.max_tokens_per_s must be in [0.5, 50], got {self.max_tokens_per_s}"
            )
        if not 1 <= self.min_new_tokens <= 190:
            raise ConfigError(
                f"DecodeConfig.min_new_tokens must be in [1, 190], got {self.min_new_tokens}"
            )
        if self.max_single_repeats < 2 or self.max_phrase_repeats < 2:
            raise ConfigError("DecodeConfig repeat limits must be at least 2")
        if not 1.0 <= self.max_chunk_s <= 30.0:
            raise ConfigError(
                f"DecodeConfig.max_chunk_s must be in [1, 30] seconds, got {self.max_chunk_s}"
            )
        if not 1 <= self.batch_size <= 64:
            raise ConfigError(f"DecodeConfig.batch_size must be in [1, 64], got {self.batch_size}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"DecodeConfig.threads must be >= 1, got {self.threads}")
        if self.weights not in WEIGHTS:
            raise ConfigError(
                f"DecodeConfig.weights must be one of {WEIGHTS}, got {self.weights!r}"
            )
        if self.weights == "int8" and self.compile is not True:
            raise ConfigError(
                "DecodeConfig.weights='int8' needs compile=True: int8 weights run as fused "
                "compiled kernels (eager would dequantize every weight on every step)"
            )

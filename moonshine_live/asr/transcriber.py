"""`Transcriber`: the one owner of the loaded model, its tokenizer and its (compiled) decode step.

Synchronous and thread-safe (one lock around the model's caches); the live engine calls it from
an executor. Loading picks the device and dtype, and a warm-up decode runs before it returns so
the first real utterance runs at full speed.
"""

from __future__ import annotations

import gc
import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from ..accel import kernels
from ..accel.amx import in_use as amx_in_use
from ..accel.amx import load_kernels, use_amx_from
from ..accel.compiled import (
    CompiledEncoder,
    CompiledRowsStep,
    CompiledStep,
    precompiled_step_path,
)
from ..accel.int8_kernel import load_kernel as load_int8_kernel
from ..accel.int8_kernel import use_int8_kernel
from ..accel.memory import reuse_freed_memory
from ..capture.audio import SAMPLE_RATE, load_audio, split_at_pauses, validate_audio
from ..checkpoint.weights import INT8_PARTS, Checkpoint, load_model, resolve_checkpoint
from ..errors import ConfigError
from ..model.decoding import (
    DecodeResult,
    LogitFilter,
    RepetitionGuard,
    RowsStepFn,
    StepFn,
    decode_step,
    greedy_decode,
    rows_step,
    token_budget,
)
from ..model.network import CONV1_STRIDE, CONV2_STRIDE, CONV3_STRIDE, MIN_SAMPLES
from ..model.tokenizer import Tokenizer
from ..segment.spans import speech_spans
from .config import DecodeConfig
from .constrained import BeamResult, TokenConstraint, beam_decode
from .transcript import Transcript

_LOGGER = logging.getLogger(__name__)
_T = TypeVar("_T")

WARMUP_SAMPLES = SAMPLE_RATE  # one second of low noise: runs every kernel once
SHORTEST_SAMPLES = MIN_SAMPLES + CONV1_STRIDE * CONV2_STRIDE * CONV3_STRIDE
"""Shorter audio is zero padded to this (80 ms): two encoder frames, because a compiled step
treats a length of 1 as a special case and would be rebuilt for it."""


@dataclass(frozen=True)
class FileTranscript:
    """A whole file: its pieces (cut at pauses when long) and their joined text."""

    path: str
    duration_s: float
    """Length of the whole file (seconds); silence between pieces is not transcribed."""
    pieces: tuple[Transcript, ...]

    @property
    def text(self) -> str:
        return " ".join(p.text for p in self.pieces if p.text)

    @property
    def tokens(self) -> tuple[int, ...]:
        return tuple(t for p in self.pieces for t in p.tokens)

    @property
    def audio_s(self) -> float:
        return self.duration_s

    @property
    def encode_ms(self) -> float:
        return sum(p.encode_ms for p in self.pieces)

    @property
    def decode_ms(self) -> float:
        return sum(p.decode_ms for p in self.pieces)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {name!r} requested but MPS is not available")
    return device


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    """float16 on CUDA, float32 elsewhere, unless asked otherwise."""
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


def _settle_objects() -> None:
    """Collect the start's garbage now and exempt what survives from later full collections.

    Loading and compiling leave hundreds of thousands of long-lived objects (compiler state,
    graphs): every full collection walked them all, 0.1 s on a warm start and 2 s after a
    compile (2026-12-02), a stall of the live engine whenever one came due, and at exit (Ctrl+C
    took 2 s). `gc.freeze` is process-wide but only skips what exists now; anything newer is
    collected as usual.
    """
    gc.collect()
    gc.freeze()


_COMPUTE = ThreadPoolExecutor(1, thread_name_prefix="moonshine-compute")
_compute_thread: list[int] = []  # its ident, once it runs


def on_compute_thread(function: Callable[..., _T], *args: object) -> _T:
    """Run `function` on the process's one compute thread, where every Transcriber does all its
    torch work (and where other torch work in the same process should run too).

    OpenMP keeps a team of worker threads per thread that runs parallel regions: a second team
    (a model loaded on the main thread, then used from an executor; a second transcriber; a
    reference model in a benchmark) puts more threads than cores under libgomp, which then stops
    spinning between regions, and every small op waits for its workers to wake. On a 2-core EPYC
    (2026-12-07) that doubled the decode step (int8 linear 50 -> 150 us, a 2 s command 62 -> 113
    ms), cost the early commit its race against the hangover, and, with one thread per
    transcriber, tripled the benchmark's decode step. One thread, whoever calls: one team.
    """
    if not _compute_thread:
        ident = _COMPUTE.submit(threading.get_ident).result()
        _compute_thread[:] = [ident]
    if threading.get_ident() == _compute_thread[0]:
        return function(*args)
    return _COMPUTE.submit(function, *args).result()


class Transcriber:
    """Speech to text with a warm Moonshine model."""

    def __init__(self, config: DecodeConfig | None = None, *, warm_up: bool = True) -> None:
        self.config = config or DecodeConfig()
        self.on_compute_thread(self._load)
        self.warm_up_ms = 0.0
        if warm_up:
            self.warm_up()

    @staticmethod
    def on_compute_thread(function: Callable[..., _T], *args: object) -> _T:
        """`transcriber.on_compute_thread`: the thread this (and every) transcriber works on."""
        return on_compute_thread(function, *args)

    def _load(self) -> None:
        # One setting for encoder and decoder: 2 threads vs 1 take the 10 s encoder from 752 to
        # 415 ms (2026-11-24, 2-core EPYC), and the compiled int8 decode step from 10-14 to 6-8 ms
        # (2026-12-01, 2-core Xeon): both phases want every core, so no per-phase split.
        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        reuse_freed_memory()  # before the weights load: see memory.py
        self.device = pick_device(self.config.device)
        self.dtype = pick_dtype(self.config.dtype, self.device)
        self.checkpoint: Checkpoint = resolve_checkpoint(self.config.model)
        started = time.perf_counter()
        compile = self.config.compile
        # None: compiled only if nothing needs building (see _compiled_parts_cached)
        self.compile = self._compiled_parts_cached() if compile is None else compile
        int8 = self._wants_int8()
        # AMX goes with the int8 decoder: the same exact int8 weights, on the CPU, compiled
        self.amx = int8 and self.compile and load_kernels()
        self.model = load_model(
            self.checkpoint, self.device, self.dtype, INT8_PARTS if int8 else ()
        )
        self.amx = (
            self.amx and use_amx_from(self.model, self.checkpoint) > 0 and amx_in_use(self.model)
        )
        # the op serves eager steps as well as compiled ones
        self.int8_kernel = int8 and load_int8_kernel() and use_int8_kernel(self.model) > 0
        self.tokenizer = Tokenizer.from_file(self.checkpoint.tokenizer_path)
        self.guard = RepetitionGuard(
            max_single_repeats=self.config.max_single_repeats,
            max_phrase_repeats=self.config.max_phrase_repeats,
        )
        self._step: StepFn = (
            CompiledStep(self.device, self._artifact_path(int8), jit=compile is not None)
            if self.compile
            else decode_step
        )
        self._pad_frames_to = getattr(self._step, "pad_frames_to", 1)
        self._rows_step: RowsStepFn = (
            CompiledRowsStep(self._artifact_path(int8, "search-step"), build=compile is not None)
            if self.compile and self.device.type == "cpu"
            else rows_step
        )
        self._encoder_layers: CompiledEncoder | None = None
        if self.compile and self.device.type == "cpu":
            self._encoder_layers = CompiledEncoder(
                self.model.encoder,
                precompiled_step_path(
                    self.checkpoint,
                    self.device,
                    self.dtype,
                    int8,
                    part="encoder-amx" if self.amx else "encoder",
                ),
            )
        self._lock = threading.Lock()
        self.load_ms = (time.perf_counter() - started) * 1000
        _LOGGER.info("decode path: %s", self.path)

    @property
    def path(self) -> str:
        """Which path runs, in a few words (the CLI's JSON `path`, and `-v`)."""
        if not self.compile:
            unbuilt = self.config.compile is None  # left eager: nothing compiled in the cache
            why = " (no compiled packages in the cache; --compile builds them)" if unbuilt else ""
            return f"eager {str(self.dtype).removeprefix('torch.')}{why}"
        parts = ["compiled", "int8 decoder" if self._wants_int8() else "float decoder"]
        parts += ["AMX encoder"] if self.amx else []
        parts += ["int8 op"] if self.int8_kernel else []
        return ", ".join(parts)

    def _compiled_parts_cached(self) -> bool:
        """Whether every compiled part this machine would run (its C++ kernels, the decode step
        and encoder packages) is in the cache: then DecodeConfig.compile=None compiles, since
        loading them takes a second and building nothing."""
        if self.device.type != "cpu" or self.dtype != torch.float32:
            return False  # torch.compile (CUDA) or float16 steps keep no package on disk
        int8 = self.config.weights != "float"
        has_amx = int8 and kernels.supported(kernels.AMX_LIBRARY)
        library = kernels.AMX_LIBRARY if has_amx else kernels.INT8_LIBRARY
        with_op = int8 and kernels.supported(library)
        if with_op and not kernels.library_path(library).is_file():
            return False
        step = "decode-step-kernels" if with_op else "decode-step"
        encoder = "encoder-amx" if has_amx else "encoder"
        return all(
            precompiled_step_path(self.checkpoint, self.device, self.dtype, int8, part).is_file()
            for part in (step, encoder)
        )

    def _artifact_path(self, int8: bool, step: str = "decode-step") -> Path:
        """Where the precompiled `step` (the decode step, or a search's rows step) for this
        model, device and weights is kept (one that calls the CPU kernels' op has a name of its
        own: it cannot run without them)."""
        part = f"{step}-kernels" if self.int8_kernel else step
        return precompiled_step_path(self.checkpoint, self.device, self.dtype, int8, part)

    def _wants_int8(self) -> bool:
        fits = self.device.type == "cpu" and self.dtype == torch.float32
        if self.config.weights == "int8" and not fits:
            raise ConfigError(
                "DecodeConfig.weights='int8' needs device cpu and dtype float32, got "
                f"{self.device.type} and {str(self.dtype).removeprefix('torch.')}"
            )
        return self.config.weights == "int8" or (
            self.config.weights == "auto" and self.compile and fits
        )

    @property
    def compiled(self) -> bool:
        """Whether decode steps run compiled (False after a failed compile fell back to eager)."""
        return isinstance(self._step, CompiledStep)

    @property
    def compiled_from_cache(self) -> bool:
        """Whether the compiled step (and encoder, on a CPU) came from the on-disk cache (a warm
        start)."""
        encoder = self._encoder_layers
        return (
            isinstance(self._step, CompiledStep)
            and self._step.loaded_from_disk
            and (encoder is None or encoder.loaded_from_disk)
        )

    def warm_up(self) -> None:
        """Run one decode so compiling, allocation and kernel selection happen now, not on the
        first speech; afterwards an utterance of any length runs at full speed."""
        self.on_compute_thread(self._warm_up)

    def _warm_up(self) -> None:
        started = time.perf_counter()
        noise = np.random.default_rng(0).normal(0, 1e-3, WARMUP_SAMPLES).astype(np.float32)
        try:
            self.transcribe(noise)
        except Exception as exc:  # no C++ compiler, unsupported platform...: eager is correct
            if not self.compiled:
                raise
            _LOGGER.warning("compiling the decode step failed, running it eagerly: %s", exc)
            self._step, self._pad_frames_to = decode_step, 1
            self.transcribe(noise)
        _settle_objects()
        self.warm_up_ms = (time.perf_counter() - started) * 1000

    def budget(self, num_samples: int) -> int:
        return token_budget(
            num_samples,
            SAMPLE_RATE,
            self.config.max_tokens_per_s,
            self.config.min_new_tokens,
            self.model.config.max_position_embeddings,
        )

    def transcribe(
        self,
        audio: np.ndarray,
        sample_rate: int = SAMPLE_RATE,
        t_start: float = 0.0,
        *,
        constraint: LogitFilter | None = None,
    ) -> Transcript:
        """One utterance (float32 mono; other rates resampled) -> Transcript.

        `constraint` limits what this utterance may decode to (per utterance: several
        pipelines with different grammars can share one transcriber); None decodes freely."""
        return self.transcribe_batch([audio], [t_start], sample_rate, constraint=constraint)[0]

    def transcribe_batch(
        self,
        utterances: list[np.ndarray],
        t_starts: list[float] | None = None,
        sample_rate: int = SAMPLE_RATE,
        *,
        constraint: LogitFilter | None = None,
    ) -> list[Transcript]:
        """Several utterances at once; the same text as one at a time."""
        if not utterances:
            return []
        return self.on_compute_thread(
            self._transcribe_batch, utterances, t_starts, sample_rate, constraint
        )

    def _transcribe_batch(
        self,
        utterances: list[np.ndarray],
        t_starts: list[float] | None,
        sample_rate: int,
        constraint: LogitFilter | None,
    ) -> list[Transcript]:
        utterances = [
            validate_audio(u, sample_rate, name=f"utterance {i}") for i, u in enumerate(utterances)
        ]
        t_starts = t_starts or [0.0] * len(utterances)
        lengths = [max(len(u), SHORTEST_SAMPLES) for u in utterances]
        batch = np.zeros((len(utterances), max(lengths)), dtype=np.float32)
        for row, u in zip(batch, utterances, strict=True):
            row[: len(u)] = u
        with self._lock, torch.inference_mode():
            started = time.perf_counter()
            audio = torch.from_numpy(batch).to(self.device, self.dtype)
            features, frame_mask = self.model.encode(audio, lengths, self._encoder_layers)
            encoded = time.perf_counter()
            budgets = [self.budget(n) for n in lengths]
            results = greedy_decode(
                self.model, features, frame_mask, budgets,
                step=self._step, guard=self.guard, pad_frames_to=self._pad_frames_to,
                logit_filter=constraint,
            )  # fmt: skip
            decoded = time.perf_counter()
        encode_ms = (encoded - started) * 1000 / len(utterances)
        decode_ms = (decoded - encoded) * 1000 / len(utterances)
        return [
            self._transcript(r, len(u), encode_ms, decode_ms, t)
            for u, r, t in zip(utterances, results, t_starts, strict=True)
        ]

    def transcribe_within(
        self,
        audio: np.ndarray,
        constraint: TokenConstraint,
        t_start: float = 0.0,
        *,
        beam: int = 4,
        floor_per_token: float = -math.inf,
    ) -> tuple[Transcript, BeamResult]:
        """One utterance decoded freely and within a grammar, from one pass of the encoder:
        the free transcript (what was said, for rejection) and the grammar's best hypotheses.
        `floor_per_token`: drop hypotheses that fall this far below the free decode's score per
        token of the budget (they could only be refused)."""
        return self.on_compute_thread(
            self._transcribe_within, audio, constraint, t_start, beam, floor_per_token
        )

    def _transcribe_within(
        self,
        audio: np.ndarray,
        constraint: TokenConstraint,
        t_start: float,
        beam: int,
        floor_per_token: float,
    ) -> tuple[Transcript, BeamResult]:
        audio = validate_audio(audio, SAMPLE_RATE, name="utterance")
        length = max(len(audio), SHORTEST_SAMPLES)
        padded = np.zeros((1, length), dtype=np.float32)
        padded[0, : len(audio)] = audio
        with self._lock, torch.inference_mode():
            started = time.perf_counter()
            samples = torch.from_numpy(padded).to(self.device, self.dtype)
            features, _ = self.model.encode(samples, None, self._encoder_layers)
            encoded = time.perf_counter()
            budget = self.budget(length)
            found = beam_decode(
                self.model, features, constraint, budget, beam=beam, free=True,
                guard=self.guard, floor_per_token=floor_per_token, step=self._rows_step,
            )  # fmt: skip
            searched = time.perf_counter()
        assert found.free is not None
        encode_ms, search_ms = (encoded - started) * 1000, (searched - encoded) * 1000
        # the free row costs the search little: its decode time is the search's
        transcript = self._transcript(found.free, len(audio), encode_ms, search_ms, t_start)
        return transcript, replace(found, search_ms=search_ms)

    def _transcript(
        self, result: DecodeResult, samples: int, encode_ms: float, decode_ms: float, t: float
    ) -> Transcript:
        return Transcript(
            text=self.tokenizer.decode(result.tokens).strip(),
            tokens=result.tokens,
            avg_logprob=result.avg_logprob,
            audio_s=samples / SAMPLE_RATE,
            encode_ms=encode_ms,
            decode_ms=decode_ms,
            stop_reason=result.stop_reason,
            t_start=t,
        )

    def transcribe_long(
        self, audio: np.ndarray, sample_rate: int = SAMPLE_RATE
    ) -> list[Transcript]:
        """Audio of any length, in order: each stretch of sound on its own (long silence
        around speech makes Moonshine return nothing), stretches over `max_chunk_s` cut at
        pauses. Pieces are transcribed `batch_size` at a time, shortest first (little padding);
        a batch gives each piece the text it gets alone."""
        audio = validate_audio(audio, sample_rate)
        pieces = self.pieces_of(audio)
        by_length = sorted(range(len(pieces)), key=lambda i: pieces[i][1] - pieces[i][0])
        results: list[Transcript | None] = [None] * len(pieces)
        size = self.config.batch_size
        for first in range(0, len(by_length), size):
            batch = by_length[first : first + size]
            texts = self.transcribe_batch(
                [audio[pieces[i][0] : pieces[i][1]] for i in batch],
                [pieces[i][0] / SAMPLE_RATE for i in batch],
            )
            for i, text in zip(batch, texts, strict=True):
                results[i] = text
        return [r for r in results if r is not None]

    def pieces_of(self, audio: np.ndarray) -> list[tuple[int, int]]:
        """[start, end) sample ranges `transcribe_long` transcribes; silence between is skipped.

        Audio that fits in one piece is only trimmed at its ends, so it decodes as one utterance.
        """
        regions = speech_spans(audio)
        if regions and len(audio) <= self.config.max_chunk_s * SAMPLE_RATE:
            regions = [(regions[0][0], regions[-1][1])]
        pieces = []
        for start, end in regions:
            for a, b in split_at_pauses(audio[start:end], self.config.max_chunk_s):
                pieces.append((start + a, start + b))
        return pieces

    def transcribe_file(self, path: str | Path) -> FileTranscript:
        """Any soundfile-readable file (WAV, FLAC, OGG...), any rate, mono or not."""
        audio = load_audio(path)
        pieces = tuple(self.transcribe_long(audio))
        return FileTranscript(str(path), len(audio) / SAMPLE_RATE, pieces)

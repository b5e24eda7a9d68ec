"""Audio in -> token ids: our Transcriber next to transformers and onnxruntime, same clips.

Why: the project exists to be fast on a CPU, so every speed claim needs the two obvious peers
measured on the same machine, the same audio and the same greedy budget, and a check that all
three produce the same tokens (a fast wrong answer is not a speed-up). "ours" is what the live
engine runs, `DecodeConfig(compile=True)`: the compiled decode step with the checkpoint's int8
decoder weights (bit-identical weights, so the same tokens); "ours_eager" is
`DecodeConfig(compile=False)`, the eager float model, so the gain of the fast path stays visible.
The peers are transformers' `MoonshineForConditionalGeneration` on our converted weights and
onnxruntime on the moonshine-cpp wheel's original `.ort` files (the reference runtime,
shared/notes/weights.md). All four must give the same tokens on every clip and repeat; the table
ends with the project's targets, met or not.

Clips are prefixes of the wheel's beckett.wav cut at the quietest 100 ms in the second half of
each target length and zero padded to it; a target of about the file's length is the whole file.
Runs are interleaved (every repeat visits every clip, implementations in rotated order) so slow
drift of the machine hits all of them alike, with a short pause after each call so one runtime's
still-spinning threads do not slow the next; the table shows medians.
All four run in this one process and share its allocator settings (memory.py keeps freed
activations mapped), so transformers is spared the same page faults ours is.

After them, `moonshine-live transcribe --json` runs in a new process on the same clips (each
`--repeats` times, default settings, warm cache): the path it took and the median encode + decode
per clip next to ours in process, which should be within 10% (`--skip-cli` leaves it out).

`--profile` adds, for the 2 s clip, where ours spends its time: the encoder's stem and its layers,
the cross-attention K/V prefill, the decode steps, and the rest (Python, the greedy loop), timed
with `time.perf_counter` around each call (medians of `--repeats` runs).

    python benchmarks/transcribe.py [--repeats 7] [--threads N] [--durations 1,2,4,10]
                                    [--skip-onnx] [--skip-transformers] [--skip-eager]
                                    [--skip-cli]
                                    [--profile] [--json [PATH]]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING
from unittest import mock

import numpy as np
import soundfile
import torch

from moonshine_live.asr.config import DecodeConfig
from moonshine_live.asr.transcriber import Transcriber, on_compute_thread
from moonshine_live.capture.audio import SAMPLE_RATE
from moonshine_live.checkpoint.ort_weights import locate_moonshine_cpp_files
from moonshine_live.checkpoint.weights import Checkpoint, read_state_dict

if TYPE_CHECKING:
    import onnxruntime

HOP_SAMPLES = SAMPLE_RATE // 100  # energy is measured per 10 ms hop...
PAUSE_HOPS = 10  # ...and averaged over 100 ms, so a cut lands in a pause, not inside a word
SEARCH_FROM = 0.5  # a short clip is cut at the quietest point in [0.5, 1.0] x its target length
BUSY_FRACTION = 0.1  # CPU busy this much in the second before we start: someone else is running
SETTLE_S = 0.2  # pause after each call: ORT's spinning threads slow the next torch call ~2x
FILE_SLACK_S = 0.1  # a target within this of the file's length (10 s vs 9.96 s) is the file
SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")  # cpuinfo flags
PROFILE_CLIP = "2s"  # --profile breaks down the typical command's length


@dataclass(frozen=True)
class Clip:
    """A prefix of the sample file cut in a pause, padded with silence to the target length."""

    name: str
    audio: np.ndarray  # (samples,) float32 at 16 kHz
    speech_s: float  # where the file was cut (seconds); the rest is zero padding

    @property
    def seconds(self) -> float:
        return len(self.audio) / SAMPLE_RATE


@dataclass(frozen=True)
class Run:
    """One audio -> tokens call; tokens exclude the start token and end-of-text."""

    tokens: tuple[int, ...]
    total_ms: float
    encode_ms: float | None = None
    decode_ms: float | None = None
    steps: int | None = None  # decoder steps, the end-of-text step included


@dataclass(frozen=True)
class Target:
    """A goal of the project: a median column of one clip's row (every clip's when clip is None)
    at most `limit`."""

    clip: str | None
    column: str
    limit: float
    label: str


TARGETS = (
    Target("2s", "ours_over_hf", 0.4, "2 s command: ours/transformers"),
    Target("2s", "ours_over_ort", 0.2, "2 s command: ours/onnxruntime"),
    Target("10s", "ours_over_hf", 0.5, "10 s: ours/transformers"),
    Target(None, "dec_ms_per_tok", 6.0, "decoder ms/token"),
)

Runner = Callable[[np.ndarray, int], Run]  # (audio, max_new_tokens) -> Run


def make_clips(path: Path, durations: list[float]) -> list[Clip]:
    """One clip per target duration, each starting at the file's start."""
    audio, rate = soundfile.read(path, dtype="float32")
    if rate != SAMPLE_RATE or audio.ndim != 1:
        sys.exit(f"{path}: expected mono {SAMPLE_RATE} Hz, got {rate} Hz, shape {audio.shape}")
    energy = _pause_energy(audio)
    clips = []
    for target_s in durations:
        target = round(target_s * SAMPLE_RATE)
        slack = FILE_SLACK_S * SAMPLE_RATE
        if target >= len(audio) - slack:
            cut = len(audio)
            target = target if target > len(audio) + slack else cut
        else:
            low, high = int(target * SEARCH_FROM) // HOP_SAMPLES, target // HOP_SAMPLES
            cut = (low + int(np.argmin(energy[low : high + 1]))) * HOP_SAMPLES
        padded = np.zeros(max(target, cut), dtype=np.float32)
        padded[:cut] = audio[:cut]
        clips.append(Clip(f"{target_s:g}s", padded, cut / SAMPLE_RATE))
    return clips


def _pause_energy(audio: np.ndarray) -> np.ndarray:
    """Mean square over the 100 ms centred on each 10 ms hop boundary, shape (hops + 1,)."""
    hops = len(audio) // HOP_SAMPLES
    per_hop = np.square(audio[: hops * HOP_SAMPLES].reshape(hops, HOP_SAMPLES)).mean(axis=1)
    cumulative = np.concatenate(([0.0], np.cumsum(per_hop, dtype=np.float64)))
    bounds = np.arange(hops + 1)
    left = np.maximum(bounds - PAUSE_HOPS // 2, 0)
    right = np.minimum(bounds + PAUSE_HOPS // 2, hops)
    return (cumulative[right] - cumulative[left]) / (right - left)


def ours_runner(transcriber: Transcriber) -> Runner:
    def run(audio: np.ndarray, max_new_tokens: int) -> Run:
        started = time.perf_counter()
        result = transcriber.transcribe(audio)  # budget == max_new_tokens by construction
        total_ms = (time.perf_counter() - started) * 1000
        steps = len(result.tokens) + (result.stop_reason == "eos")
        return Run(result.tokens, total_ms, result.encode_ms, result.decode_ms, steps)

    return run


def transformers_runner(checkpoint: Checkpoint, bos: int, eos: int) -> Runner:
    import transformers

    transformers.logging.set_verbosity_error()
    config = transformers.MoonshineConfig.from_pretrained(checkpoint.directory)
    model = transformers.MoonshineForConditionalGeneration(config).eval()
    model.load_state_dict(read_state_dict(checkpoint.weights_path), strict=True)

    def generate(audio: np.ndarray, max_new_tokens: int) -> torch.Tensor:
        with torch.inference_mode():
            return model.generate(
                torch.from_numpy(audio)[None], max_new_tokens=max_new_tokens, do_sample=False
            )

    def run(audio: np.ndarray, max_new_tokens: int) -> Run:
        started = time.perf_counter()
        # on the thread ours runs on: a second OpenMP team would slow both (on_compute_thread)
        ids = on_compute_thread(generate, audio, max_new_tokens)
        total_ms = (time.perf_counter() - started) * 1000
        return Run(_strip_special(ids[0].tolist(), bos, eos), total_ms)

    return run


def _strip_special(ids: list[int], bos: int, eos: int) -> tuple[int, ...]:
    """generate's [start, ..., eos, pad...] -> the text tokens."""
    ids = ids[1:] if ids and ids[0] == bos else ids
    return tuple(ids[: ids.index(eos)] if eos in ids else ids)


def onnx_runner(threads: int, bos: int, eos: int) -> Runner:
    import onnxruntime

    files = locate_moonshine_cpp_files()
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    encoder, decoder = (
        onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        for path in (files.encoder, files.decoder)
    )

    def run(audio: np.ndarray, max_new_tokens: int) -> Run:
        started = time.perf_counter()
        hidden = encoder.run(None, {"input_values": audio[None]})[0]
        tokens = onnx_greedy(decoder, hidden, max_new_tokens, bos, eos)
        return Run(tokens, (time.perf_counter() - started) * 1000)

    return run


def onnx_greedy(
    decoder: onnxruntime.InferenceSession,
    hidden: np.ndarray,
    max_new_tokens: int,
    bos: int,
    eos: int,
) -> tuple[int, ...]:
    """Greedy loop over the merged decoder; hidden [1, frames, 416] from the encoder.

    Step one takes the no-cache branch with empty past tensors and computes the cross-attention
    K/V; later steps take the cached branch, which returns dummy (batch 0) `present.*.encoder`
    tensors, so the encoder K/V from step one are fed back every time.
    """
    past_inputs = [i for i in decoder.get_inputs() if i.name.startswith("past_key_values.")]
    output_names = [o.name for o in decoder.get_outputs()]
    past = {i.name: np.zeros((1, i.shape[1], 0, i.shape[3]), np.float32) for i in past_inputs}
    token, tokens = bos, []
    for step in range(max_new_tokens):
        feeds = {
            "input_ids": np.array([[token]], dtype=np.int64),
            "encoder_hidden_states": hidden,
            "use_cache_branch": np.array([step > 0]),
            **past,
        }
        logits, *presents = decoder.run(output_names, feeds)
        token = int(logits[0, -1].argmax())
        if token == eos:
            break
        tokens.append(token)
        for name, value in zip(output_names[1:], presents, strict=True):
            if step == 0 or ".decoder." in name:
                past[name.replace("present.", "past_key_values.")] = value
    return tuple(tokens)


def measure(
    runners: dict[str, Runner], clips: list[Clip], budgets: list[int], repeats: int
) -> dict[str, dict[str, list[Run]]]:
    """Warm up each runner on each clip, then time them interleaved; runs[impl][clip]."""
    for clip, budget in zip(clips, budgets, strict=True):
        for runner in runners.values():
            runner(clip.audio, budget)
    runs: dict[str, dict[str, list[Run]]] = {n: {c.name: [] for c in clips} for n in runners}
    names = list(runners)
    for repeat in range(repeats):
        for index, (clip, budget) in enumerate(zip(clips, budgets, strict=True)):
            shift = (repeat + index) % len(names)
            for name in names[shift:] + names[:shift]:
                runs[name][clip.name].append(runners[name](clip.audio, budget))
                time.sleep(SETTLE_S)
    return runs


def check_tokens(runs: dict[str, dict[str, list[Run]]], clips: list[Clip]) -> bool:
    """Print a MISMATCH line for every clip where implementations (or repeats) disagree."""
    ok = True
    for clip in clips:
        reference = runs["ours"][clip.name][0].tokens
        for name, per_clip in runs.items():
            for other in {r.tokens for r in per_clip[clip.name]} - {reference}:
                ok = False
                print(f"MISMATCH {clip.name}: ours {list(reference)} vs {name} {list(other)}")
    return ok


def median(values: list[float | None]) -> float:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else float("nan")


def summarize(runs: dict[str, dict[str, list[Run]]], clip: Clip) -> dict[str, float]:
    ours = runs["ours"][clip.name]
    row = {f"{name}_ms": median([r.total_ms for r in per[clip.name]]) for name, per in runs.items()}
    nan = float("nan")
    row |= {
        "audio_s": clip.seconds,
        "tokens": len(ours[0].tokens),
        "steps": ours[0].steps,
        "ours_enc_ms": median([r.encode_ms for r in ours]),
        "ours_dec_ms": median([r.decode_ms for r in ours]),
        "dec_ms_per_tok": _ms_per_step(ours),
        "ours_over_eager": row["ours_ms"] / row.get("ours_eager_ms", nan),
        "ours_over_hf": row["ours_ms"] / row.get("transformers_ms", nan),
        "ours_over_ort": row["ours_ms"] / row.get("onnx_ms", nan),
    }
    if "ours_eager" in runs:
        eager = runs["ours_eager"][clip.name]
        row["eager_enc_ms"] = median([r.encode_ms for r in eager])
        row["eager_dec_ms_per_tok"] = _ms_per_step(eager)
    return row


def _ms_per_step(runs: list[Run]) -> float:
    """Median decode_ms / decoder steps (end-of-text step included, cross K/V prefill too)."""
    return median([r.decode_ms / r.steps for r in runs if r.decode_ms is not None and r.steps])


def print_table(rows: dict[str, dict[str, float]]) -> None:
    print(
        f"{'clip':<6}{'audio_s':>8}{'tokens':>7}{'steps':>6}{'ours_ms':>9}{'eager_ms':>9}"
        f"{'hf_ms':>8}{'ort_ms':>8}{'ours/eager':>11}{'ours/hf':>8}{'ours/ort':>9}"
        f"{'enc_ms':>8}{'dec_ms':>8}{'dec_ms/tok':>11}{'eager_ms/tok':>13}"
    )
    nan = float("nan")
    for name, row in rows.items():
        eager, hf, ort = (row.get(f"{n}_ms", nan) for n in ("ours_eager", "transformers", "onnx"))
        print(
            f"{name:<6}{row['audio_s']:>8.3f}{row['tokens']:>7}{row['steps']:>6}"
            f"{row['ours_ms']:>9.1f}{eager:>9.1f}{hf:>8.1f}{ort:>8.1f}"
            f"{row['ours_over_eager']:>11.2f}{row['ours_over_hf']:>8.2f}{row['ours_over_ort']:>9.2f}"
            f"{row['ours_enc_ms']:>8.1f}{row['ours_dec_ms']:>8.1f}{row['dec_ms_per_tok']:>11.2f}"
            f"{row.get('eager_dec_ms_per_tok', nan):>13.2f}"
        )


def check_targets(rows: dict[str, dict[str, float]]) -> dict[str, bool]:
    """Print each target's value per clip with "met" / "not met"; returns label -> met."""
    print("targets:")
    results = {}
    for target in TARGETS:
        for clip, row in rows.items():
            if target.clip not in (None, clip):
                continue
            value = row.get(target.column, float("nan"))
            label = f"{target.label} ({clip})" if target.clip is None else target.label
            if math.isnan(value):  # a peer was skipped
                verdict = "not measured"
            else:
                results[label] = value <= target.limit
                verdict = "met" if results[label] else "not met"
            print(f"  {label:<36}{value:>7.2f}  <= {target.limit:<4g} {verdict}")
    return results


def profile(transcriber: Transcriber, clip: Clip, repeats: int) -> dict[str, float]:
    """Medians over `repeats` transcriptions of `clip` of where the time goes (ms).

    The stem, the encoder (its layers, rotary tables and final norm), the cross K/V prefill and
    every decode step are timed by wrapping them for the duration; "rest" is the call's wall
    time minus all of those: tensor conversion, the greedy loop's Python, the budget, detokenizing.
    """
    model = transcriber.model
    parts: dict[str, list[float]] = {}
    rows: list[dict[str, float]] = []

    def timed(name: str, call: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            result = call(*args, **kwargs)
            parts.setdefault(name, []).append((time.perf_counter() - started) * 1000)
            return result

        return wrapper

    # the encoder's layers: the packaged form when the transcriber has one, else the module
    packaged = getattr(transcriber, "_encoder_layers", None) is not None
    patches = (
        (model.encoder.stem, "forward", "stem"),
        (transcriber, "_encoder_layers", "encoder_layers")
        if packaged
        else (model.encoder, "forward", "encoder_layers"),
        (model, "prefill_cross", "cross_prefill"),
        (transcriber, "_step", "steps"),
    )
    with ExitStack() as stack:
        for owner, attribute, name in patches:
            call = timed(name, getattr(owner, attribute))
            stack.enter_context(mock.patch.object(owner, attribute, call))
        for _ in range(repeats + 1):  # the first run warms the wrappers' path
            parts.clear()
            started = time.perf_counter()
            transcriber.transcribe(clip.audio)
            total_ms = (time.perf_counter() - started) * 1000
            row = {name: sum(values) for name, values in parts.items()}
            row |= {
                "total": total_ms,
                "rest": total_ms - sum(row.values()),
                "n_steps": len(parts["steps"]),
                "step_mean": row["steps"] / len(parts["steps"]),
            }
            rows.append(row)
    return {key: statistics.median(r[key] for r in rows[1:]) for key in rows[0]}


def print_profile(breakdown: dict[str, float], clip: Clip, repeats: int) -> None:
    total = breakdown["total"]
    print(f"where ours spends the {clip.name} clip (median of {repeats} runs, ms):")
    for name, label in (
        ("stem", "encoder stem (convs, group norm)"),
        ("encoder_layers", "encoder layers (+ rotary, final norm)"),
        ("cross_prefill", "cross-attention K/V prefill"),
        ("steps", f"decode steps ({breakdown['n_steps']:.0f} x {breakdown['step_mean']:.2f} ms)"),
        ("rest", "rest (Python, greedy loop, tokenizer)"),
    ):
        print(f"  {label:<44}{breakdown[name]:>8.1f}  {breakdown[name] / total:>4.0%}")
    print(f"  {'total (transcribe)':<44}{total:>8.1f}")


def machine_info(onnx_threads: int) -> dict[str, object]:
    cpu = {}  # the first processor's "model name" and "flags" from /proc/cpuinfo
    cpuinfo = Path("/proc/cpuinfo")
    for line in cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []:
        key, _, value = line.partition(":")
        cpu.setdefault(key.strip(), value.strip())
    flags = cpu.get("flags", "").split()
    versions = {p: version(p) for p in ("torch", "transformers", "onnxruntime", "numpy")}
    return {
        "cpu": cpu.get("model name", "unknown"),
        "simd": ",".join(f for f in SIMD_FLAGS if f in flags) or "none",
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "onnx_intra_op_threads": onnx_threads,
        "python": platform.python_version(),
        **versions,
    }


def cpu_busy_fraction(seconds: float = 1.0) -> float:
    """Share of all CPUs not idle over `seconds` (from /proc/stat; 0.0 where there is none)."""

    def idle_and_total() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return fields[3] + fields[4], sum(fields[:8])  # idle + iowait; user..steal

    if not Path("/proc/stat").is_file():
        return 0.0
    idle_start, total_start = idle_and_total()
    time.sleep(seconds)
    idle_end, total_end = idle_and_total()
    return 1.0 - (idle_end - idle_start) / max(total_end - total_start, 1)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per clip and impl")
    parser.add_argument("--threads", type=int, default=None, help="torch and ORT intra-op threads")
    parser.add_argument("--durations", default="1,2,4,10", help="clip lengths (seconds)")
    parser.add_argument("--skip-onnx", action="store_true")
    parser.add_argument("--skip-transformers", action="store_true")
    parser.add_argument("--skip-eager", action="store_true", help="no ours_eager runs")
    parser.add_argument("--skip-cli", action="store_true", help="no `transcribe` CLI run")
    parser.add_argument(
        "--profile", action="store_true", help=f"break down ours on the {PROFILE_CLIP} clip"
    )
    parser.add_argument(
        "--json", nargs="?", const="-", metavar="PATH", help="also dump raw numbers (- = stdout)"
    )
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def build_runners(args: argparse.Namespace, transcriber: Transcriber) -> dict[str, Runner]:
    """Ours always; the eager float model and the peers unless skipped, ORT on torch's threads."""
    config = transcriber.model.config
    bos, eos = config.decoder_start_token_id, config.eos_token_id
    runners = {"ours": ours_runner(transcriber)}
    if not args.skip_eager:
        runners["ours_eager"] = ours_runner(
            Transcriber(DecodeConfig(threads=args.threads, compile=False))
        )
    if not args.skip_transformers:
        # built where it runs: loading it on this thread would start a second OpenMP team
        runners["transformers"] = on_compute_thread(
            transformers_runner, transcriber.checkpoint, bos, eos
        )
    if not args.skip_onnx:
        runners["onnx"] = onnx_runner(torch.get_num_threads(), bos, eos)
    return runners


def print_clips(clips: list[Clip], budgets: list[int], source: Path) -> None:
    print(f"clips from {source.name} (zero padded after the cut):")
    for clip, budget in zip(clips, budgets, strict=True):
        print(
            f"  {clip.name:<5} {clip.seconds:.4f} s, cut at {clip.speech_s:.2f} s, "
            f"max_new_tokens {budget}"
        )


def ours_info(transcriber: Transcriber) -> dict[str, object]:
    """How ours started: compiled or not (a failed compile falls back to eager), from disk."""
    return {
        "ours_compiled": transcriber.compiled,
        "ours_step_from_disk": transcriber.compiled_from_cache,
        "ours_load_ms": round(transcriber.load_ms),
        "ours_warm_up_ms": round(transcriber.warm_up_ms),
        "ours_amx": transcriber.amx,
        "ours_int8_kernel": transcriber.int8_kernel,
    }


def graphs_compiled() -> int:
    """Graphs dynamo has compiled in this process so far (a rise after warm-up = a recompile)."""
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    busy_before = cpu_busy_fraction()
    transcriber = Transcriber(DecodeConfig(threads=args.threads, compile=True))
    runners = build_runners(args, transcriber)
    info = machine_info(torch.get_num_threads()) | {"cpu_busy_at_start": round(busy_before, 2)}
    info |= ours_info(transcriber)
    print("  ".join(f"{key}={value}" for key, value in info.items()))
    if not transcriber.compiled:
        print("WARNING: the decode step did not compile; 'ours' ran eagerly (see the log)")

    sample = locate_moonshine_cpp_files().sample_wav
    clips = make_clips(sample, [float(d) for d in args.durations.split(",")])
    budgets = [transcriber.budget(len(clip.audio)) for clip in clips]
    print_clips(clips, budgets, sample)

    graphs_before = graphs_compiled()
    runs = measure(runners, clips, budgets, args.repeats)
    for clip in clips:
        ours = runs["ours"][clip.name][0]
        print(f"  {clip.name:<5} {list(ours.tokens)} {transcriber.tokenizer.decode(ours.tokens)!r}")
    same = check_tokens(runs, clips)
    print(f"tokens identical across {', '.join(runs)} and repeats: {'yes' if same else 'NO'}")
    print(f"medians of {args.repeats} interleaved runs after one warm-up run per clip:")
    rows = {clip.name: summarize(runs, clip) for clip in clips}
    print_table(rows)
    print(
        "ours = DecodeConfig(compile=True) (compiled step, int8 decoder weights); eager = "
        "DecodeConfig(compile=False);\ndec_ms/tok = decode_ms / decoder steps (end-of-text step "
        "and the cross K/V prefill included)"
    )
    targets = check_targets(rows)
    cli = None if args.skip_cli else measure_cli(clips, args.repeats, args.threads)
    if cli is not None:
        print_cli(cli, rows)
    breakdown = None
    if args.profile:
        clip = next((c for c in clips if c.name == PROFILE_CLIP), None)
        if clip is None:
            print(f"--profile: no {PROFILE_CLIP} clip in --durations")
        else:
            breakdown = profile(transcriber, clip, args.repeats)
            print_profile(breakdown, clip, args.repeats)
    info["graphs_compiled_after_start"] = recompiled = graphs_compiled() - graphs_before
    if recompiled:
        print(f"WARNING: {recompiled} graph(s) compiled after start-up (a recompile)")
    print(f"total wall time {time.perf_counter() - started:.1f} s")
    busy_after = info["cpu_busy_at_end"] = round(cpu_busy_fraction(), 2)
    if max(busy_before, busy_after) > BUSY_FRACTION:
        print(
            f"WARNING: other processes kept the CPU {busy_before:.0%} busy before the run and "
            f"{busy_after:.0%} after it: numbers are noisy"
        )
    if args.json:
        extra = {"tokens_identical": same, "targets_met": targets, "profile": breakdown}
        extra["cli"] = cli
        dump_json(args.json, info, clips, budgets, runs, rows, extra)
    return 0 if same else 1


CLI_SLOWER_LIMIT = 1.10
"""`transcribe` from the command line must run within 10% of the same model in process."""


def measure_cli(clips: list[Clip], repeats: int, threads: int | None) -> dict[str, object]:
    """`moonshine-live transcribe --json` in a new process with its default settings (compiled
    when the cache holds the packages, which the in-process run above made sure of) on every
    clip `repeats` times: its path and median encode + decode ms per clip."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for clip in clips:
            files.append(Path(tmp) / f"{clip.name}.wav")
            soundfile.write(files[-1], clip.audio, SAMPLE_RATE, subtype="FLOAT")
        argv = [sys.executable, "-m", "moonshine_live", "transcribe", "--json"]
        argv += ["--threads", str(threads)] if threads else []
        # one warm-up pass, then the timed ones, interleaved like the in-process runs
        order = [str(f) for f in files] * (repeats + 1)
        started = time.perf_counter()
        done = subprocess.run(argv + order, capture_output=True, text=True, timeout=1800)
        wall_s = time.perf_counter() - started
    if done.returncode != 0:
        print(f"WARNING: transcribe CLI failed ({done.returncode}): {done.stderr[-500:]}")
        return {"ok": False}
    records = [json.loads(line) for line in done.stdout.splitlines()][len(files) :]
    per_clip = {
        clip.name: median(
            [r["encode_ms"] + r["decode_ms"] for r in records if r["file"] == str(file)]
        )
        for clip, file in zip(clips, files, strict=True)
    }
    return {"ok": True, "path": records[0].get("path"), "wall_s": wall_s, "ms": per_clip}


def print_cli(cli: dict[str, object], rows: dict[str, dict[str, float]]) -> None:
    if not cli.get("ok"):
        return
    print(f"transcribe CLI (new process, warm cache, default settings): path = {cli['path']}")
    print(f"{'clip':<6}{'cli_ms':>9}{'ours_ms':>9}{'cli/ours':>10}")
    for name, cli_ms in cli["ms"].items():  # type: ignore[union-attr]
        ours_ms = rows[name]["ours_enc_ms"] + rows[name]["ours_dec_ms"]
        ratio = cli_ms / ours_ms
        verdict = "ok" if ratio <= CLI_SLOWER_LIMIT else f"slower than {CLI_SLOWER_LIMIT:.2f}x"
        print(f"{name:<6}{cli_ms:>9.1f}{ours_ms:>9.1f}{ratio:>10.2f}  {verdict}")
    print("  (encode + decode medians; the CLI's JSON has no end-to-end time per file)")


def dump_json(
    target: str,
    info: dict[str, object],
    clips: list[Clip],
    budgets: list[int],
    runs: dict[str, dict[str, list[Run]]],
    rows: dict[str, dict[str, float]],
    extra: dict[str, object],
) -> None:
    payload = {
        "machine": info,
        **extra,
        "clips": [
            {"name": c.name, "audio_s": c.seconds, "cut_s": c.speech_s, "max_new_tokens": b}
            for c, b in zip(clips, budgets, strict=True)
        ],
        "medians": rows,
        "runs": {
            name: {clip: [asdict(r) for r in clip_runs] for clip, clip_runs in per_clip.items()}
            for name, per_clip in runs.items()
        },
    }
    text = json.dumps(payload, indent=1)
    if target == "-":
        print(text)
    else:
        Path(target).write_text(text + "\n")


if __name__ == "__main__":
    raise SystemExit(main())

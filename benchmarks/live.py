"""Live engine benchmark: replay a recording in real time through the whole engine.

Prints p50/p95 of end-of-speech -> transcript (and -> command) latency, the real-time factor of
transcription, and the engine's CPU use while the input is silent (goal: a few percent of one
core). The recording is the bundled demo (12 spoken commands, 36 s) repeated, or any file.

    python benchmarks/live.py [--repeat 2] [--silence-s 20] [--file F] [--fast] [--eager]
                              [--early-commit MS]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from importlib.resources import files

import numpy as np

from moonshine_live.asr.config import DecodeConfig
from moonshine_live.asr.transcriber import Transcriber
from moonshine_live.capture.audio import SAMPLE_RATE, load_audio
from moonshine_live.capture.sources import ArraySource
from moonshine_live.commands.actions import ActionConfig
from moonshine_live.commands.stage import CommandConfig
from moonshine_live.engine.engine import Engine, EngineConfig
from moonshine_live.events import Event


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


async def replay(
    audio: np.ndarray,
    transcriber: Transcriber,
    realtime: bool,
    grammars: tuple[str, ...],
    early_commit_ms: int = 0,
    decode: str = "constrained",
) -> tuple[list[Event], float, float, float]:
    """All events of one run, its wall time and process CPU time (seconds), and its RTF."""
    commands = CommandConfig(grammars=grammars, actions=ActionConfig(dry_run=True), decode=decode)
    config = EngineConfig(stats_interval_s=0, commands=commands, early_commit_ms=early_commit_ms)
    engine = Engine(config, source=ArraySource(audio, realtime=realtime), transcriber=transcriber)
    events: list[Event] = []
    wall, cpu = time.monotonic(), time.process_time()
    async with engine:
        async for event in engine.events():
            events.append(event)
    rtf = engine.stats().rtf
    return events, time.monotonic() - wall, time.process_time() - cpu, rtf


def report(events: list[Event], wall_s: float, cpu_s: float, audio_s: float) -> None:
    transcripts = [e for e in events if e.type == "transcript"]
    commands = [e for e in events if e.type == "command"]
    rejected = [e for e in events if e.type == "rejected"]
    latencies = [e.latency_ms for e in transcripts]
    command_latencies = [e.latency_ms for e in commands]
    speech_s = sum(e.t_end - e.t_start for e in transcripts)
    print(f"audio {audio_s:.1f} s in {wall_s:.1f} s wall; {len(transcripts)} transcripts, "
          f"{len(commands)} commands, {len(rejected)} rejected")  # fmt: skip
    worst = max(latencies, default=0)
    print(f"end of speech -> transcript: p50 {percentile(latencies, 50):.0f} ms, "
          f"p95 {percentile(latencies, 95):.0f} ms, max {worst:.0f} ms")  # fmt: skip
    print(f"end of speech -> command:    p50 {percentile(command_latencies, 50):.0f} ms, "
          f"p95 {percentile(command_latencies, 95):.0f} ms")  # fmt: skip
    print(f"process CPU {cpu_s:.1f} s = {100 * cpu_s / wall_s:.0f}% of one core over the run; "
          f"speech {speech_s:.1f} s")  # fmt: skip
    if transcripts:
        print(f"median transcript: {statistics.median(len(e.text) for e in transcripts)} chars")


def command_p50(events: list[Event]) -> tuple[float, list[tuple[str, list]]]:
    """End of speech -> command p50 (ms) of a run, and its commands (intent, slots) in order."""
    commands = [e for e in events if e.type == "command"]
    said = [(e.intent, sorted(e.slots.items())) for e in commands]
    return percentile([e.latency_ms for e in commands], 50), said


async def main(args: argparse.Namespace) -> None:
    source = args.file or str(files("moonshine_live") / "assets" / "commands.flac")
    clip = load_audio(source)
    gap = np.zeros(SAMPLE_RATE, dtype=np.float32)
    speech = np.concatenate([np.concatenate([clip, gap]) for _ in range(args.repeat)])
    rng = np.random.default_rng(0)
    silence = rng.normal(0, 3e-4, int(args.silence_s * SAMPLE_RATE)).astype(np.float32)
    # the engine's own model settings (compiled decode step) unless --eager
    transcriber = Transcriber(DecodeConfig(compile=False) if args.eager else EngineConfig().decode)
    print(f"model: {'eager float' if args.eager else 'compiled (the engine default)'}; "
          f"ready after {transcriber.load_ms + transcriber.warm_up_ms:.0f} ms")  # fmt: skip
    grammars = () if args.no_grammar else ("desktop", "home")
    print(f"replaying {len(speech) / SAMPLE_RATE:.0f} s of {source} "
          f"({'as fast as possible' if args.fast else 'in real time'})")  # fmt: skip
    print(f"decoding: {args.decode}")
    events, wall, cpu, rtf = await replay(
        speech, transcriber, not args.fast, grammars, decode=args.decode
    )
    report(events, wall, cpu, len(speech) / SAMPLE_RATE)
    print(f"real-time factor (transcription time / audio time): {rtf:.3f}")
    if grammars and not args.no_compare:
        other = "free" if args.decode == "constrained" else "constrained"
        print(f"\nagain, decoding {other}:")
        again, wall, cpu, rtf = await replay(
            speech, transcriber, not args.fast, grammars, decode=other
        )
        report(again, wall, cpu, len(speech) / SAMPLE_RATE)
        print(f"real-time factor: {rtf:.3f}")
        (p50, said), (again_p50, again_said) = command_p50(events), command_p50(again)
        print(f"end of speech -> command p50, {args.decode}/{other}: {p50 / again_p50:.2f}")
        only = [c for c in said if c not in again_said], [c for c in again_said if c not in said]
        print(f"commands only {args.decode}: {only[0]}; only {other}: {only[1]}")
    if args.early_commit:
        print(f"\nagain, with early commit after {args.early_commit} ms of silence:")
        early, wall, cpu, rtf = await replay(
            speech, transcriber, not args.fast, grammars, args.early_commit, args.decode
        )
        report(early, wall, cpu, len(speech) / SAMPLE_RATE)
        print(f"real-time factor: {rtf:.3f}")
        commits = sum(e.type == "transcript" and e.reason == "early" for e in early)
        print(f"early commits: {commits}")
        (before, waited), (after, acted) = command_p50(events), command_p50(early)
        print(f"end of speech -> command p50, early/waiting: {after / before:.2f}")
        same = "the same" if waited == acted else f"DIFFERENT: {waited} vs {acted}"
        print(f"commands with and without early commit: {same}")
    print(f"\nsilence: {args.silence_s:.0f} s of low noise in real time")
    events, wall, cpu, _ = await replay(silence, transcriber, True, grammars)
    print(f"CPU while silent: {100 * cpu / wall:.1f}% of one core "
          f"({len([e for e in events if e.type == 'transcript'])} transcripts)")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", help="recording to replay (default: the bundled commands)")
    parser.add_argument("--repeat", type=int, default=2, help="times the recording is replayed")
    parser.add_argument("--silence-s", type=float, default=20.0, help="silent stretch (seconds)")
    parser.add_argument("--fast", action="store_true", help="no real-time pacing")
    parser.add_argument("--no-grammar", action="store_true", help="transcripts only")
    parser.add_argument("--eager", action="store_true", help="eager float model, not compiled")
    parser.add_argument(
        "--decode", choices=("constrained", "free"), default="constrained", help="with a grammar"
    )
    parser.add_argument(
        "--no-compare", action="store_true", help="no second run with the other --decode"
    )
    parser.add_argument(
        "--early-commit", type=int, default=0, metavar="MS",
        help="replay again with EngineConfig.early_commit_ms=MS and compare",
    )  # fmt: skip
    asyncio.run(main(parser.parse_args()))

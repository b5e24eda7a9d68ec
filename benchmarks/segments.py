"""Segmentation in noise: does each spoken command come out of the segmenter as one utterance?

Why: every later stage (the model, the grammar search) only sees what the segmenter hands it,
and in a noisy room webrtcvad splits commands, merges them with their neighbours and hands over
noise as speech (issue 16). This measures that on the engine's own segmenter, fed frame by frame
as the engine feeds it, as fast as it goes (no real-time playback).

Streams (benchmarks/segment_streams.py): `--minutes` of long streams of commands and chatter
with 1-4 s gaps and known speech spans, some commands said with a pause inside, heard clean and
in each of `--noises` (benchmarks/room_noise.py: white, pink, brown, fan hum; babble, music,
clatter and clicks, door slams) at each of `--snrs` dB over the speech power; and
`--noise-minutes` of noise without speech per condition. Every segmenter of `--segmenters`
(SEGMENTERS: a name and a factory; add one entry to compare a new one) gets the same audio.
Speech lies at `--speech-dbfs`, so noise at an SNR lies that much below it: webrtcvad judges
absolute level too (stationary noise louder than about -30 dBFS is speech to it in every mode),
so its results at one SNR change with the level.

How utterances are judged against the true spans: an utterance *holds* an item when the two
share at least HOLD_MS of the item's speech span. A command is
- missed: no utterance holds it;
- merged: an utterance holding it holds another item too (a command or chatter);
- split: two or more utterances hold it (and none is merged);
- one: exactly one utterance holds it, and nothing else (1-go one%: the same among the
  commands said without a pause inside).
An utterance holding no item is noise: counted per minute of the speech streams (noise/min) and
of the noise-only streams (silent/min). For commands out as one utterance: onset and offset
error of the segmenter's speech edges (the utterance's edges less its configured pre-roll
and its post-roll; a pre-roll cut short by the previous utterance reads as a late onset) against
the true edges (absolute, ms, p50 and p95); cut, the share whose utterance audio lacks
some of the speech; lag, the time from the end of speech until the utterance was emitted (ms,
p50). CPU: process time spent in the segmenter over the duration of all audio fed (% of one
core).

    python benchmarks/segments.py [--minutes 40] [--noise-minutes 10] [--stream-s 90]
                                  [--noises white,pink,...] [--snrs 20,10,5] [--speech-dbfs -24]
                                  [--segmenters webrtc,webrtc-a3] [--voices all|quick]
                                  [--seed 0] [--quick] [--json PATH]

Needs the TTS tools (`make install-test`); clips are cached under tests/.generated.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from commands import Condition, parse_list, voice_pool
from room_noise import NOISE_KINDS
from segment_streams import Item, Mixer, Stream, StreamConfig, StreamMaker, conditions, noise_only

from moonshine_live.capture.audio import SAMPLE_RATE, float32_to_int16
from moonshine_live.capture.sources import ArraySource, AudioHistory
from moonshine_live.segment.vad import Segmenter, Utterance, VadConfig

HOLD_MS = 100
"""Speech an utterance must share with an item to hold it (milliseconds): a noise utterance
whose tail touches the first frames of a command does not make the command split."""
DEFAULT_SNRS = (20.0, 10.0, 5.0)


class StreamSegmenter(Protocol):
    """What the benchmark drives: the engine's segmenter interface (`Segmenter`)."""

    config: VadConfig

    def process(self, frame: np.ndarray, start_sample: int | None = None) -> Sequence[object]: ...

    def force_end(self) -> Sequence[object]: ...


SegmenterFactory = Callable[[AudioHistory], StreamSegmenter]
"""A fresh segmenter that reads utterance audio from the stream's history (as the engine's)."""

SEGMENTERS: dict[str, SegmenterFactory] = {
    "webrtc": lambda history: Segmenter(VadConfig(), history=history),
    "webrtc-a3": lambda history: Segmenter(VadConfig(aggressiveness=3), history=history),
}
"""The segmenters compared: "webrtc" is the engine's default today (`EngineConfig().vad`)."""


@dataclass(frozen=True)
class Cut:
    """One utterance as the segmenter emitted it (samples on the stream's timeline)."""

    start: int
    end: int
    speech_start: int
    """`start` plus the pre-roll: where the segmenter heard the speech begin."""
    speech_end: int
    """`end` less the post-roll."""
    emitted_at: int
    """The end of the frame that produced it."""


def segment(make: SegmenterFactory, audio: np.ndarray) -> tuple[list[Cut], float]:
    """Feed float32 16 kHz `audio` through a fresh segmenter frame by frame, as the engine's
    capture loop does; its utterances and the process CPU seconds it took."""
    source = ArraySource(audio)  # the history it reads utterances from, as a file source's
    segmenter = make(source)
    size = segmenter.config.frame_samples
    pre_roll = SAMPLE_RATE * segmenter.config.pre_roll_ms // 1000
    pcm = float32_to_int16(audio[: len(audio) // size * size])
    cuts: list[Cut] = []
    cpu = time.process_time()
    for start in range(0, len(pcm), size):
        for event in segmenter.process(pcm[start : start + size], start):
            if isinstance(event, Utterance):
                cuts.append(_cut(event, pre_roll, start + size))
    cpu = time.process_time() - cpu
    ends = [e for e in segmenter.force_end() if isinstance(e, Utterance)]
    cuts += [_cut(e, pre_roll, len(pcm)) for e in ends]
    return cuts, cpu


def _cut(utterance: Utterance, pre_roll: int, emitted_at: int) -> Cut:
    start, end = utterance.start_sample, utterance.end_sample
    speech_start = min(start + pre_roll, end)
    return Cut(start, end, speech_start, end - utterance.post_roll_samples, emitted_at)


# -- judging ---------------------------------------------------------------------------------


@dataclass
class Row:
    """One segmenter in one condition, summed over its streams."""

    segmenter: str
    condition: str
    commands: int = 0
    one: int = 0
    unpaused: int = 0
    """Commands said in one go (no pause inside)."""
    unpaused_one: int = 0
    split: int = 0
    merged: int = 0
    missed: int = 0
    cut: int = 0
    """Commands out as one utterance whose audio lacks some of their speech."""
    noise_utterances: int = 0
    speech_s: float = 0.0
    """Duration of the speech streams (seconds)."""
    silent_utterances: int = 0
    silent_s: float = 0.0
    """Duration of the noise-only streams (seconds)."""
    cpu_s: float = 0.0
    onset_ms: list[float] = field(default_factory=list)
    """Signed: positive, the segmenter heard the speech start late."""
    offset_ms: list[float] = field(default_factory=list)
    """Signed: negative, it heard the speech end early."""
    lag_ms: list[float] = field(default_factory=list)


def ms(samples: int) -> float:
    return samples * 1000 / SAMPLE_RATE


def holds(cut: Cut, item: Item) -> bool:
    shared = min(cut.end, item.end) - max(cut.start, item.start)
    return ms(shared) >= min(HOLD_MS, ms(item.end - item.start))


def judge(row: Row, items: tuple[Item, ...], cuts: list[Cut]) -> None:
    """Add the verdicts of `items`' commands and the noise utterances of `cuts` to `row`."""
    held = [[i for i, item in enumerate(items) if holds(cut, item)] for cut in cuts]
    row.noise_utterances += sum(not indices for indices in held)
    for index, item in enumerate(items):
        if item.kind != "command":
            continue
        mine = [k for k, indices in enumerate(held) if index in indices]
        row.commands += 1
        row.unpaused += not item.pause_s
        if not mine:
            row.missed += 1
        elif any(len(held[k]) > 1 for k in mine):
            row.merged += 1
        elif len(mine) > 1:
            row.split += 1
        else:
            row.one += 1
            row.unpaused_one += not item.pause_s
            cut = cuts[mine[0]]
            row.cut += cut.start > item.start or cut.end < item.end
            row.onset_ms.append(ms(cut.speech_start - item.start))
            row.offset_ms.append(ms(cut.speech_end - item.end))
            row.lag_ms.append(ms(cut.emitted_at - item.end))


# -- the run ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What one run measures."""

    segmenters: tuple[str, ...]
    conditions: tuple[Condition, ...]
    streams: int
    noise_streams: int
    stream: StreamConfig
    voices: str
    seed: int


def run(plan: Plan) -> list[Row]:
    """Every segmenter on every stream in every condition; rows in condition order."""
    pool = voice_pool(plan.voices)
    maker, mixer = StreamMaker(plan.stream, pool, plan.seed), Mixer(plan.stream, pool, plan.seed)
    rows = {(s, c.name): Row(s, c.name) for c in plan.conditions for s in plan.segmenters}
    silent = [noise_only(f"noise{i}", plan.stream.length_s) for i in range(plan.noise_streams)]
    started = time.monotonic()
    for index in range(plan.streams):
        stream = maker.stream(index)
        _feed(plan, rows, mixer, stream, speech=True)
        print(f"stream {index + 1}/{plan.streams}: {len(stream.items)} items, "
              f"{time.monotonic() - started:.0f} s", file=sys.stderr)  # fmt: skip
    for stream in silent:
        _feed(plan, rows, mixer, stream, speech=False)
    return list(rows.values())


def _feed(
    plan: Plan, rows: dict[tuple[str, str], Row], mixer: Mixer, stream: Stream, speech: bool
) -> None:
    """`stream` in every condition through every segmenter, judged into `rows`."""
    for condition in plan.conditions:
        audio = mixer(stream, condition)
        for name in plan.segmenters:
            row = rows[name, condition.name]
            cuts, cpu = segment(SEGMENTERS[name], audio)
            row.cpu_s += cpu
            if speech:
                row.speech_s += stream.duration_s
                judge(row, stream.items, cuts)
            else:
                row.silent_s += stream.duration_s
                row.silent_utterances += len(cuts)


# -- the report ------------------------------------------------------------------------------


def share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}" if whole else "-"


def per_minute(count: int, seconds: float) -> str:
    return f"{60 * count / seconds:.2f}" if seconds else "-"


def abs_quantile(values: list[float], q: float) -> str:
    return f"{np.percentile(np.abs(values), q):.0f}" if values else "-"


COLUMNS = ("condition", "segmenter", "cmds", "one%", "1-go one%", "split%", "merged%",
           "missed%", "cut%", "noise/min", "silent/min", "on p50", "on p95", "off p50",
           "off p95", "lag p50", "cpu%")  # fmt: skip


def cells(row: Row) -> list[str]:
    audio_s = row.speech_s + row.silent_s
    lag = f"{np.percentile(row.lag_ms, 50):.0f}" if row.lag_ms else "-"
    return [
        row.condition, row.segmenter, str(row.commands), share(row.one, row.commands),
        share(row.unpaused_one, row.unpaused),
        share(row.split, row.commands), share(row.merged, row.commands),
        share(row.missed, row.commands), share(row.cut, row.one),
        per_minute(row.noise_utterances, row.speech_s),
        per_minute(row.silent_utterances, row.silent_s),
        abs_quantile(row.onset_ms, 50), abs_quantile(row.onset_ms, 95),
        abs_quantile(row.offset_ms, 50), abs_quantile(row.offset_ms, 95), lag,
        f"{100 * row.cpu_s / audio_s:.2f}" if audio_s else "-",
    ]  # fmt: skip


def print_table(header: list[str], lines: list[list[str]]) -> None:
    widths = [max(len(line[k]) for line in [header, *lines]) for k in range(len(header))]
    for line in [header, *lines]:
        print("  ".join(c.ljust(w) if k < 2 else c.rjust(w)
                        for k, (c, w) in enumerate(zip(line, widths, strict=True))))  # fmt: skip


def print_report(rows: list[Row], segmenters: tuple[str, ...]) -> None:
    """The full table (segmenters next to each other in each condition), then the headline:
    one% and noise per minute of every segmenter side by side."""
    print("per condition and segmenter (commands, utterances; errors in ms):")
    print_table(list(COLUMNS), [cells(row) for row in rows])
    by_key = {(row.condition, row.segmenter): row for row in rows}
    header = ["condition"]
    for metric in ("one%", "noise/min", "silent/min"):
        header += [f"{metric} {name}" for name in segmenters]
    lines = []
    for condition in dict.fromkeys(row.condition for row in rows):
        line = [condition]
        picked = [by_key[condition, name] for name in segmenters]
        line += [share(r.one, r.commands) for r in picked]
        line += [per_minute(r.noise_utterances, r.speech_s) for r in picked]
        line += [per_minute(r.silent_utterances, r.silent_s) for r in picked]
        lines.append(line)
    print("\nside by side:")
    print_table(header, lines)


# -- command line ----------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=40.0, help="speech streams (minutes)")
    parser.add_argument("--noise-minutes", type=float, default=10.0,
                        help="noise-only streams per condition (minutes)")  # fmt: skip
    parser.add_argument("--stream-s", type=float, default=90.0, help="length of each stream")
    parser.add_argument("--noises", default=",".join(NOISE_KINDS), help="comma list or off")
    parser.add_argument("--snrs", default=",".join(f"{s:g}" for s in DEFAULT_SNRS),
                        help="dB over the speech power, comma list")  # fmt: skip
    parser.add_argument("--segmenters", default=",".join(SEGMENTERS), help="comma list")
    parser.add_argument("--speech-dbfs", type=float, default=StreamConfig.speech_dbfs,
                        help="speech level (dBFS); noise lies SNR below it")  # fmt: skip
    parser.add_argument("--voices", choices=("all", "quick"), default="all", help="TTS voices")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true",
                        help="3 minutes of speech, 1 of noise, quick voices")  # fmt: skip
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the rows as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.minutes, args.noise_minutes, args.voices = 3.0, 1.0, "quick"
    return args


def plan_of(args: argparse.Namespace) -> Plan:
    noises = parse_list(args.noises, str, "--noises")
    unknown = [n for n in noises if n not in NOISE_KINDS]
    segmenters = parse_list(args.segmenters, str, "--segmenters")
    if unknown or not segmenters or any(s not in SEGMENTERS for s in segmenters):
        allowed = f"--noises: {', '.join(NOISE_KINDS)}; --segmenters: {', '.join(SEGMENTERS)}"
        raise SystemExit(f"choose from {allowed}")
    stream = StreamConfig(length_s=args.stream_s, speech_dbfs=args.speech_dbfs)
    count = round(args.minutes * 60 / args.stream_s)
    noise_count = round(args.noise_minutes * 60 / args.stream_s)
    snrs = parse_list(args.snrs, float, "--snrs")
    return Plan(tuple(segmenters), tuple(conditions(noises, snrs)), max(1, count), noise_count,
                stream, args.voices, args.seed)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = plan_of(args)
    started = time.monotonic()
    rows = run(plan)
    print_report(rows, plan.segmenters)
    print(f"\n{plan.streams} streams of {plan.stream.length_s:g} s and {plan.noise_streams} "
          f"noise-only per condition, speech at {plan.stream.speech_dbfs:g} dBFS, "
          f"{time.monotonic() - started:.0f} s")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps([asdict(row) for row in rows], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

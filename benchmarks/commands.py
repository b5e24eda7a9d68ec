"""Voice commands: how often each recognizer, through the same matcher, gets the command right.

Why: the engine is meant to be more accurate on commands than its peers (the right intent with the
right slots) and harder to fool by speech that is not a command, so those claims need numbers on
the same audio. Speed alone (benchmarks/transcribe.py) says nothing about either.

Audio, made at run time with espeak-ng and flite (cached under tests/.generated/tts):
- commands: `--per-intent` renderings of every intent of the shipped grammars (desktop, home),
  optional words with and without, slots filled with varying list entries and numbers spoken as
  words, in rotating voices;
- non-commands: everyday chatter, questions and near-misses of commands (NON_COMMANDS);
- each clean and, unless `--noise-db off`, again with pink noise at `--noise-db` dBFS.

Recognizers; each one's text is matched by the same `Matcher`, in the intent's context and mode:
- ours: the `Transcriber` as the live engine runs it (compiled step, int8 decoder weights);
- moonshine-ort: Moonshine base on onnxruntime with the moonshine-cpp wheel's `.ort` files, the
  runtime moonshine-voice ships (the same model: its text should equal ours, so the row shows what
  the runtime costs);
- pocketsphinx: CMU PocketSphinx 5 and its US English language model (open dictation), a classic
  offline engine (`pip install pocketsphinx`; the wheel carries its model);
- pocketsphinx-grammar: PocketSphinx restricted to the grammars (a JSGF made from them), the way
  grammar-based command engines listen. Free-text slots cannot be written in JSGF, so sentences
  with them are left out of its grammar (their clips still count).
Vosk, Rhino, Talon and RealtimeSTT need models or keys from the network and are not run here.

Prints, per recognizer and condition: commands right (intent and slots), wrong (another command
or wrong slots: an action that should not have happened), missed (rejected); non-commands
accepted (false alarms); the median recognition time per utterance; then ours' errors.

    python benchmarks/commands.py [--per-intent 1] [--noise-db -35|off] [--skip-ort]
                                  [--skip-sphinx] [--limit N] [--json [PATH]]

Needs the test extras and TTS tools (`make install-test` installs both).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from speech import ESPEAK_VOICES, FLITE_VOICES, compose, flite_voices, tts_wav

from moonshine_live.asr.config import DecodeConfig
from moonshine_live.asr.transcriber import Transcriber
from moonshine_live.capture.audio import SAMPLE_RATE, load_audio
from moonshine_live.commands.constrained import ConstrainedConfig, GrammarDecoder
from moonshine_live.commands.stage import SHIPPED_GRAMMARS, resolve_grammar_path
from moonshine_live.grammar import (
    ANY_MODE,
    DEFAULT_MODE,
    Alternative,
    Grammar,
    ListSlot,
    Optional,
    RangeSlot,
    RuleRef,
    Sequence,
    SlotRef,
    Word,
    iter_examples,
    load_grammar,
)
from moonshine_live.grammar.matcher import CommandMatch, Matcher
from moonshine_live.grammar.normalize import number_to_words
from moonshine_live.grammar.syntax import Node

NON_COMMANDS = (
    "what is the weather like today",
    "I think we should go for lunch at noon tomorrow",
    "did you see the game last night",
    "can you pass me the salt please",
    "my sister is coming to visit next week",
    "the meeting has been moved to thursday",
    "I really like this song",
    "where did I leave my keys",
    "how much does a new bicycle cost",
    "we need to buy more coffee",
    "the train was late again this morning",
    "that movie was much better than I expected",
    "let me think about it for a moment",
    "could you call me back in ten minutes",
    "the kids are playing in the garden",
    "I have to finish this report by friday",
    "it is getting cold outside",
    "have you read the new book yet",
    "I wonder what time the shop closes",
    "please remind me to water the plants",
    "take a nap",
    "open the door",
    "close your eyes",
    "turn around",
    "set the table for dinner",
    "the volume of the box is large",
    "a window seat would be nice",
    "the lights in the city are beautiful",
    "she opened a new bank account",
    "go to the store",
    "we made a copy of the key",
    "next week is fine",
    "play the piano",
    "stop it",
    "who is at the door",
    "I want to go to bed",
)
"""Speech that must not become a command; the last half come close to commands on purpose."""


@dataclass(frozen=True)
class Item:
    """One spoken clip and what it should give: an intent and slots, or nothing (None)."""

    text: str
    intent: str | None
    slots: dict[str, object]
    context: tuple[str, ...]
    mode: str
    voice: str
    path: Path


@dataclass
class Outcome:
    """One recognizer's result on one clip in one condition."""

    item: Item
    condition: str
    heard: str
    got: str | None  # the intent matched, None if rejected
    got_slots: dict[str, object]
    ms: float
    confidence: float | None = None

    @property
    def split(self) -> str:
        """ "dev" (thresholds are chosen on it) or "test" (they are reported on it): half the
        clips each, by the clip's hash, the same on every run."""
        return "dev" if int(self.item.path.stem[:8], 16) % 2 == 0 else "test"

    def refused_below(self, threshold: float) -> Outcome:
        """This outcome with its command refused when its confidence is under `threshold`."""
        if self.confidence is None or self.confidence >= threshold:
            return self
        return replace(self, got=None, got_slots={})

    @property
    def verdict(self) -> str:
        if self.item.intent is None:
            return "false_alarm" if self.got is not None else "rejected"
        if self.got is None:
            return "missed"
        right = self.got == self.item.intent and self.got_slots == self.item.slots
        return "right" if right else "wrong"


@dataclass
class Row:
    recognizer: str
    condition: str
    commands: int = 0
    right: int = 0
    wrong: int = 0
    missed: int = 0
    non_commands: int = 0
    false_alarms: int = 0
    median_ms: float = 0.0
    errors: list[str] = field(default_factory=list)


Heard = str | tuple[str, float]
"""A transcript, or a transcript and the recognizer's confidence in it (0..1)."""
Recognizer = Callable[[np.ndarray, Item], Heard]


# -- the evaluation set ----------------------------------------------------------------------


def voices() -> Iterator[tuple[str, str]]:
    """(engine, voice) pairs, espeak-ng and flite alternating, endlessly."""
    espeak = [("espeak", voice) for voice in ESPEAK_VOICES]
    flite = [("flite", voice) for voice in FLITE_VOICES if voice in flite_voices()]
    pairs = [p for pair in itertools.zip_longest(espeak, flite) for p in pair if p is not None]
    while True:
        yield from pairs


def intent_state(grammar: Grammar, name: str) -> tuple[tuple[str, ...], str]:
    """The context and mode in which an intent is heard."""
    intent = grammar.intents[name]
    modes = intent.modes
    mode = DEFAULT_MODE if ANY_MODE in modes or DEFAULT_MODE in modes else sorted(modes)[0]
    return tuple(sorted(intent.contexts))[:1], mode


def build_items(matcher: Matcher, per_intent: int, limit: int | None) -> list[Item]:
    """Commands (per_intent renderings of every intent, spread over its sentences), then the
    non-commands, each in the next voice. A non-command the grammars accept is an error."""
    grammar = matcher.grammar
    commands_said = [text for text in NON_COMMANDS if isinstance(matcher.match(text), CommandMatch)]
    if commands_said:
        raise SystemExit(f"NON_COMMANDS has commands of the grammars: {commands_said}")
    speakers = voices()
    items = []
    for name in grammar.intents:
        renderings = list(iter_examples(grammar, name, numbers="words", limit=64))
        step = max(1, len(renderings) // per_intent)
        context, mode = intent_state(grammar, name)
        for example in renderings[::step][:per_intent]:
            engine, voice = next(speakers)
            path = tts_wav(example.text, engine, variant=voice)
            slots = dict(example.slots)
            items.append(Item(example.text, name, slots, context, mode, voice, path))
    for text in NON_COMMANDS:
        engine, voice = next(speakers)
        items.append(
            Item(text, None, {}, (), DEFAULT_MODE, voice, tts_wav(text, engine, variant=voice))
        )
    return items[:limit] if limit else items


def conditions(noise_db: float | None) -> dict[str, Callable[[Path], np.ndarray]]:
    """Clean audio, and the same with pink noise, each clip with a little silence around it."""
    result = {"clean": lambda path: compose([0.2, path, 0.3])}
    if noise_db is not None:
        result[f"noise {noise_db:g} dB"] = lambda path: compose(
            [0.2, path, 0.3], noise_db=noise_db, seed=int(path.stem[:8], 16)
        )  # the clip's name is a hash of its text and voice: the same noise on every run
    return result


# -- recognizers -----------------------------------------------------------------------------


def ours(transcriber: Transcriber) -> Recognizer:
    return lambda audio, item: transcriber.transcribe(audio).text


def ours_constrained(transcriber: Transcriber, matcher: Matcher, beam: int) -> Recognizer:
    """Decoded within the active sentences; nothing refused here (min_confidence 0): the
    rejection rows apply a threshold to the confidence afterwards."""
    decoder = GrammarDecoder(transcriber, matcher, ConstrainedConfig(beam=beam, min_confidence=0))

    def recognize(audio: np.ndarray, item: Item) -> Heard:
        found = decoder.recognize(audio, item.context, item.mode)
        return found.text, found.confidence

    return recognize


def moonshine_ort(transcriber: Transcriber) -> Recognizer:
    import torch
    from transcribe import onnx_runner  # benchmarks/transcribe.py: the same ORT greedy loop

    config = transcriber.model.config
    run = onnx_runner(torch.get_num_threads(), config.decoder_start_token_id, config.eos_token_id)
    return lambda audio, item: transcriber.tokenizer.decode(
        run(audio, transcriber.budget(len(audio))).tokens
    )


def pocketsphinx_recognizer(jsgf: str | None = None) -> Recognizer:
    from pocketsphinx import Decoder

    decoder = Decoder(samprate=SAMPLE_RATE, loglevel="ERROR")
    if jsgf is not None:
        decoder.add_jsgf_string("commands", jsgf)
        decoder.activate_search("commands")

    def recognize(audio: np.ndarray, item: Item) -> str:
        pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16)
        decoder.start_utt()
        decoder.process_raw(pcm.tobytes(), full_utt=True)
        decoder.end_utt()
        hypothesis = decoder.hyp()
        return hypothesis.hypstr if hypothesis is not None else ""

    return recognize


def pronounceable() -> Callable[[str], bool]:
    from pocketsphinx import Decoder

    decoder = Decoder(samprate=SAMPLE_RATE, loglevel="ERROR")
    return lambda word: decoder.lookup_word(word) is not None


# -- the grammar as JSGF ---------------------------------------------------------------------


def spoken(token: str) -> str:
    """A normalised token as said: list entries keep numbers as digits ("2" -> "two")."""
    return number_to_words(int(token)) if token.isdigit() else token


class JsgfWriter:
    """Our grammar as a JSGF grammar: sentences, rules, lists and number ranges as alternatives.

    A sentence with a free-text slot or a word the dictionary lacks cannot be written and is left
    out (counted in `left_out`).
    """

    def __init__(self, grammar: Grammar, known: Callable[[str], bool]) -> None:
        self.grammar = grammar
        self.known = known
        self.defined: dict[str, str | None] = {}
        self.left_out = 0

    def write(self) -> str:
        intents = []
        for name, intent in self.grammar.intents.items():
            sentences = [self.node(s.expr, intent.slots) for s in intent.sentences]
            self.left_out += sentences.count(None)
            written = [s for s in sentences if s]
            if written:
                self.defined[f"intent_{name}"] = " | ".join(written)
                intents.append(f"<intent_{name}>")
        command = "(" + " | ".join(intents) + ")"
        wake = self.grammar.wake
        if wake is not None and (said := self.node(wake.expr, {})):
            command = f"{said} {command}" if wake.required else f"[{said}] {command}"
        rules = [f"public <command> = {command};"]
        rules += [f"<{name}> = {body};" for name, body in self.defined.items() if body]
        return "#JSGF V1.0;\ngrammar commands;\n" + "\n".join(rules) + "\n"

    def node(self, node: Node, slots: dict) -> str | None:
        if isinstance(node, Word):
            return node.text if self.known(node.text) else None
        if isinstance(node, Sequence):
            parts = [self.node(item, slots) for item in node.items]
            return None if None in parts else " ".join(p for p in parts if p)
        if isinstance(node, Alternative):
            options = [o for o in (self.node(o, slots) for o in node.options) if o is not None]
            return "(" + " | ".join(o or "<NULL>" for o in options) + ")" if options else None
        if isinstance(node, Optional):
            inner = self.node(node.item, slots)
            return f"[{inner}]" if inner else ""
        if isinstance(node, RuleRef):
            return self.define(f"rule_{node.name}", lambda: self.node(
                self.grammar.rules[node.name].expr, slots))  # fmt: skip
        if isinstance(node, SlotRef):
            return self.slot(slots.get(node.name, ListSlot(node.name)))
        raise TypeError(f"unknown grammar node {node!r}")

    def slot(self, slot_type: object) -> str | None:
        if isinstance(slot_type, ListSlot):
            entries = self.grammar.lists[slot_type.list_name].entries
            return self.define(f"list_{slot_type.list_name}", lambda: self.phrases(
                [" ".join(map(spoken, entry.tokens)) for entry in entries]))  # fmt: skip
        if isinstance(slot_type, RangeSlot):
            low, high = slot_type.low, slot_type.high
            return self.define(f"range_{low}_{high}".replace("-", "minus"), lambda: self.phrases(
                [number_to_words(n) for n in range(low, high + 1)]))  # fmt: skip
        return None  # free text: not expressible

    def phrases(self, phrases: list[str]) -> str | None:
        said = sorted({p for p in phrases if all(map(self.known, p.split()))})
        return " | ".join(said) or None

    def define(self, name: str, body: Callable[[], str | None]) -> str | None:
        if name not in self.defined:
            self.defined[name] = None  # a rule that refers to itself is not expressible
            self.defined[name] = body()
        return f"<{name}>" if self.defined[name] else None


# -- running and reporting -------------------------------------------------------------------


def evaluate(
    recognizers: dict[str, Recognizer],
    items: list[Item],
    audio_for: dict[str, Callable[[Path], np.ndarray]],
    matcher: Matcher,
) -> list[tuple[str, Outcome]]:
    """Every recognizer on every clip in every condition, recognizers interleaved per clip."""
    outcomes = []
    for condition, make in audio_for.items():
        for index, item in enumerate(items):
            audio = make(item.path)
            for name, recognize in recognizers.items():
                started = time.perf_counter()
                heard = recognize(audio, item)
                ms = (time.perf_counter() - started) * 1000
                heard, confidence = heard if isinstance(heard, tuple) else (heard, None)
                result = matcher.match(heard, context=item.context or None, mode=item.mode)
                matched = isinstance(result, CommandMatch)
                got = result.intent if matched else None
                got_slots = dict(result.slots) if matched else {}
                outcome = Outcome(item, condition, heard, got, got_slots, ms, confidence)
                outcomes.append((name, outcome))
            print(f"\r{condition}: {index + 1}/{len(items)}", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
    return outcomes


REJECTION_COST = 3.0
"""A false accept costs three times a missed or wrong command when the threshold is chosen."""


def choose_threshold(outcomes: list[Outcome]) -> float:
    """The confidence threshold with the fewest errors on these outcomes (the dev split): rate
    of commands not right plus REJECTION_COST times the rate of false accepts."""
    commands = [o for o in outcomes if o.item.intent is not None] or outcomes
    others = [o for o in outcomes if o.item.intent is None] or outcomes

    def cost(threshold: float) -> float:
        wrong = sum(o.refused_below(threshold).verdict != "right" for o in commands)
        accepted = sum(o.refused_below(threshold).verdict == "false_alarm" for o in others)
        return wrong / len(commands) + REJECTION_COST * accepted / len(others)

    candidates = sorted({0.0} | {o.confidence for o in outcomes if o.confidence is not None})
    return min(candidates, key=lambda t: (cost(t), t))


def with_rejection(
    outcomes: list[tuple[str, Outcome]], name: str
) -> tuple[float, list[tuple[str, Outcome]]]:
    """`name`'s outcomes refused below the threshold chosen on its dev split."""
    dev = [o for n, o in outcomes if n == name and o.split == "dev"]
    threshold = choose_threshold(dev)
    refused = [(f"{name}+rejection", o.refused_below(threshold)) for n, o in outcomes if n == name]
    return threshold, refused


def summarize(outcomes: list[tuple[str, Outcome]], split: str | None = None) -> list[Row]:
    """Rows per recognizer and condition, over one split ("dev", "test") or all clips."""
    rows: dict[tuple[str, str], Row] = {}
    times: dict[tuple[str, str], list[float]] = {}
    for name, outcome in outcomes:
        if split is not None and outcome.split != split:
            continue
        condition = outcome.condition if split is None else f"{outcome.condition}/{split}"
        key = (name, condition)
        row = rows.setdefault(key, Row(name, condition))
        times.setdefault(key, []).append(outcome.ms)
        verdict = outcome.verdict
        if outcome.item.intent is None:
            row.non_commands += 1
            row.false_alarms += verdict == "false_alarm"
        else:
            row.commands += 1
            row.right += verdict == "right"
            row.wrong += verdict == "wrong"
            row.missed += verdict == "missed"
        if verdict in ("wrong", "missed", "false_alarm"):
            expected = outcome.item.intent or "nothing"
            row.errors.append(
                f"{verdict:<11} said {outcome.item.text!r} ({outcome.item.voice}) -> heard "
                f"{outcome.heard!r} -> {outcome.got or 'rejected'} (expected {expected})"
            )
    for key, row in rows.items():
        row.median_ms = statistics.median(times[key])
    return list(rows.values())


def print_confidences(outcomes: list[Outcome]) -> None:
    """Histogram of the confidence of right commands, wrong ones and non-commands."""
    bins = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.01]
    groups = {
        "right": [o for o in outcomes if o.verdict == "right"],
        "wrong/missed": [o for o in outcomes if o.verdict in ("wrong", "missed")],
        "non-commands": [o for o in outcomes if o.item.intent is None],
    }
    print("confidence  " + " ".join(f"{low:>4.1f}" for low in bins[:-1]))
    for label, group in groups.items():
        values = [o.confidence or 0.0 for o in group]
        counts, _ = np.histogram(values, bins=bins)
        print(f"{label:<12}" + " ".join(f"{c:>4d}" for c in counts))


def percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:5.1f}%" if whole else "    -"


def print_table(rows: list[Row]) -> None:
    header = f"{'recognizer':<21} {'condition':<16} {'right':>6} {'wrong':>6} {'missed':>6} "
    print(header + f"{'false alarms':>12} {'median ms':>9}")
    for row in rows:
        print(
            f"{row.recognizer:<21} {row.condition:<16} {percent(row.right, row.commands):>6} "
            f"{percent(row.wrong, row.commands):>6} {percent(row.missed, row.commands):>6} "
            f"{percent(row.false_alarms, row.non_commands):>12} {row.median_ms:9.1f}"
        )
    ours = {row.condition: row for row in rows if row.recognizer == "ours"}
    for row in rows:
        base = ours.get(row.condition)
        if row.recognizer != "ours" and base and row.median_ms:
            ratio = base.median_ms / row.median_ms
            print(f"ours/{row.recognizer} time ({row.condition}): {ratio:.3f}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-intent", type=int, default=1, help="renderings of each intent")
    parser.add_argument("--noise-db", default="-35", help="pink noise level (dBFS), or off")
    parser.add_argument("--skip-ort", action="store_true", help="no moonshine-ort runs")
    parser.add_argument("--skip-sphinx", action="store_true", help="no pocketsphinx runs")
    parser.add_argument(
        "--skip-constrained", action="store_true", help="no grammar-constrained decoding runs"
    )
    parser.add_argument("--beam", type=int, default=4, help="constrained beam width")
    parser.add_argument("--limit", type=int, default=None, help="only the first N clips")
    parser.add_argument(
        "--json", nargs="?", const="-", metavar="PATH", help="also dump every outcome (- = stdout)"
    )
    args = parser.parse_args(argv)
    if args.per_intent < 1:
        parser.error("--per-intent must be at least 1")
    args.noise = None if args.noise_db == "off" else float(args.noise_db)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    grammar = load_grammar([resolve_grammar_path(name) for name in SHIPPED_GRAMMARS])
    matcher = Matcher(grammar)
    items = build_items(matcher, args.per_intent, args.limit)
    commands = sum(item.intent is not None for item in items)
    voices_used = sorted({item.voice for item in items})
    print(f"{commands} commands ({len(grammar.intents)} intents of {', '.join(SHIPPED_GRAMMARS)}) "
          f"and {len(items) - commands} non-commands; voices {', '.join(voices_used)}")  # fmt: skip

    transcriber = Transcriber(DecodeConfig(compile=True))
    recognizers = {"ours": ours(transcriber)}
    if not args.skip_constrained:
        recognizers["ours-constrained"] = ours_constrained(transcriber, matcher, args.beam)
    if not args.skip_ort:
        recognizers["moonshine-ort"] = moonshine_ort(transcriber)
    if not args.skip_sphinx:
        try:
            recognizers["pocketsphinx"] = pocketsphinx_recognizer()
        except ImportError:
            print("pocketsphinx is not installed (pip install pocketsphinx): skipped")
        else:
            writer = JsgfWriter(grammar, pronounceable())
            jsgf = writer.write()
            print(f"pocketsphinx-grammar: JSGF of {len(jsgf.splitlines())} lines; "
                  f"{writer.left_out} sentences left out (free text or unknown words)")  # fmt: skip
            recognizers["pocketsphinx-grammar"] = pocketsphinx_recognizer(jsgf)
    for recognize in recognizers.values():  # warm: first calls allocate
        recognize(load_audio(items[0].path), items[0])

    outcomes = evaluate(recognizers, items, conditions(args.noise), matcher)
    if "ours-constrained" in recognizers:
        threshold, refused = with_rejection(outcomes, "ours-constrained")
        outcomes += refused
        print(f"rejection threshold chosen on the dev split: confidence >= {threshold:.3f}")
        print_confidences([o for n, o in outcomes if n == "ours-constrained"])
    rows = summarize(outcomes)
    print_table(rows)
    print("\nthe test split alone (the threshold was chosen on the other half):")
    print_table(summarize(outcomes, "test"))
    for row in rows:
        if row.recognizer == "ours" and row.errors:
            print(f"\nours, {row.condition}: {len(row.errors)} errors")
            print("\n".join(f"  {error}" for error in row.errors))
    if args.json:
        dump = [{"recognizer": name, **asdict(o), "verdict": o.verdict} for name, o in outcomes]
        text = json.dumps(dump, default=str, indent=1)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

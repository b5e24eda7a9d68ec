"""The `.ort` graphs of `moonshine-cpp` must yield exactly transformers' Moonshine base weights.

Reference tests load them into `transformers.MoonshineForConditionalGeneration` and compare with
onnxruntime running the same files (numbers from shared/notes/weights.md).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import require, require_module

from moonshine_live.checkpoint import ort_weights
from moonshine_live.checkpoint.ort_weights import (
    INSTALL_HINT,
    MoonshineCppFiles,
    QuantizedTensor,
    dequantize_state_dict,
    locate_moonshine_cpp_files,
    read_ort_checkpoint,
    to_safetensors_dict,
)
from moonshine_live.errors import WeightsError

BECKETT_IDS = [1, 18274, 1898, 3926, 5229, 29892, 694, 4383, 1018, 1449, 4418, 1449, 4418, 2253]
BECKETT_IDS += [29889, 2]
"""Greedy fp32 tokens for beckett.wav, from onnxruntime and transformers alike (weights.md)."""
TOKENS_PER_SECOND = 6.5
ENCODER_TOLERANCE = 5e-4
"""Max abs encoder difference to onnxruntime (measured 1.5e-4 on values up to 6.8)."""
SAMPLE_RATE = 16_000
QUANTIZED_COUNT = 132
PARAMETER_COUNT = 61_513_920


@pytest.fixture(scope="module")
def cpp_files() -> MoonshineCppFiles:
    try:
        return locate_moonshine_cpp_files()
    except WeightsError as exc:
        require("moonshine-cpp", False, str(exc))
        raise


@pytest.fixture(scope="module")
def checkpoint(cpp_files: MoonshineCppFiles) -> dict[str, torch.Tensor | QuantizedTensor]:
    return read_ort_checkpoint(cpp_files.encoder, cpp_files.decoder)


@pytest.fixture(scope="module")
def hf_config():
    require_module("transformers")
    import transformers

    return transformers.MoonshineConfig(
        vocab_size=32768,
        hidden_size=416,
        intermediate_size=1664,
        encoder_num_hidden_layers=8,
        decoder_num_hidden_layers=8,
        encoder_num_attention_heads=8,
        decoder_num_attention_heads=8,
        encoder_num_key_value_heads=8,
        decoder_num_key_value_heads=8,
        partial_rotary_factor=0.62,
        max_position_embeddings=194,
        pad_head_dim_to_multiple_of=8,
    )


@pytest.fixture(scope="module")
def hf_model(hf_config, checkpoint):
    import transformers

    model = transformers.MoonshineForConditionalGeneration(hf_config)
    model.load_state_dict(dequantize_state_dict(to_safetensors_dict(checkpoint)), strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def beckett(cpp_files: MoonshineCppFiles) -> np.ndarray:
    require_module("soundfile")
    import soundfile

    audio, rate = soundfile.read(cpp_files.sample_wav, dtype="float32")
    assert rate == SAMPLE_RATE
    return audio[None, :]


def test_locate_finds_pinned_wheel(cpp_files: MoonshineCppFiles) -> None:
    assert cpp_files.version == "0.1.4"
    assert all(path.is_file() for path in cpp_files.paths())


def test_locate_without_package_names_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ort_weights.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(WeightsError, match=INSTALL_HINT):
        locate_moonshine_cpp_files()


def test_locate_rejects_file_of_wrong_size(
    cpp_files: MoonshineCppFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = {cpp_files.encoder.resolve(): cpp_files.encoder.stat().st_size - 100}
    monkeypatch.setattr(ort_weights, "_recorded_sizes", lambda: wrong)
    with pytest.raises(WeightsError, match=re.escape(str(cpp_files.encoder))):
        locate_moonshine_cpp_files()


def test_checkpoint_is_int8_plus_affine(checkpoint) -> None:
    quantized = [v for v in checkpoint.values() if isinstance(v, QuantizedTensor)]
    numel = sum(
        v.q.numel() if isinstance(v, QuantizedTensor) else v.numel() for v in checkpoint.values()
    )
    assert len(checkpoint) == 210
    assert len(quantized) == QUANTIZED_COUNT
    assert numel == PARAMETER_COUNT
    assert all(v.zero_point == round(v.zero_point) for v in quantized)
    assert checkpoint["model.decoder.layers.0.mlp.fc1.weight"].shape == (3328, 416)


@pytest.mark.needs_reference
def test_names_and_shapes_match_transformers(hf_config, checkpoint) -> None:
    import transformers

    with torch.device("meta"):
        reference = transformers.MoonshineForConditionalGeneration(hf_config).state_dict()
    shapes = {name: tuple(value.shape) for name, value in checkpoint.items()}
    expected = {
        n: tuple(v.shape) for n, v in reference.items() if n not in ort_weights.TIED_PARAMETERS
    }
    assert shapes == expected


def test_safetensors_round_trip(checkpoint) -> None:
    require_module("safetensors")
    from safetensors.torch import load, save

    flat = load(save(to_safetensors_dict(checkpoint)))
    name = "model.encoder.layers.0.self_attn.q_proj.weight"
    assert flat[name].dtype == torch.int8
    assert {name + "_scale", name + "_zero_point"} <= flat.keys()
    state = dequantize_state_dict(flat)
    assert torch.equal(state[name], checkpoint[name].dequantize())
    assert state["proj_out.weight"] is state["model.decoder.embed_tokens.weight"]
    assert len(state) == 211


def test_dequantize_passes_plain_float_dict_through() -> None:
    embed = torch.randn(4, 3)
    state = dequantize_state_dict({"model.decoder.embed_tokens.weight": embed}, torch.bfloat16)
    assert state["proj_out.weight"].dtype == torch.bfloat16
    assert torch.equal(state["proj_out.weight"], embed.to(torch.bfloat16))


@pytest.mark.parametrize("drop", ["a.weight_scale", "a.weight"])
def test_dequantize_rejects_incomplete_quantization(drop: str) -> None:
    flat = {
        "a.weight": torch.zeros(2, 2, dtype=torch.int8),
        "a.weight_scale": torch.tensor(0.5),
        "a.weight_zero_point": torch.tensor(1.0),
    }
    del flat[drop]
    with pytest.raises(WeightsError, match=r"my\.safetensors"):
        dequantize_state_dict(flat, source="my.safetensors")


def _graph(initializers: dict[str, np.ndarray], *nodes: tuple[str, str, tuple, tuple]):
    path = Path("synthetic.ort")
    built = tuple(ort_weights._Node(name, op, ins, outs) for name, op, ins, outs in nodes)
    return ort_weights._OrtGraph(path, initializers, built)


def _dequantize_nodes(offset: float) -> dict[str, np.ndarray]:
    q = np.arange(6, dtype=np.int8).reshape(2, 3)
    return {"q": q, "s": np.array([0.5], np.float32), "o": np.array([offset], np.float32)}


_CHAIN = (
    ("q_cast", "Cast", ("q",), ("qf",)),
    ("q_mul", "Mul", ("qf", "s"), ("qs",)),
    ("q_add", "Add", ("qs", "o"), ("w",)),
)


def test_int8_chain_maps_to_transposed_linear_weight() -> None:
    graph = _graph(_dequantize_nodes(-1.0), *_CHAIN, ("/fc/MatMul", "MatMul", ("x", "w"), ("y",)))
    weights = ort_weights._map_parameters(graph, "model.")
    weight = weights["model.fc.weight"]
    assert isinstance(weight, QuantizedTensor)
    assert weight.zero_point == 2.0
    expected = np.arange(6, dtype=np.float32).reshape(2, 3).T * 0.5 - 1.0
    assert torch.equal(weight.dequantize(), torch.from_numpy(expected))


def test_non_integer_zero_point_is_rejected() -> None:
    graph = _graph(_dequantize_nodes(-0.2), *_CHAIN, ("/fc/MatMul", "MatMul", ("x", "w"), ("y",)))
    with pytest.raises(WeightsError, match=r"synthetic\.ort: q offset"):
        ort_weights._map_parameters(graph, "model.")


def test_unmapped_initializer_is_named() -> None:
    stray = {"stray": np.ones(3, np.float32)}
    graph = _graph(stray, ("/act/Relu", "Relu", ("stray",), ("y",)))
    with pytest.raises(
        WeightsError, match=r"synthetic\.ort: initializers not mapped to a parameter: stray"
    ):
        ort_weights._map_parameters(graph, "")


@pytest.mark.parametrize("damage", ["truncated", "garbage", "missing"])
def test_damaged_ort_file_names_the_file(
    cpp_files: MoonshineCppFiles, tmp_path: Path, damage: str
) -> None:
    path = tmp_path / "encoder_model.ort"
    data = cpp_files.encoder.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(bytes(range(256)) * 64)
    with pytest.raises(WeightsError, match=str(path)):
        read_ort_checkpoint(path, cpp_files.decoder)


@pytest.mark.needs_reference
@pytest.mark.needs_reference
@pytest.mark.parametrize("part", ["encoder", "decoder"])
def test_our_ort_reader_agrees_with_onnxruntimes_generated_schema(cpp_files, part) -> None:
    """ort_format's field numbers against onnxruntime's own generated accessors, on every
    initializer (name, type, shape, bytes) and every node (name, op, inputs, outputs, and the
    subgraphs of the merged decoder's `If`)."""
    require_module("onnxruntime")
    from onnxruntime.tools.ort_format_model.ort_flatbuffers_py import fbs

    from moonshine_live.checkpoint import ort_format

    data = getattr(cpp_files, part).read_bytes()
    assert ort_format.has_identifier(data)
    ours = ort_format.read_graph(data)
    theirs = fbs.InferenceSession.InferenceSession.GetRootAs(data, 0).Model().Graph()
    subgraphs = 0

    def compare(ours, theirs) -> None:
        nonlocal subgraphs
        assert len(ours.initializers) == theirs.InitializersLength() > 0 or subgraphs
        for i, tensor in enumerate(ours.initializers):
            other = theirs.Initializers(i)
            assert tensor.name == other.Name().decode()
            assert tensor.data_type == other.DataType()
            assert list(tensor.dims) == list(other.DimsAsNumpy() if other.DimsLength() else [])
            raw = other.RawDataAsNumpy()
            assert tensor.raw_data.tobytes() == (b"" if isinstance(raw, int) else raw.tobytes())
            assert tensor.external_data_offset == other.ExternalDataOffset()
        assert len(ours.nodes) == theirs.NodesLength() > 0
        for i, node in enumerate(ours.nodes):
            other = theirs.Nodes(i)
            assert (node.name, node.op_type) == (other.Name().decode(), other.OpType().decode())
            assert node.inputs == tuple(
                other.Inputs(j).decode() for j in range(other.InputsLength())
            )
            assert node.outputs == tuple(
                other.Outputs(j).decode() for j in range(other.OutputsLength())
            )
            for j, attribute in enumerate(node.attributes):
                graph, other_graph = attribute.graph, other.Attributes(j).G()
                assert (graph is None) == (other_graph is None)
                if graph is not None:
                    subgraphs += 1
                    compare(graph, other_graph)

    compare(ours, theirs)
    assert subgraphs == (2 if part == "decoder" else 0)  # the merged decoder's If branches


def test_reading_ort_files_needs_no_onnxruntime(cpp_files, tmp_path) -> None:
    """In a fresh process where onnxruntime cannot be imported: the runtime reads the wheel."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['onnxruntime'] = None\n"
        "from moonshine_live.checkpoint.ort_weights import (\n"
        "    locate_moonshine_cpp_files, read_ort_checkpoint)\n"
        "f = locate_moonshine_cpp_files(); print(len(read_ort_checkpoint(f.encoder, f.decoder)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["210"]


def test_encoder_matches_onnxruntime(hf_model, cpp_files, beckett) -> None:
    require_module("onnxruntime")
    import onnxruntime

    session = onnxruntime.InferenceSession(str(cpp_files.encoder))
    (reference,) = session.run(None, {"input_values": beckett})
    with torch.inference_mode():
        ours = hf_model.get_encoder()(torch.from_numpy(beckett)).last_hidden_state
    assert ours.shape == reference.shape
    assert np.abs(ours.numpy() - reference).max() <= ENCODER_TOLERANCE


@pytest.mark.needs_reference
def test_greedy_generate_gives_reference_tokens(hf_model, beckett) -> None:
    max_new_tokens = int(TOKENS_PER_SECOND * beckett.shape[1] / SAMPLE_RATE)
    with torch.inference_mode():
        tokens = hf_model.generate(
            torch.from_numpy(beckett), max_new_tokens=max_new_tokens, do_sample=False
        )
    assert tokens[0].tolist() == BECKETT_IDS

"""Finding and loading checkpoints: embedded default, HF cache layout, and every way one breaks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from moonshine_live.checkpoint import embedded
from moonshine_live.checkpoint.weights import (
    Checkpoint,
    load_model,
    read_state_dict,
    resolve_checkpoint,
)
from moonshine_live.errors import WeightsError
from moonshine_live.model.config import MoonshineConfig

pytestmark = pytest.mark.needs_weights


@pytest.fixture(scope="module")
def default_checkpoint() -> Checkpoint:
    return resolve_checkpoint(None)


@pytest.fixture
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("MOONSHINE_LIVE_CACHE", str(cache))
    return cache


def copy_checkpoint(source: Checkpoint, target: Path) -> Path:
    shutil.copytree(source.directory, target)
    return target


def test_embedded_build_is_small_verified_and_complete(isolated_cache: Path) -> None:
    stages: list[tuple[str, float]] = []
    target = embedded.default_checkpoint_dir()
    embedded.build_default_checkpoint(target, progress=lambda s, f: stages.append((s, f)))
    assert target.parent == isolated_cache
    assert [f for _, f in stages] == sorted(f for _, f in stages) and stages[-1] == ("done", 1.0)
    assert embedded.verify_manifest(target) is None
    size_mb = (target / "model.safetensors").stat().st_size / 1e6
    assert 55 < size_mb < 70, f"int8 checkpoint should be about 62 MB, is {size_mb:.1f}"
    flat = load_file(str(target / "model.safetensors"))
    assert sum(t.dtype == torch.int8 for t in flat.values()) == 132
    assert list(isolated_cache.glob(".building-*")) == []


def test_killed_build_leaves_no_checkpoint(isolated_cache: Path) -> None:
    target = embedded.default_checkpoint_dir()

    def killed(stage: str, fraction: float) -> None:
        if stage == "building tokenizer":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        embedded.build_default_checkpoint(target, progress=killed)
    assert not target.exists()
    assert list(isolated_cache.glob(".building-*")) == []


def test_damaged_cache_is_rebuilt(isolated_cache: Path) -> None:
    target = embedded.ensure_default_checkpoint()
    weights = target / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert "checksum" in (embedded.verify_manifest(target) or "")
    assert embedded.ensure_default_checkpoint() == target
    assert embedded.verify_manifest(target) is None


def test_missing_directory_and_files_are_named(
    tmp_path: Path, default_checkpoint: Checkpoint
) -> None:
    with pytest.raises(WeightsError, match="no such checkpoint directory"):
        resolve_checkpoint(tmp_path / "nowhere")
    broken = copy_checkpoint(default_checkpoint, tmp_path / "ckpt")
    (broken / "tokenizer.json").unlink()
    with pytest.raises(WeightsError, match=r"ckpt: checkpoint is missing tokenizer.json"):
        resolve_checkpoint(broken)


def test_corrupt_safetensors_names_the_file(tmp_path: Path, default_checkpoint: Checkpoint) -> None:
    broken = copy_checkpoint(default_checkpoint, tmp_path / "ckpt")
    (broken / "model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(WeightsError, match=r"ckpt/model.safetensors: cannot read"):
        load_model(Checkpoint.open(broken))


def test_corrupt_config_names_the_file(tmp_path: Path, default_checkpoint: Checkpoint) -> None:
    broken = copy_checkpoint(default_checkpoint, tmp_path / "ckpt")
    (broken / "config.json").write_text("{")
    with pytest.raises(WeightsError, match=r"ckpt/config.json: not valid JSON"):
        Checkpoint.open(broken)


def test_wrong_shapes_name_the_tensor(tmp_path: Path, default_checkpoint: Checkpoint) -> None:
    broken = copy_checkpoint(default_checkpoint, tmp_path / "ckpt")
    MoonshineConfig.from_name("tiny").save(broken / "config.json")  # base weights, tiny shapes
    with pytest.raises(
        WeightsError,
        match=r"no place for.*has shape \(416, 1, 127\), the config needs \(288, 1, 127\)",
    ):
        load_model(Checkpoint.open(broken))


def test_missing_and_unexpected_tensors_are_listed(
    tmp_path: Path, default_checkpoint: Checkpoint
) -> None:
    state = read_state_dict(default_checkpoint.weights_path)
    state.pop("model.decoder.norm.weight")
    state["model.decoder.mystery.weight"] = torch.zeros(3)
    broken = copy_checkpoint(default_checkpoint, tmp_path / "ckpt")
    save_file(
        {k: v.contiguous() for k, v in state.items() if k != "proj_out.weight"},
        str(broken / "model.safetensors"),
    )
    with pytest.raises(WeightsError, match=r"unexpected tensors.*mystery"):
        load_model(Checkpoint.open(broken))
    state.pop("model.decoder.mystery.weight")
    save_file(
        {k: v.contiguous() for k, v in state.items() if k != "proj_out.weight"},
        str(broken / "model.safetensors"),
    )
    with pytest.raises(WeightsError, match=r"missing tensors \['decoder.norm.weight'\]"):
        load_model(Checkpoint.open(broken))


def test_hugging_face_cache_layout_by_repo_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, default_checkpoint: Checkpoint
) -> None:
    """A float32 checkpoint laid out as huggingface_hub caches it, found offline by repo id."""
    hub = tmp_path / "hub"
    repo = hub / "models--UsefulSensors--moonshine-base"
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    state = read_state_dict(default_checkpoint.weights_path)
    save_file(
        {k: v.contiguous() for k, v in state.items() if k != "proj_out.weight"},
        str(snapshot / "model.safetensors"),
    )
    shutil.copy(default_checkpoint.tokenizer_path, snapshot / "tokenizer.json")
    flat_config = MoonshineConfig.from_name("base").to_hf_dict()
    del flat_config["rope_parameters"]  # the published transformers 4 form
    (snapshot / "config.json").write_text(json.dumps(flat_config))
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    checkpoint = resolve_checkpoint("UsefulSensors/moonshine-base")
    assert checkpoint.directory == snapshot
    model = load_model(checkpoint)
    reference = load_model(default_checkpoint)
    for (name, a), (_, b) in zip(
        model.state_dict().items(), reference.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name

    with pytest.raises(WeightsError, match=r"not in the Hugging Face cache.*HF_HUB_OFFLINE"):
        resolve_checkpoint("UsefulSensors/moonshine-tiny")


def test_load_in_other_dtypes(default_checkpoint: Checkpoint) -> None:
    model = load_model(default_checkpoint, dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert not any(p.requires_grad for p in model.parameters())
    assert model.decoder.rotary.inv_freq.dtype == torch.float32

"""A local model folder's revision: a hash of its weights and configs alone."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from evoq_data.generation.spec import model_revision_of

# A trained model folder as `evoq-train grpo` leaves it (contents stand in for real ones).
MODEL = {"model.safetensors": b"\x01weights" * 64, "config.json": b'{"model_type": "qwen2_5_vl"}',
         "generation_config.json": b"{}", "tokenizer.json": b'{"v": 1}',
         "tokenizer_config.json": b"{}", "preprocessor_config.json": b"{}",
         "chat_template.jinja": b"{{ messages }}"}
BESIDE = {"README.md": b"# card", "evoq_train.json": b"{}", "training_args.bin": b"args",
          "checkpoint-1/model.safetensors": b"\x02older" * 64,
          "checkpoint-1/optimizer.pt": b"adam", "checkpoint-1/trainer_state.json": b"{}",
          "logs/events.out": b"log"}


def write(folder: Path, files: dict) -> Path:
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


def test_the_same_weights_have_one_revision_whatever_sits_beside_them(tmp_path):
    bare = model_revision_of(str(write(tmp_path / "bare", MODEL)))
    trained = write(tmp_path / "trained", {**MODEL, **BESIDE})
    assert bare.startswith("sha256:") and model_revision_of(str(trained)) == bare
    shutil.rmtree(trained / "checkpoint-1")  # deleting a checkpoint changes nothing
    (trained / "README.md").write_text("# another card")
    assert model_revision_of(str(trained)) == bare


@pytest.mark.parametrize("name", sorted(MODEL))
def test_a_changed_byte_of_weights_or_config_changes_the_revision(tmp_path, name):
    before = model_revision_of(str(write(tmp_path / "a", MODEL)))
    data = bytearray(MODEL[name])
    data[len(data) // 2] ^= 1
    after = model_revision_of(str(write(tmp_path / "b", {**MODEL, name: bytes(data)})))
    assert after.startswith("sha256:") and after != before


def test_a_folder_without_weights_or_config_has_no_revision(tmp_path):
    assert model_revision_of(str(write(tmp_path / "m", BESIDE | {"notes.txt": b"x"}))) == \
        "unknown"
    assert model_revision_of(str(tmp_path / "m"), revision="v2") == "v2"

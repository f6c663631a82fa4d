"""The student model: the offline tiny configuration, local folders without the network, the missing extra."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytest.importorskip("torch", reason="the trainer tests need the train extra: pip install -e '.[train]'")

NO_NETWORK = """
import socket

asked = []

def refuse(*args, **kwargs):
    asked.append(args[1:2] or args[:1])
    raise OSError("the network was asked for")

socket.socket.connect = socket.socket.connect_ex = refuse
socket.create_connection = socket.getaddrinfo = refuse
"""


def python(code: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    clean |= {"HF_HOME": str(tmp_path / "hf-home"), **env}  # an empty cache: nothing to fall back on
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          cwd=ROOT, env=clean, timeout=120, check=False)


def test_tiny_and_local_folders_load_without_the_network(tmp_path: Path):
    """With every socket call refused and no offline switch set, `tiny` is built and a saved checkpoint is
    loaded back from its folder; the hub is never asked."""
    proc = python(NO_NETWORK + f"""
from stepwise.pipeline.trainer.model import load_model
model, tokenizer = load_model("tiny", seed=3)
model.save_pretrained({str(tmp_path / "ckpt")!r})
tokenizer.save_pretrained({str(tmp_path / "ckpt")!r})
again, tok = load_model({str(tmp_path / "ckpt")!r})
assert type(tok).__name__ == "ByT5Tokenizer", type(tok)
assert tok("7 --> 7").input_ids == tokenizer("7 --> 7").input_ids
same = all((a == b).all() for a, b in zip(model.state_dict().values(), again.state_dict().values()))
print("loaded", type(again).__name__, same, "network asked", len(asked))
import urllib.request
try:  # the guard is live: anything that does reach for the network is caught and counted
    urllib.request.urlopen("https://huggingface.co/api/models/t5-small", timeout=1)
except OSError:
    pass
print("guard caught", len(asked))
""", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "loaded T5ForConditionalGeneration True network asked 0" in proc.stdout
    assert "guard caught 1" in proc.stdout


def test_the_same_seed_builds_the_same_tiny_model():
    from stepwise.pipeline.trainer.model import load_model

    a, _ = load_model("tiny", seed=5)
    b, _ = load_model("tiny", seed=5)
    c, _ = load_model("tiny", seed=6)
    assert all((x == y).all() for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert not all((x == y).all() for x, y in zip(a.state_dict().values(), c.state_dict().values(), strict=True))


def test_a_folder_that_is_not_a_model_is_a_clear_error(tmp_path: Path):
    from stepwise.pipeline.errors import TrainerError
    from stepwise.pipeline.trainer.model import load_model

    (tmp_path / "empty").mkdir()
    with pytest.raises(TrainerError, match="cannot load the model .* from the local folder"):
        load_model(str(tmp_path / "empty"))


def test_cuda_asked_for_without_a_gpu(monkeypatch: pytest.MonkeyPatch):
    import torch

    from stepwise.pipeline.errors import TrainerError
    from stepwise.pipeline.trainer.model import pick_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(TrainerError, match="--device cuda: torch sees no CUDA GPU"):
        pick_device("cuda")
    assert pick_device("auto") == ("cpu", "fp32") == pick_device("cpu")


def test_without_the_extra_the_error_names_it(tmp_path: Path, svamp_export: Path):
    """torch hidden from the interpreter: `stepwise train` exits 1 and says which extra to install."""
    proc = python(f"""
import sys
sys.modules["torch"] = None  # what an environment without the train extra looks like to `import torch`
from stepwise.pipeline.cli import main
sys.exit(main(["train", "--export", {str(svamp_export)!r}, "--out", {str(tmp_path / "out")!r}]))
""", tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "pip install 'stepwise-distill[train]'" in proc.stderr

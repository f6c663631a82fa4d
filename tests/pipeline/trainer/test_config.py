"""TrainConfig and SweepConfig rules: one parametrised case per rule, each naming its field and CLI flag."""

from __future__ import annotations

from pathlib import Path

import pytest

from stepwise.pipeline.errors import TrainConfigError
from stepwise.pipeline.trainer.config import (
    DEFAULT_EPOCHS,
    PRETRAINED_LR,
    TINY_LR,
    SweepConfig,
    TrainConfig,
    parse_fractions,
    parse_list,
)


@pytest.fixture
def export(tmp_path: Path) -> str:
    path = tmp_path / "export.parquet"
    path.write_bytes(b"")  # existence is all the config checks; reading is the data module's job
    return str(path)


def build(existing_export: str, **overrides) -> TrainConfig:
    return TrainConfig(**({"out": "out", "export": existing_export} | overrides))


RULES = [  # (overrides, field, flag, words in the message)
    ({"export": None}, "export", "--export", "either --export"),
    ({"job": "j", "corpus": "c"}, "export", "--export", "either --export"),
    ({"export": "/no/such/export.parquet"}, "export", "--export", "no such file"),
    ({"export": None, "job": "j", "corpus": None}, "corpus", "--corpus", "needs --corpus"),
    ({"out": ""}, "out", "--out", "required"),
    ({"task": "sorting"}, "task", "--task", "not one of"),
    ({"task": "custom"}, "task", "--task", "label set"),
    ({"mode": "lora"}, "mode", "--mode", "not one of"),
    ({"label_source": "human"}, "label_source", "--label-source", "not one of"),
    ({"alpha": 1.5}, "alpha", "--alpha", "between 0 and 1"),
    ({"alpha": float("nan")}, "alpha", "--alpha", "between 0 and 1"),
    ({"model": ""}, "model", "--model", "tiny"),
    ({"model": "/no/such/t5-base"}, "model", "--model", "no such folder"),
    ({"steps": 10, "epochs": 2.0}, "steps", "--steps", "not both"),
    ({"steps": 0}, "steps", "--steps", "positive"),
    ({"epochs": -1.0}, "epochs", "--epochs", "positive"),
    ({"batch_size": 0}, "batch_size", "--batch-size", "positive"),
    ({"eval_batch_size": 0}, "eval_batch_size", "--eval-batch-size", "positive"),
    ({"log_every": 0}, "log_every", "--log-every", "positive"),
    ({"max_source_len": 2}, "max_source_len", "--max-source-len", "at least 4"),
    ({"max_target_len": 0}, "max_target_len", "--max-target-len", "at least 4"),
    ({"lr": 0.0}, "lr", "--lr", "between 0 and 1"),
    ({"weight_decay": -0.1}, "weight_decay", "--weight-decay", "zero or positive"),
    ({"seed": -1}, "seed", "--seed", ">= 0"),
    ({"split_seed": -1}, "split_seed", "--split-seed", ">= 0"),
    ({"split": "0.8,0.3"}, "split", "--split", "three"),
    ({"split": (1.0, 0.0, 0.0)}, "split", "--split", "test fractions"),
    ({"fraction": 0.0}, "fraction", "--fractions", "(0, 1]"),
    ({"fraction": 1.5}, "fraction", "--fractions", "(0, 1]"),
    ({"device": "tpu"}, "device", "--device", "not one of"),
    ({"threads": 0}, "threads", "--threads", "positive"),
]


@pytest.mark.parametrize(("overrides", "field", "flag", "words"), RULES,
                         ids=[f"{r[1]}-{i}" for i, r in enumerate(RULES)])
def test_each_rule_names_its_field_and_flag(export: str, overrides: dict, field: str, flag: str, words: str):
    with pytest.raises(TrainConfigError) as info:
        build(export, **overrides)
    assert info.value.field == field
    message = str(info.value)
    assert message.startswith(f"{field} ({flag}): "), message
    assert words in message


def test_defaults_resolve_when_built(export: str, tmp_path: Path):
    config = build(export)
    assert (config.mode, config.label_source, config.alpha, config.model) == ("standard", "teacher", 0.5, "tiny")
    assert config.epochs == DEFAULT_EPOCHS and config.steps is None
    assert config.lr == TINY_LR
    assert config.split == (0.8, 0.1, 0.1)
    assert build(export, split="0.7,0.1,0.2").split == (0.7, 0.1, 0.2)
    assert build(export, steps=5).epochs is None
    local_model = tmp_path / "t5"
    local_model.mkdir()
    assert build(export, model=str(local_model)).lr == PRETRAINED_LR  # a pretrained model: the papers' rate
    assert build(export, lr=3e-3).lr == 3e-3
    job = TrainConfig(out="o", corpus="corpus", job="j")
    assert job.export is None and job.job == "j"


def test_every_field_has_help_text():
    from dataclasses import fields

    for f in fields(TrainConfig):
        assert len(TrainConfig.help(f.name)) > 10, f.name


SWEEP_RULES = [
    ({"modes": ()}, "modes", "--mode", "at least one"),
    ({"modes": ("standard", "lora")}, "modes", "--mode", "'lora' is not one of"),
    ({"modes": ("cot", "cot")}, "modes", "--mode", "twice"),
    ({"label_sources": ("gold", "human")}, "label_sources", "--label-source", "not one of"),
    ({"label_sources": ()}, "label_sources", "--label-source", "at least one"),
    ({"fractions": ()}, "fraction", "--fractions", "at least one"),
    ({"fractions": (0.5, 0.0)}, "fraction", "--fractions", "(0, 1]"),
    ({"fractions": (0.5, 0.5)}, "fraction", "--fractions", "twice"),
]


@pytest.mark.parametrize(("overrides", "field", "flag", "words"), SWEEP_RULES,
                         ids=[f"{r[1]}-{i}" for i, r in enumerate(SWEEP_RULES)])
def test_each_sweep_rule_names_its_field_and_flag(export: str, overrides: dict, field: str, flag: str,
                                                  words: str):
    with pytest.raises(TrainConfigError) as info:
        SweepConfig(build(export), **overrides)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field} ({flag}): ") and words in str(info.value)


def test_sweep_sorts_fractions(export: str):
    sweep = SweepConfig(build(export), modes=["cot", "standard"], fractions=[1.0, 0.25, 0.5])
    assert sweep.fractions == (0.25, 0.5, 1.0) and sweep.modes == ("cot", "standard")


@pytest.mark.parametrize(("text", "words"), [("standard,,cot", "empty item"), ("0.5,half", "expected numbers")])
def test_list_flags_name_the_flag(text: str, words: str):
    parse = parse_fractions if "half" in text else (lambda t: parse_list(t, "modes"))
    with pytest.raises(TrainConfigError) as info:
        parse(text)
    assert words in str(info.value) and "(--" in str(info.value)

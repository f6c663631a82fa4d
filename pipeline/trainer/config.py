"""What a student run needs to know, in one dataclass with help text per field, validated when it is built.

`TrainConfig` is one run (one mode, one label source, one data fraction); `SweepConfig` is a grid of runs for
the data-efficiency figure. Every rule raises `TrainConfigError` naming the field and its CLI flag, so
`stepwise train --alpha 2` says `alpha (--alpha): ...` and exits 2 before anything is read or written.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from stepwise.pipeline.errors import StepwiseError, TrainConfigError
from stepwise.pipeline.exports import parse_split
from stepwise.pipeline.tasks import TASKS

MODES = ("standard", "multitask", "cot")
LABEL_SOURCES = ("gold", "teacher")
DEVICES = ("auto", "cpu", "cuda")
TINY = "tiny"
DEFAULT_FRACTIONS = (0.125, 0.25, 0.5, 1.0)
DEFAULT_EPOCHS = 3.0
# a randomly initialised tiny model needs a large step; a pretrained T5 the Distilling step-by-step one
TINY_LR, PRETRAINED_LR = 1e-3, 5e-5

# CLI flags whose name is not the field's with dashes
_FLAGS = {"save_checkpoint": "--no-checkpoint", "fraction": "--fractions", "modes": "--mode",
          "label_sources": "--label-source"}


def flag(name: str) -> str:
    """The CLI flag of a config field."""
    return _FLAGS.get(name, "--" + name.replace("_", "-"))


def _bad(name: str, message: str) -> TrainConfigError:
    return TrainConfigError(f"{name} ({flag(name)}): {message}", field=name)


def _opt(default, help_text: str):
    return field(default=default, metadata={"help": help_text})


@dataclass(frozen=True)
class TrainConfig:
    """One student run: where the data is, what the student learns, how long, and where the results go."""

    out: str = field(metadata={"help": "folder for checkpoint/, train_log.jsonl, predictions.parquet, metrics.json"})
    export: str | None = _opt(None, "a `stepwise export --format parquet` file (.parquet or .jsonl with its "
                                    "columns), or the folder an export with --split wrote")
    corpus: str | None = _opt(None, "corpus root holding --job (a folder or an object-store URI)")
    job: str | None = _opt(None, "train on this job's accepted records, read from --corpus")
    task: str | None = _opt(None, "task kind for scoring; default: the job's own, or inferred from an export's "
                                  "gold labels")
    mode: str = _opt("standard", "standard: label only; multitask: `predict:` label + `explain:` rationale "
                                 "(Distilling step-by-step); cot: `<rationale> --> <label>` (Fine-tune-CoT)")
    label_source: str = _opt("teacher", "whose label the student learns: gold (standard fine-tuning) or teacher "
                                        "(distillation); the test split is always scored against gold")
    alpha: float = _opt(0.5, "multitask loss = alpha * label loss + (1 - alpha) * rationale loss")
    model: str = _opt(TINY, "`tiny` (an offline byte-level T5 built from a config), a local T5-family folder, "
                            "or a hub name")
    steps: int | None = _opt(None, "optimizer steps (give this or --epochs)")
    epochs: float | None = _opt(None, f"passes over the training pairs (default {DEFAULT_EPOCHS:g} when neither "
                                      f"--steps nor --epochs is given)")
    batch_size: int = _opt(8, "training pairs per step (multitask: records, each giving both tasks)")
    eval_batch_size: int = _opt(32, "test examples per generate call")
    lr: float | None = _opt(None, f"AdamW learning rate, decayed linearly to 0 (default {TINY_LR:g} for tiny, "
                                  f"{PRETRAINED_LR:g} for a pretrained model)")
    weight_decay: float = _opt(0.0, "AdamW weight decay")
    max_source_len: int = _opt(512, "input tokens kept (longer inputs are cut)")
    max_target_len: int = _opt(256, "target tokens kept in training, and most tokens generated in evaluation")
    seed: int = _opt(0, "seed of the model's initialisation, the batch order and the data fraction")
    split: tuple[float, float, float] | str = _opt((0.8, 0.1, 0.1), "train,valid,test fractions for a single "
                                                   "export file or a job (a split export folder keeps its own)")
    split_seed: int = _opt(0, "seed of the example split; the same as `stepwise export --seed` gives the same split")
    fraction: float = _opt(1.0, "share of the training examples used (nested: a smaller share is a subset)")
    device: str = _opt("auto", "auto (cuda with bf16 when present, else cpu fp32), cpu or cuda")
    threads: int | None = _opt(None, "CPU threads for torch (default: torch's own choice)")
    log_every: int = _opt(10, "print a loss line every this many steps (every step goes to train_log.jsonl)")
    save_checkpoint: bool = _opt(True, "write checkpoint/ (model and tokenizer, loadable offline)")
    quiet: bool = _opt(False, "no progress lines")

    def __post_init__(self) -> None:
        if (self.export is None) == (self.job is None):
            raise _bad("export", "give either --export PATH or --corpus DIR --job ID")
        if self.export is not None and not Path(self.export).exists():
            raise _bad("export", f"no such file or folder: {self.export}")
        if self.job is not None and not self.corpus:
            raise _bad("corpus", "--job needs --corpus")
        if not self.out:
            raise _bad("out", "an output folder is required")
        kinds = (*TASKS.names(), "auto")
        if self.task is not None and self.task not in kinds:
            raise _bad("task", f"{self.task!r} is not one of {', '.join(kinds)}")
        if self.task == "custom" and self.export is not None:
            raise _bad("task", "custom needs its label set: train from the job (--corpus/--job), whose spec has it")
        if self.mode not in MODES:
            raise _bad("mode", f"{self.mode!r} is not one of {', '.join(MODES)}")
        if self.label_source not in LABEL_SOURCES:
            raise _bad("label_source", f"{self.label_source!r} is not one of {', '.join(LABEL_SOURCES)}")
        if not (isinstance(self.alpha, int | float) and 0.0 <= self.alpha <= 1.0):
            raise _bad("alpha", f"must be between 0 and 1, got {self.alpha!r}")
        if not self.model:
            raise _bad("model", "give `tiny`, a local folder or a hub name")
        if self.model.startswith(("/", "./", "../", "~")) and not Path(self.model).expanduser().is_dir():
            raise _bad("model", f"no such folder: {self.model} (local models are folders; nothing is downloaded)")
        if self.steps is not None and self.epochs is not None:
            raise _bad("steps", "give --steps or --epochs, not both")
        if self.steps is not None and not (isinstance(self.steps, int) and self.steps >= 1):
            raise _bad("steps", f"must be a positive whole number, got {self.steps!r}")
        if self.epochs is not None and not (math.isfinite(self.epochs) and self.epochs > 0):
            raise _bad("epochs", f"must be a positive number, got {self.epochs!r}")
        if self.steps is None and self.epochs is None:
            object.__setattr__(self, "epochs", DEFAULT_EPOCHS)
        for name in ("batch_size", "eval_batch_size", "log_every"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise _bad(name, f"must be a positive whole number, got {value!r}")
        for name in ("max_source_len", "max_target_len"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 4):
                raise _bad(name, f"must be a whole number of at least 4 tokens, got {value!r}")
        if self.lr is None:
            object.__setattr__(self, "lr", TINY_LR if self.model == TINY else PRETRAINED_LR)
        if not (math.isfinite(self.lr) and 0 < self.lr < 1):
            raise _bad("lr", f"must be between 0 and 1, got {self.lr!r}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise _bad("weight_decay", f"must be zero or positive, got {self.weight_decay!r}")
        for name in ("seed", "split_seed"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 0):
                raise _bad(name, f"must be a whole number >= 0, got {getattr(self, name)!r}")
        try:
            split = parse_split(self.split) if isinstance(self.split, str) else parse_split(
                ",".join(str(p) for p in self.split))
        except (StepwiseError, TypeError) as exc:
            raise _bad("split", str(exc).split(": ", 1)[-1]) from None
        if split is None or split[0] == 0 or split[2] == 0:
            raise _bad("split", "the train and test fractions must both be above 0")
        object.__setattr__(self, "split", split)
        if not (math.isfinite(self.fraction) and 0 < self.fraction <= 1):
            raise _bad("fraction", f"each fraction must be in (0, 1], got {self.fraction!r}")
        if self.device not in DEVICES:
            raise _bad("device", f"{self.device!r} is not one of {', '.join(DEVICES)}")
        if self.threads is not None and not (isinstance(self.threads, int) and self.threads >= 1):
            raise _bad("threads", f"must be a positive whole number, got {self.threads!r}")

    @classmethod
    def help(cls, name: str) -> str:
        """A field's help text (the CLI's `--help` shows the same words)."""
        return next(f.metadata["help"] for f in fields(cls) if f.name == name)

    @classmethod
    def default(cls, name: str):
        """A field's default (the CLI's defaults are these)."""
        return next(f.default for f in fields(cls) if f.name == name)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


@dataclass(frozen=True)
class SweepConfig:
    """A data-efficiency sweep: every mode x label source x fraction, each a `TrainConfig` run from `base`."""

    base: TrainConfig
    modes: tuple[str, ...] = MODES
    label_sources: tuple[str, ...] = ("teacher",)
    fractions: tuple[float, ...] = DEFAULT_FRACTIONS

    def __post_init__(self) -> None:
        for name, allowed in (("modes", MODES), ("label_sources", LABEL_SOURCES)):
            values = tuple(getattr(self, name))
            if not values:
                raise _bad(name, "give at least one")
            if bad := [v for v in values if v not in allowed]:
                raise _bad(name, f"{bad[0]!r} is not one of {', '.join(allowed)}")
            if len(set(values)) != len(values):
                raise _bad(name, f"{list(values)} names one twice")
            object.__setattr__(self, name, values)
        fractions = tuple(self.fractions)
        if not fractions:
            raise _bad("fraction", "give at least one")
        for f in fractions:
            if not (isinstance(f, int | float) and math.isfinite(f) and 0 < f <= 1):
                raise _bad("fraction", f"each fraction must be in (0, 1], got {f!r}")
        if len(set(fractions)) != len(fractions):
            raise _bad("fraction", f"{list(fractions)} names one twice")
        object.__setattr__(self, "fractions", tuple(sorted(fractions)))


def parse_list(text: str, name: str) -> tuple[str, ...]:
    """`standard,cot` -> ("standard", "cot"); empty parts are an error naming the flag."""
    parts = tuple(p.strip() for p in text.split(","))
    if not all(parts):
        raise _bad(name, f"{text!r} has an empty item")
    return parts


def parse_fractions(text: str) -> tuple[float, ...]:
    """`0.125,0.25,0.5,1.0` -> floats; checked again (range, duplicates) by SweepConfig."""
    try:
        return tuple(float(p) for p in parse_list(text, "fraction"))
    except ValueError:
        raise _bad("fraction", f"{text!r}: expected numbers such as 0.125,0.25,0.5,1.0") from None

"""The student trainer (`stepwise train`): T5-family students trained on the corpus four ways, scored with the
task's own comparator, and a data-efficiency sweep.

    standard   label only: gold labels = standard fine-tuning, teacher labels = standard distillation
    multitask  Distilling step-by-step: `predict:` -> label and `explain:` -> rationale, one weighted loss
    cot        Fine-tune-CoT: `<rationale> --> <label>`, the answer read back after the arrow

Modules: `config` (TrainConfig, SweepConfig), `data` (records, splits, pairs), `model` (T5 by name or local
folder, the offline `tiny` one), `train` (`main(config)`), `evaluate` (generation and scoring), `sweep`.
torch, transformers and matplotlib (the `train` extra) are imported only when a run starts.
"""

from stepwise.pipeline.trainer.config import MODES, SweepConfig, TrainConfig
from stepwise.pipeline.trainer.sweep import sweep
from stepwise.pipeline.trainer.train import main

__all__ = ["MODES", "SweepConfig", "TrainConfig", "main", "sweep"]

"""Train one student on the corpus and score it: `main(config)` reads top to bottom.

    data -> pairs for the mode -> model -> AdamW steps (loss per step to train_log.jsonl) -> checkpoint
    -> greedy generation on the test split -> predictions.parquet, metrics.json

Everything lands in `config.out`. Multitask steps run both tasks on the same records and log the label loss,
the rationale loss and their alpha-weighted sum separately.
"""

from __future__ import annotations

import json
import math
import sys
import time
from contextlib import nullcontext
from pathlib import Path

from stepwise.pipeline.errors import TrainerError
from stepwise.pipeline.trainer.config import TrainConfig
from stepwise.pipeline.trainer.data import Pair, build_train_set, load_data
from stepwise.pipeline.trainer.evaluate import evaluate, write_json, write_predictions
from stepwise.pipeline.trainer.model import import_train_deps, load_model, pick_device

LOG_FILE, METRICS_FILE, PREDICTIONS_FILE, CHECKPOINT_DIR = ("train_log.jsonl", "metrics.json",
                                                            "predictions.parquet", "checkpoint")


def _tokenize(tokenizer, pairs: list[Pair], max_source_len: int, max_target_len: int) -> tuple[list, list]:
    """Token ids of every source and target, once, before the loop."""
    sources = tokenizer([p.source for p in pairs], max_length=max_source_len, truncation=True)["input_ids"]
    targets = tokenizer([p.target for p in pairs], max_length=max_target_len, truncation=True)["input_ids"]
    return sources, targets


def _batch(torch, tokens: tuple[list, list], index: list[int], pad_id: int, device: str) -> dict:
    """Pad one batch; padded target positions are -100 so the loss ignores them."""
    sources, targets = tokens
    src = [sources[i] for i in index]
    tgt = [targets[i] for i in index]
    width, depth = max(map(len, src)), max(map(len, tgt))
    input_ids = torch.tensor([s + [pad_id] * (width - len(s)) for s in src])
    labels = torch.tensor([t + [-100] * (depth - len(t)) for t in tgt])
    return {"input_ids": input_ids.to(device), "attention_mask": (input_ids != pad_id).long().to(device),
            "labels": labels.to(device)}


def _say(config: TrainConfig, text: str) -> None:
    if not config.quiet:
        print(text, file=sys.stderr, flush=True)


def main(config: TrainConfig) -> dict:
    """Train one student and evaluate it; returns the metrics, also written to `<out>/metrics.json`."""
    torch, _ = import_train_deps()
    started = time.perf_counter()

    # ── data: split by example, so no question is both trained on and tested ─────────────────────────────────
    data = load_data(config)
    train = build_train_set(data.train, config.mode, config.label_source)
    if not train.label:
        raise TrainerError(f"{data.source}: no training pairs for mode {config.mode} with {config.label_source} "
                           f"labels ({train.skipped_no_label} records without that label, "
                           f"{train.skipped_no_rationale} without a rationale)")
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(config.to_json() + "\n", encoding="utf-8")

    # ── device, seeds, model ─────────────────────────────────────────────────────────────────────────────────
    device, precision = pick_device(config.device)
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    model, tokenizer = load_model(config.model, config.seed)
    model.to(device)
    # bf16 autocast on a GPU keeps fp32 master weights (T5 overflows in fp16; bf16 has fp32's range)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if precision == "bf16" else nullcontext()

    label_tokens = _tokenize(tokenizer, train.label, config.max_source_len, config.max_target_len)
    rationale_tokens = (_tokenize(tokenizer, train.rationale, config.max_source_len, config.max_target_len)
                        if train.rationale is not None else None)
    n = len(train.label)
    steps = config.steps or max(1, math.ceil(config.epochs * n / config.batch_size))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    # linear decay to zero: the Hugging Face Trainer's default, which the Distilling step-by-step code trains with
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: max(0.0, 1 - s / steps))
    _say(config, f"train {config.mode} ({config.label_source} labels) on {data.source}: {train.examples} examples, "
                 f"{n} pairs, {steps} steps of {config.batch_size}, {device} {precision}, model {config.model}")

    # ── the loop: a seeded permutation per epoch, one optimizer step per batch ───────────────────────────────
    generator = torch.Generator().manual_seed(config.seed)
    order: list[int] = []
    pad_id = tokenizer.pad_token_id
    log_rows: list[dict] = []
    model.train()
    train_started = time.perf_counter()
    with (out / LOG_FILE).open("w", encoding="utf-8") as log:
        for step in range(1, steps + 1):
            while len(order) < config.batch_size:
                order += torch.randperm(n, generator=generator).tolist()
            index, order = order[:config.batch_size], order[config.batch_size:]
            row = {"step": step, "lr": scheduler.get_last_lr()[0]}
            with autocast:
                label_loss = model(**_batch(torch, label_tokens, index, pad_id, device)).loss
                if rationale_tokens is not None:
                    # Distilling step-by-step: both tasks of the same records, one weighted loss
                    rationale_loss = model(**_batch(torch, rationale_tokens, index, pad_id, device)).loss
                    loss = config.alpha * label_loss + (1 - config.alpha) * rationale_loss
                    row |= {"label_loss": label_loss.item(), "rationale_loss": rationale_loss.item()}
                else:
                    loss = label_loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            row |= {"loss": loss.item(), "seconds": round(time.perf_counter() - train_started, 3)}
            log.write(json.dumps(row) + "\n")
            log_rows.append(row)
            if step % config.log_every == 0 or step == steps:
                parts = "".join(f" {k.removesuffix('_loss')} {row[k]:.4f}" for k in ("label_loss", "rationale_loss")
                                if k in row)
                _say(config, f"step {step}/{steps} loss {row['loss']:.4f}{parts}")
    train_seconds = time.perf_counter() - train_started

    # ── checkpoint: model and tokenizer, loadable again with --model <out>/checkpoint, offline ───────────────
    if config.save_checkpoint:
        model.save_pretrained(out / CHECKPOINT_DIR)
        tokenizer.save_pretrained(out / CHECKPOINT_DIR)

    # ── evaluation: the label task only, scored against gold with the task's own comparator ──────────────────
    eval_started = time.perf_counter()
    rows = evaluate(model, tokenizer, data.test, data.task, config.mode, device=device, precision=precision,
                    batch_size=config.eval_batch_size, max_source_len=config.max_source_len,
                    max_new_tokens=config.max_target_len)
    write_predictions(rows, out / PREDICTIONS_FILE)
    correct = sum(r["correct"] for r in rows)

    def last(key: str) -> float | None:  # the mean of the last ten steps: the loss the run ended at, less noisy
        values = [r[key] for r in log_rows[-10:] if key in r]
        return sum(values) / len(values) if values else None

    metrics = {
        "accuracy": correct / len(rows), "correct": correct, "n": len(rows), "mode": config.mode,
        "label_source": config.label_source, "alpha": config.alpha if config.mode == "multitask" else None,
        "fraction": config.fraction, "task": data.task.kind, "source": data.source, "model": config.model,
        "steps": steps, "batch_size": config.batch_size, "lr": config.lr,
        "train_examples": train.examples, "train_pairs": n, "skipped_no_label": train.skipped_no_label,
        "skipped_no_rationale": train.skipped_no_rationale, "test_skipped_no_gold": data.test_skipped_no_gold,
        "records_by_split": data.counts, "first_loss": log_rows[0]["loss"], "final_loss": last("loss"),
        "final_label_loss": last("label_loss"), "final_rationale_loss": last("rationale_loss"),
        "device": device, "precision": precision, "train_seconds": round(train_seconds, 3),
        "eval_seconds": round(time.perf_counter() - eval_started, 3),
        "seconds": round(time.perf_counter() - started, 3),
        "checkpoint": str(out / CHECKPOINT_DIR) if config.save_checkpoint else None,
    }
    write_json(metrics, out / METRICS_FILE)
    return metrics

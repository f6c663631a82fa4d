"""`stepwise train`: a T5 student on an export or a corpus job, scored on gold; several modes, label sources or
`--fractions` make a data-efficiency sweep. Flags, defaults and help come from `TrainConfig`."""

from __future__ import annotations

import argparse
from pathlib import Path


NAMES = ("train",)  # the commands this module adds


def cmd_train(args: argparse.Namespace) -> int:
    from stepwise.pipeline.trainer import SweepConfig, TrainConfig, main, sweep
    from stepwise.pipeline.trainer.config import parse_fractions, parse_list
    from stepwise.pipeline.trainer.sweep import pivot

    modes, sources = parse_list(args.mode, "mode"), parse_list(args.label_source, "label_source")
    corpus = args.corpus or ("corpus" if args.job else None)
    base = TrainConfig(
        out=args.out, export=args.export, corpus=corpus, job=args.job, task=args.task, mode=modes[0],
        label_source=sources[0], alpha=args.alpha, model=args.model, steps=args.steps, epochs=args.epochs,
        batch_size=args.batch_size, eval_batch_size=args.eval_batch_size, lr=args.lr, weight_decay=args.weight_decay,
        max_source_len=args.max_source_len, max_target_len=args.max_target_len, seed=args.seed, split=args.split,
        split_seed=args.split_seed, device=args.device, threads=args.threads, log_every=args.log_every,
        save_checkpoint=not args.no_checkpoint, quiet=args.quiet)
    if args.fractions is None and len(modes) == 1 and len(sources) == 1:
        say_trained(main(base), args.out)
        return 0
    fractions = parse_fractions(args.fractions) if args.fractions else (1.0,)
    rows = sweep(SweepConfig(base, modes, sources, fractions))
    print(pivot(rows))
    print(f"table {Path(args.out) / 'sweep.md'}, plot {Path(args.out) / 'sweep.png'}")
    return 0


def say_trained(m: dict, out: str) -> None:
    print(f"{m['mode']} ({m['label_source']} labels): accuracy {m['accuracy']:.2%} ({m['correct']} / {m['n']} "
          f"test examples, scored against gold); final loss {m['final_loss']:.4f}; results in {out}")


def add_parsers(sub) -> None:
    from stepwise.pipeline.trainer.config import DEVICES, TrainConfig, flag

    tr = sub.add_parser("train", help="train a T5 student on an export or a corpus job and score it (the train "
                                      "extra); several modes, label sources or --fractions make a sweep")

    def opt(name: str, more: str = "", **kw) -> None:  # flag, default and help text come from TrainConfig
        help_text = (TrainConfig.help(name) + more).replace("%", "%%")
        tr.add_argument(flag(name), default=TrainConfig.default(name), help=help_text, **kw)

    opt("export")
    opt("corpus", " (default ./corpus with --job)")
    opt("job")
    opt("task")
    opt("out", "; a sweep adds sweep.csv, sweep.md, sweep.png", required=True)
    opt("mode", "; a comma list makes a sweep")
    opt("label_source", "; a comma list makes a sweep")
    opt("alpha", type=float)
    opt("model")
    opt("steps", type=int)
    opt("epochs", type=float)
    opt("batch_size", type=int)
    opt("eval_batch_size", type=int)
    opt("lr", type=float)
    opt("weight_decay", type=float)
    opt("max_source_len", type=int)
    opt("max_target_len", type=int)
    opt("seed", type=int)
    tr.add_argument("--split", default=",".join(f"{p:g}" for p in TrainConfig.default("split")),
                    help=TrainConfig.help("split"))
    opt("split_seed", type=int)
    tr.add_argument("--fractions", help="data fractions for a sweep, e.g. 0.125,0.25,0.5,1.0 (each mode is trained "
                                        "at each; nested subsets of the training examples)")
    opt("device", choices=DEVICES)
    opt("threads", type=int)
    opt("log_every", type=int)
    tr.add_argument("--no-checkpoint", action="store_true", help="do not write checkpoint/ (sweeps of big models)")
    tr.add_argument("--quiet", action="store_true", help=TrainConfig.help("quiet"))
    tr.set_defaults(func=cmd_train)

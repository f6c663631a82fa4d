"""`stepwise serve` (the REST job service) and `stepwise sim` (the teacher simulator, a test and demo tool)."""

from __future__ import annotations

import argparse
from pathlib import Path

from stepwise.pipeline.cli.console import err
from stepwise.pipeline.cli.jobs import CORPUS_HELP
from stepwise.pipeline.errors import StepwiseError


NAMES = ("serve", "sim")  # the commands this module adds


def cmd_sim(args: argparse.Namespace) -> int:
    import asyncio
    import os

    from stepwise.pipeline.sim import SimConfig, parse_faults, serve

    api_key = os.environ.get(args.api_key_env) if args.api_key_env else None
    if args.api_key_env and not api_key:
        raise StepwiseError(f"--api-key-env {args.api_key_env}: that environment variable is not set")
    try:
        config = SimConfig(latency_s=args.latency, per_token_s=args.per_token, jitter_s=args.jitter,
                           capacity=args.capacity, rpm=args.rpm, tpm=args.tpm, window_s=args.window,
                           faults=parse_faults(args.faults),
                           stall_s=args.stall, api_key=api_key, supports_n=not args.no_n, answers=args.answers,
                           dataset=args.dataset, wrong_rate=args.wrong_rate, seed=args.seed,
                           batch_delay_s=args.batch_delay, batch_fail_rate=args.batch_fail_rate,
                           batch_expire=args.batch_expire, reasoning=args.reasoning)
    except ValueError as exc:  # a flag out of range, an unknown fault kind or reasoning style
        raise StepwiseError(f"stepwise sim: {exc}") from None

    def ready(port: int) -> None:
        if args.port_file:
            tmp = Path(args.port_file + ".tmp")
            tmp.write_text(str(port))
            tmp.replace(args.port_file)
        print(f"stepwise sim listening on http://{args.host}:{port}/v1", flush=True)

    try:
        try:
            import uvloop

            uvloop.run(serve(config, args.host, args.port, ready))
        except ImportError:
            asyncio.run(serve(config, args.host, args.port, ready))
    except KeyboardInterrupt:
        pass
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from stepwise.api.app import create_app  # lazily: the other commands never load FastAPI
    from stepwise.api.settings import LOOPBACK, ServiceSettings

    settings = ServiceSettings.load(corpus=args.corpus, host=args.host, port=args.port, state_dir=args.state_dir,
                                    data_dirs=tuple(args.data_dir) if args.data_dir else None,
                                    upload_dir=args.upload_dir, teachers=args.teachers)
    host = settings.host
    if settings.token is None:
        if host != LOOPBACK:
            err.print(f"[yellow]--host {host} ignored:[/] STEPWISE_API_TOKEN is not set")
        host = LOOPBACK
        err.print(f"no STEPWISE_API_TOKEN: requests are not authenticated, so the server listens on {LOOPBACK} only")
    app = create_app(settings)
    roots = ", ".join(str(r) for r in app.state.service.admission.roots.roots)
    err.print(f"stepwise serve: corpus {settings.corpus}, http://{host}:{settings.port} (docs at /docs); jobs may "
              f"read files in {roots}", markup=False)
    uvicorn.run(app, host=host, port=settings.port, log_level=args.log_level)
    return 0


def add_parsers(sub) -> None:
    serve = sub.add_parser("serve", help="the REST job service (FastAPI); auth by $STEPWISE_API_TOKEN; every flag "
                                         "has a STEPWISE_* variable (see the README)")
    serve.add_argument("--corpus", help=CORPUS_HELP + " ($STEPWISE_CORPUS)")
    serve.add_argument("--host", help="address to listen on, default 127.0.0.1 (loopback only without a token)")
    serve.add_argument("--port", type=int, help="default 8000")
    serve.add_argument("--state-dir", help="local folder for job spec, pid and log files (default <corpus>/jobs; "
                                           "required for an object-store corpus)")
    serve.add_argument("--data-dir", action="append", metavar="DIR",
                       help="a folder whose files REST jobs may read (repeatable; $STEPWISE_DATA_DIRS, ':'-separated)")
    serve.add_argument("--upload-dir", help="where uploaded datasets go (default <state dir>/uploads)")
    serve.add_argument("--teachers", help="the teacher profiles file ($STEPWISE_TEACHERS); see the README")
    serve.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    serve.set_defaults(func=cmd_serve)

    sim = sub.add_parser("sim", help="an OpenAI-compatible teacher simulator (a test tool)")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=0, help="0 picks a free port")
    sim.add_argument("--port-file", help="write the bound port to this file once listening")
    sim.add_argument("--latency", type=float, default=0.5, help="fixed seconds per request")
    sim.add_argument("--per-token", type=float, default=0.0, help="extra seconds per output token")
    sim.add_argument("--jitter", type=float, default=0.0, help="+/- seconds of uniform jitter")
    sim.add_argument("--capacity", type=int, default=128, help="requests served at once; the rest queue")
    sim.add_argument("--rpm", type=int, help="requests per minute (sliding 60 s window)")
    sim.add_argument("--tpm", type=int, help="tokens per minute (prompt estimate + n * max_tokens)")
    sim.add_argument("--window", type=float, default=60.0, help="rate-limit window in seconds (tests shorten it)")
    sim.add_argument("--faults", help="rates, e.g. error_500=0.05,error_503=0.05,drop=0.02,stall=0.05,"
                                      "malformed=0.05,truncated=0.05,garbage=0.02")
    sim.add_argument("--stall", type=float, default=30.0, help="seconds a stalled request hangs")
    sim.add_argument("--api-key-env", help="require the key held by this environment variable")
    sim.add_argument("--no-n", action="store_true", help="refuse n > 1 like servers without it")
    sim.add_argument("--answers", help="completions file (replay format) to answer from")
    sim.add_argument("--dataset", help="labeled JSONL {id, question, answer} for task-aware answers")
    sim.add_argument("--wrong-rate", type=float, default=0.1, help="share of task-aware answers that are wrong")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--batch-delay", type=float, default=2.0, help="seconds until a batch (/v1/batches) completes")
    sim.add_argument("--batch-fail-rate", type=float, default=0.0, help="share of batch lines that fail")
    sim.add_argument("--batch-expire", action="store_true", help="the first batch expires with no output")
    sim.add_argument("--reasoning", default="none", metavar="STYLE",
                     help="answer like a reasoning model, a thinking trace then \\boxed{answer}; STYLE puts the "
                          "trace in message.reasoning (field), in message.reasoning_content (reasoning_content), "
                          "between <think> tags in the content (inline), or in the content with only </think> "
                          "(prefilled); none (default): no trace")
    sim.set_defaults(func=cmd_sim)

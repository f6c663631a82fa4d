"""docker-compose.yml, the Dockerfile and the sample jobs of deploy/jobs, checked without a Docker engine.

The files parse; the services, profiles, shared corpus volume and healthchecks are there; and every command a
container runs exists and parses with the real parser: `stepwise ...` with the CLI's argparse parser, `ray ...`
with Ray's own click commands, `python -c` one-liners with `compile`. A `sh -c` script runs for real under
/bin/sh with stand-ins for the image's programs on an otherwise empty PATH; each stand-in records its
arguments, which then go through the same parsers (so an unknown program, or a typo in a flag, fails).
vLLM cannot be installed here (it needs a CUDA GPU), so `vllm serve` flags are held to the ones this stack uses.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from stepwise.pipeline.cli import build_parser
from stepwise.pipeline.spec import load_job

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
JOBS = ROOT / "deploy" / "jobs"

# the values the sample environment gives the variables a user must set (everything else takes its default)
SAMPLE_ENV = {"STEPWISE_API_TOKEN": "sample-api-token", "RAY_AUTH_TOKEN": "sample-ray-token",
              "VLLM_MODEL": "/models/Qwen2.5-7B-Instruct"}
REQUIRED_VARIABLES = {"STEPWISE_API_TOKEN", "RAY_AUTH_TOKEN"}  # `${VAR:?}`: compose refuses to start without them
SERVICES = {"api", "ray-head", "ray-worker", "vllm", "sim"}
PROFILES = {"vllm": ["gpu"], "sim": ["offline"]}
CLUSTER = ("api", "ray-head", "ray-worker")  # the services that read and write the corpus
# programs on the PATH of each image (the stepwise image: the project's console script, ray, Python)
STEPWISE_PROGRAMS = {"stepwise", "ray", "python", "python3"}
VLLM_PROGRAMS = {"vllm", "python3"}
VLLM_IMAGE = "vllm/vllm-openai"
# `vllm serve` flags this stack uses, as documented in vLLM's CLI reference (vLLM is not installable here)
VLLM_SERVE_FLAGS = {"--host", "--port", "--served-model-name", "--generation-config", "--api-key", "--max-model-len",
                    "--tensor-parallel-size", "--gpu-memory-utilization", "--dtype", "--download-dir"}


# ── compose variable interpolation ────────────────────────────────────────────────────────────────────────────

class MissingVariable(Exception):
    """A `${VAR:?message}` whose variable is not set."""


_REFERENCE = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_][A-Za-z0-9_]*))")
_BRACED = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>.*))?", re.S)


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable interpolation: `$$`, `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`,
    `${VAR:?error}`, `${VAR?error}`, `${VAR:+alt}`, `${VAR+alt}`."""

    def one(m: re.Match) -> str:
        if m["escaped"]:
            return "$"
        if m["named"]:
            return env.get(m["named"], "")
        ref = _BRACED.fullmatch(m["braced"])
        if ref is None:
            raise ValueError(f"invalid interpolation format: {m[0]!r}")
        name, op, arg = ref["name"], ref["op"] or "", ref["arg"] or ""
        value = env.get(name)
        present = value is not None and (value != "" or not op.startswith(":"))
        if op.endswith("-"):
            return value if present else arg
        if op.endswith("?"):
            if not present:
                raise MissingVariable(f"{name}: {arg}")
            return value
        if op.endswith("+"):
            return arg if present else ""
        return value or ""

    return _REFERENCE.sub(one, text)


def interpolate_tree(node, env: dict[str, str]):
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [interpolate_tree(v, env) for v in node]
    if isinstance(node, dict):
        return {k: interpolate_tree(v, env) for k, v in node.items()}
    return node


@cache
def raw_compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


@cache
def compose() -> dict:
    return interpolate_tree(raw_compose(), SAMPLE_ENV)


def service(name: str) -> dict:
    return compose()["services"][name]


def environment(svc: dict) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


# ── running commands: sh -c scripts with stand-ins, then the real parsers ─────────────────────────────────────

def programs_of(svc: dict) -> set[str]:
    if "build" in svc:
        return STEPWISE_PROGRAMS
    if svc.get("image", "").startswith(VLLM_IMAGE + ":"):
        return VLLM_PROGRAMS
    raise AssertionError(f"image {svc.get('image')!r}: not one this test knows the programs of")


def run_script(script: str, programs: set[str], env: dict[str, str], tmp: Path) -> list[list[str]]:
    """Run a `sh -c` script with a stand-in for each program (and nothing else on the PATH); returns the argv
    of every program it ran."""
    stubs = tmp / "bin"
    stubs.mkdir(parents=True, exist_ok=True)
    log = tmp / "calls.jsonl"
    log.unlink(missing_ok=True)
    for name in programs:
        stub = stubs / name
        stub.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                        f"with open(os.environ['STUB_LOG'], 'a') as f:\n"
                        f"    f.write(json.dumps([os.path.basename(sys.argv[0])] + sys.argv[1:]) + '\\n')\n")
        stub.chmod(0o755)
    proc = subprocess.run(["/bin/sh", "-c", script], env={**env, "PATH": str(stubs), "STUB_LOG": str(log)},
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, f"`sh -c {script!r}` failed ({proc.returncode}): {proc.stderr.strip()}"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def invocations(argv: list[str], programs: set[str], env: dict[str, str], tmp: Path) -> list[list[str]]:
    """The programs a container command (or healthcheck) runs, each as an argv."""
    if Path(argv[0]).name in ("sh", "bash") and len(argv) >= 3 and argv[1] == "-c":
        calls = run_script(argv[2], programs, env, tmp)
        assert calls, f"the script {argv[2]!r} runs no program"
        return calls
    return [argv]


def healthcheck_argv(svc: dict) -> list[str]:
    test = svc["healthcheck"]["test"]
    if isinstance(test, str):
        return ["/bin/sh", "-c", test]
    kind, *rest = test
    assert kind in ("CMD", "CMD-SHELL"), f"healthcheck {test!r}: expected CMD or CMD-SHELL"
    return rest if kind == "CMD" else ["/bin/sh", "-c", rest[0]]


def command_argv(svc: dict) -> list[str]:
    def as_list(value) -> list[str]:
        if value is None:
            return []
        return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]

    argv = as_list(svc.get("entrypoint")) + as_list(svc.get("command"))
    if not argv and "build" in svc:
        argv = dockerfile_exec_form("CMD")
    assert argv, "no command: the image's default would run, which this test cannot see"
    return argv


@cache
def ray_cli():
    scripts = pytest.importorskip("ray.scripts.scripts", reason="ray (the `ray` extra) is not installed")
    return scripts.cli


def parse_stepwise(args: list[str]):
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            return build_parser().parse_args(args)
    except SystemExit:
        raise AssertionError(f"stepwise {' '.join(args)}: {err.getvalue().strip()}") from None


def parse_ray(args: list[str]) -> dict:
    import click

    command, rest, words = ray_cli(), list(args), ["ray"]
    while isinstance(command, click.Group):
        assert rest, f"{' '.join(words)}: no subcommand"
        name, rest = rest[0], rest[1:]
        words.append(name)
        sub = command.commands.get(name)
        assert sub is not None, f"{' '.join(words)}: no such ray command"
        command = sub
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return command.make_context(name, rest).params
    except click.ClickException as exc:
        raise AssertionError(f"{' '.join(words)} {' '.join(rest)}: {exc.format_message()}") from None


def parse_vllm(args: list[str]) -> dict[str, str]:
    assert args[:1] == ["serve"], f"vllm {' '.join(args)}: expected `vllm serve MODEL ...`"
    assert len(args) > 1 and args[1] and not args[1].startswith("-"), "vllm serve: the model comes first"
    flags, rest = {}, args[2:]
    while rest:
        flag = rest.pop(0)
        assert flag in VLLM_SERVE_FLAGS, f"vllm serve: {flag!r} is not one of the flags this stack knows"
        assert rest and not rest[0].startswith("--"), f"vllm serve {flag}: no value"
        flags[flag] = rest.pop(0)
    return {"model": args[1], **flags}


def check_invocation(argv: list[str], programs: set[str]):
    """Parse one program's argv with its real parser; returns what the parser made of it."""
    program = Path(argv[0]).name
    assert program in programs, f"{program!r} is not a program of this image (it has {sorted(programs)})"
    if program == "stepwise":
        return parse_stepwise(argv[1:])
    if program == "ray":
        return parse_ray(argv[1:])
    if program in ("python", "python3"):
        assert argv[1:2] == ["-c"] and len(argv) == 3, f"{argv!r}: only `python -c CODE` is expected here"
        try:
            return compile(argv[2], f"<{program} -c>", "exec")
        except SyntaxError as exc:
            raise AssertionError(f"{program} -c {argv[2]!r}: {exc}") from None
    if program == "vllm":
        return parse_vllm(argv[1:])
    raise AssertionError(f"no parser for {program!r}")


def local_urls(argv: list[str]) -> list[tuple[int, str]]:
    """(port, path) of each http://127.0.0.1 or localhost URL in a command."""
    found = re.findall(r"https?://(?:127\.0\.0\.1|localhost):(\d+)(/[^'\"\s)]*)?", " ".join(argv))
    return [(int(port), path or "/") for port, path in found]


@cache
def parsed_commands() -> dict[str, list[tuple[list[str], object]]]:
    """Every service's command, as (argv, parsed) for each program it runs (scripts run once, here)."""
    import tempfile

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, svc in compose()["services"].items():
            progs, env = programs_of(svc), environment(svc)
            calls = invocations(command_argv(svc), progs, env, Path(tmp) / name)
            out[name] = [(argv, check_invocation(argv, progs)) for argv in calls]
    return out


def listen_ports(name: str) -> set[int]:
    """The ports a service's programs listen on, as their parsers read the commands."""
    ports = set()
    for argv, parsed in parsed_commands()[name]:
        program = Path(argv[0]).name
        if program == "stepwise" and hasattr(parsed, "port"):
            ports.add(parsed.port)
        elif program == "ray":
            ports |= {parsed[k] for k in ("port", "dashboard_port", "dashboard_agent_listen_port")
                      if parsed.get(k) and (k != "port" or parsed.get("head"))}
        elif program == "vllm":
            ports.add(int(parsed["--port"]))
    return ports


def ray_start(name: str) -> dict:
    starts = [p for argv, p in parsed_commands()[name] if argv[:2] == ["ray", "start"]]
    assert len(starts) == 1, f"{name}: expected one `ray start`, got {len(starts)}"
    return starts[0]


def stepwise_command(name: str, command: str):
    found = [p for argv, p in parsed_commands()[name] if Path(argv[0]).name == "stepwise" and p.command == command]
    assert len(found) == 1, f"{name}: expected one `stepwise {command}`"
    return found[0]


def bind_mounts(svc: dict) -> dict[str, Path]:
    """Container path -> host path of each bind mount (sources that are paths, relative to the compose file)."""
    out = {}
    for spec in svc.get("volumes", []):
        source, target = spec.split(":")[:2]
        if source.startswith((".", "/", "~")):
            out[target] = (COMPOSE.parent / source).resolve()
    return out


def host_path(svc: dict, container_path: str) -> Path | None:
    for target, source in bind_mounts(svc).items():
        if container_path == target or container_path.startswith(target.rstrip("/") + "/"):
            return source / Path(container_path).relative_to(target)
    return None


# ── Dockerfile ─────────────────────────────────────────────────────────────────────────────────────────────────

@cache
def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, pending = [], ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        instruction, _, args = full.partition(" ")
        out.append((instruction.upper(), args.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    froms = [i for i, (ins, _) in enumerate(dockerfile()) if ins == "FROM"]
    return dockerfile()[froms[-1]:]


def dockerfile_exec_form(instruction: str) -> list[str]:
    found = [args for ins, args in final_stage() if ins == instruction]
    assert len(found) == 1, f"expected one {instruction} in the final stage"
    args = found[0]
    if instruction == "HEALTHCHECK":
        args = args[args.index("CMD ") + 4:]
    argv = json.loads(args)  # the exec form (a JSON array): no shell between Docker and the program
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv)
    return argv


def dockerignore() -> set[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return {line.strip().rstrip("/") for line in lines if line.strip() and not line.lstrip().startswith("#")}


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


# ── the checks ─────────────────────────────────────────────────────────────────────────────────────────────────

def test_compose_parses_with_the_services_and_profiles():
    services = compose()["services"]
    assert set(services) == SERVICES
    for name, svc in services.items():
        assert svc.get("profiles") == PROFILES.get(name), f"{name}: profiles {svc.get('profiles')}"


def test_only_the_secrets_are_required():
    """`${VAR:?}` stops every `docker compose` command, whatever the profile: only the two tokens may use it
    (a required VLLM_MODEL would break `--profile offline`)."""
    env: dict[str, str] = {}
    while True:  # set each variable compose asks for, until it asks for none
        try:
            interpolate_tree(raw_compose(), env)
            break
        except MissingVariable as exc:
            name = str(exc).split(":")[0]
            assert name not in env
            env[name] = "sample"
    assert set(env) == REQUIRED_VARIABLES


def test_every_service_has_a_healthcheck():
    for name, svc in compose()["services"].items():
        check = svc.get("healthcheck")
        assert check and not check.get("disable"), f"{name}: no healthcheck"
        assert check["test"] not in (["NONE"], "NONE"), f"{name}: healthcheck disabled"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_commands_exist_and_parse(name):
    assert parsed_commands()[name], f"{name} runs nothing"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_healthchecks_exist_parse_and_ask_the_right_port(name, tmp_path):
    svc = service(name)
    progs = programs_of(svc)
    calls = invocations(healthcheck_argv(svc), progs, environment(svc), tmp_path)
    for argv in calls:
        check_invocation(argv, progs)
        for port, _ in local_urls(argv):
            assert port in listen_ports(name), f"{name}: the healthcheck asks port {port}, it listens on " \
                                               f"{sorted(listen_ports(name))}"


def test_healthcheck_urls_are_real_endpoints():
    """The unauthenticated endpoints the healthchecks ask: the API's /healthz, the simulator's /v1/models,
    the Ray node agent's raylet check (public under Ray's token authentication)."""
    from stepwise.api.routes.health import router
    from stepwise.pipeline.sim import SimConfig, build_app

    api_paths = {r.path for r in router.routes}
    sim_paths = {r.resource.canonical for r in build_app(SimConfig()).router.routes() if r.method == "GET"}
    expected = {"api": api_paths, "sim": sim_paths, "vllm": {"/health"}}
    for name, paths in expected.items():
        urls = local_urls(healthcheck_argv(service(name)))
        assert urls and all(path in paths for _, path in urls), f"{name}: {urls} not in {sorted(paths)}"
    urls = local_urls(healthcheck_argv(service("ray-worker")))
    assert urls and all(path in ray_agent_public_paths() for _, path in urls)


def ray_agent_public_paths() -> list[str]:
    """`PUBLIC_EXACT_PATHS` of Ray's node agent, read from its source: importing the module needs the dashboard
    extras of `ray[default]`, which the image installs but the test setup does not."""
    import ast
    import importlib.util

    spec = importlib.util.find_spec("ray.dashboard.http_server_agent")
    assert spec is not None and spec.origin, "ray is not installed"
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "PUBLIC_EXACT_PATHS" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError("Ray's node agent no longer defines PUBLIC_EXACT_PATHS")


def test_servers_listen_on_all_interfaces():
    """Other containers reach these by service name, so none may listen on loopback only."""
    assert stepwise_command("api", "serve").host == "0.0.0.0"
    assert stepwise_command("sim", "sim").host == "0.0.0.0"
    (vllm,) = [p for argv, p in parsed_commands()["vllm"]]
    assert vllm["--host"] == "0.0.0.0"


def test_api_requires_its_token_and_joins_the_ray_cluster():
    env = raw_compose()["services"]["api"]["environment"]
    assert str(env["STEPWISE_API_TOKEN"]).startswith("${STEPWISE_API_TOKEN:?")
    head = ray_start("ray-head")
    assert head["head"] and head["block"], "ray-head must be a head that stays in the foreground"
    address = f"ray-head:{head['port']}"
    assert environment(service("api"))["RAY_ADDRESS"] == address, "jobs find the cluster by $RAY_ADDRESS"
    api = ray_start("api")
    assert api["address"] == address and not api["block"], "the api joins the cluster, then serves"
    assert api["num_cpus"] == 0, "shards must run on the workers, not next to the API"
    worker = ray_start("ray-worker")
    assert worker["address"] == address and worker["block"]
    for name in CLUSTER:  # Ray's token authentication: the same settings on every node and driver
        env = environment(service(name))
        assert env.get("RAY_AUTH_MODE") == "token" and env.get("RAY_AUTH_TOKEN") == SAMPLE_ENV["RAY_AUTH_TOKEN"]


def test_corpus_volume_is_shared_at_one_path():
    assert "corpus" in compose().get("volumes", {})
    paths = set()
    for name in CLUSTER:
        mounts = [v.split(":")[1] for v in service(name).get("volumes", []) if v.split(":")[0] == "corpus"]
        assert len(mounts) == 1, f"{name} does not mount the corpus volume"
        paths.add(mounts[0])
    assert paths == {stepwise_command("api", "serve").corpus}, "Ray workers write where the driver reads"


def test_volumes_are_declared_and_bind_mounts_exist():
    declared = set(compose().get("volumes") or {})
    for name, svc in compose()["services"].items():
        for spec in svc.get("volumes", []):
            source = spec.split(":")[0]
            if not source.startswith((".", "/", "~")):
                assert source in declared, f"{name}: volume {source!r} is not declared"
    jobs = bind_mounts(service("api"))
    assert jobs.get("/data/jobs") == JOBS and service("api")["working_dir"] == "/data/jobs"
    dataset = stepwise_command("sim", "sim").dataset
    assert host_path(service("sim"), dataset).is_file(), f"sim --dataset {dataset}: not in a mounted folder"


def test_ray_workers_scale():
    worker = service("ray-worker")
    assert "container_name" not in worker and "ports" not in worker and "hostname" not in worker


def test_published_ports():
    assert [p.split(":")[-1] for p in service("api")["ports"]] == [str(stepwise_command("api", "serve").port)]
    for spec in service("ray-head").get("ports", []):  # the dashboard submits Ray jobs: never on all interfaces
        assert spec.startswith("127.0.0.1:"), spec
    for name in ("ray-worker", "sim", "vllm"):
        assert "ports" not in service(name), f"{name} is reached over the compose network only"


def test_vllm_runs_on_a_gpu_from_a_pinned_image(tmp_path):
    svc = service("vllm")
    image, _, tag = svc["image"].partition(":")
    assert image == VLLM_IMAGE and re.fullmatch(r"v\d+\.\d+\.\d+", tag), svc["image"]
    devices = svc["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)
    (parsed,) = [p for _, p in parsed_commands()["vllm"]]
    assert parsed["model"] == SAMPLE_ENV["VLLM_MODEL"] and parsed["--served-model-name"] == "Qwen2.5-7B-Instruct"
    assert parsed["--generation-config"] == "vllm", "sampling must come from the job alone"
    # a Hugging Face id, extra engine flags, and the name given explicitly
    env = environment(svc) | {"VLLM_MODEL": "Qwen/Qwen2.5-7B-Instruct", "VLLM_ARGS": "--max-model-len 8192"}
    (argv,) = invocations(command_argv(svc), VLLM_PROGRAMS, env, tmp_path)
    parsed = parse_vllm(argv[1:])
    assert parsed["--served-model-name"] == "Qwen2.5-7B-Instruct" and parsed["--max-model-len"] == "8192"
    env = environment(svc) | {"VLLM_SERVED_MODEL_NAME": "teacher"}
    (argv,) = invocations(command_argv(svc), VLLM_PROGRAMS, env, tmp_path)
    assert parse_vllm(argv[1:])["--served-model-name"] == "teacher"


def test_vllm_without_a_model_stops_with_a_message(tmp_path):
    with pytest.raises(AssertionError, match="set VLLM_MODEL"):
        invocations(command_argv(service("vllm")), VLLM_PROGRAMS, environment(service("vllm")) | {"VLLM_MODEL": ""},
                    tmp_path)


def test_builds_use_the_dockerfile_with_existing_extras():
    extras = set(pyproject()["project"]["optional-dependencies"])
    images = set()
    for name, svc in compose()["services"].items():
        build = svc.get("build")
        if build is None:
            continue
        build = {"context": build} if isinstance(build, str) else build
        context = (COMPOSE.parent / build.get("context", ".")).resolve()
        assert context == ROOT, f"{name}: build context {context}"
        assert (context / build.get("dockerfile", "Dockerfile")).resolve() == DOCKERFILE and DOCKERFILE.is_file()
        wanted = set(build.get("args", {}).get("EXTRAS", "ray").split(","))
        assert "ray" in wanted and wanted <= extras - {"test"}, f"{name}: extras {wanted}"
        images.add(svc["image"])
    assert len(images) == 1, f"the stepwise services must share one image: {images}"


def test_no_secret_values_in_the_compose_file():
    secretish = re.compile(r"TOKEN|KEY|SECRET|PASSWORD|CREDENTIAL", re.I)
    for name, svc in raw_compose()["services"].items():
        for key, value in (svc.get("environment") or {}).items():
            if secretish.search(key):
                assert re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*(:?[-?][^}]*)?\}", str(value)), \
                    f"{name}: {key} must be a ${{VAR}} reference, not a value"
                assert not re.fullmatch(r"\$\{\w+:?-.+\}", str(value)), f"{name}: {key} has a default value"
    text = COMPOSE.read_text(encoding="utf-8")
    assert not re.search(r"\b(sk-[A-Za-z0-9_-]{16,}|hf_[A-Za-z0-9]{16,}|[0-9a-f]{40,})\b", text)


# ── Dockerfile ─────────────────────────────────────────────────────────────────────────────────────────────────

def test_dockerfile_bases_and_user():
    froms = [args.split()[0] for ins, args in dockerfile() if ins == "FROM"]
    assert froms and all(f == "python:3.11-slim" for f in froms), froms
    users = [args for ins, args in final_stage() if ins == "USER"]
    assert users and users[-1] not in ("root", "0"), "the image runs as a non-root user"


def test_dockerfile_copies_existing_sources_and_every_package():
    ignored = dockerignore()
    copied = set()
    for ins, args in dockerfile():
        if ins not in ("COPY", "ADD") or "--from=" in args:
            continue
        *sources, _ = [a for a in shlex.split(args) if not a.startswith("--")]
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"
            assert Path(source).parts[0] not in ignored, f"COPY {source}: excluded by .dockerignore"
            copied.add(Path(source).parts[0])
    packages = set(pyproject()["tool"]["setuptools"]["package-dir"].values())  # the folders installed
    readme = pyproject()["project"]["readme"]
    assert packages | {"pyproject.toml", readme} <= copied, f"not copied: {packages | {readme} - copied}"


def test_dockerignore_keeps_local_state_out():
    assert {".git", ".venv", "corpus", "exports", ".env", "models"} <= dockerignore()


def test_dockerfile_extras_and_requirements(tmp_path):
    args = dict(a.partition("=")[::2] for ins, a in dockerfile() if ins == "ARG")
    extras = set(args["EXTRAS"].split(","))
    assert "ray" in extras and "test" not in extras and extras <= set(pyproject()["project"]["optional-dependencies"])
    codes = []
    for ins, run in dockerfile():
        if ins == "RUN" and "python -c" in run:
            words = shlex.split(run)
            codes += [words[i + 1] for i, w in enumerate(words[:-1]) if w == "-c"]
    assert codes
    for code in codes:
        compile(code, "<Dockerfile RUN python -c>", "exec")
    # the one that lists the dependencies, run against the real pyproject.toml
    (listing,) = [c for c in codes if "pyproject.toml" in c]
    out = subprocess.run([sys.executable, "-c", listing], cwd=ROOT, env={**os.environ, "EXTRAS": args["EXTRAS"]},
                         capture_output=True, text=True, check=True).stdout.splitlines()
    project = pyproject()["project"]
    assert out == project["dependencies"] + [r for e in args["EXTRAS"].split(",")
                                             for r in project["optional-dependencies"][e]]


def test_dockerfile_cmd_and_healthcheck_parse():
    cmd = dockerfile_exec_form("CMD")
    serve = check_invocation(cmd, STEPWISE_PROGRAMS)
    assert serve.command == "serve" and serve.host == "0.0.0.0"
    health = dockerfile_exec_form("HEALTHCHECK")
    check_invocation(health, STEPWISE_PROGRAMS)
    assert local_urls(health) == [(serve.port, "/healthz")]


# ── sample jobs ────────────────────────────────────────────────────────────────────────────────────────────────

TEACHERS = JOBS / "teachers.yaml"  # the profiles the api service declares (STEPWISE_TEACHERS)
SAMPLE_JOBS = sorted(p for p in JOBS.glob("*.yaml") if p != TEACHERS)


def compose_job(path: Path):
    """A sample job as the api container runs it: its teacher profile from teachers.yaml."""
    from stepwise.pipeline.admission import TeacherProfiles, apply_profile

    spec = load_job(path)
    return spec.model_copy(update={"teacher": apply_profile(spec.teacher, TeacherProfiles.load(TEACHERS),
                                                            strict=True)})


def test_there_is_a_sample_job_per_teacher():
    hosts = {urlsplit(compose_job(path).teacher.base_url).hostname for path in SAMPLE_JOBS}
    assert hosts == {"sim", "vllm"}


@pytest.mark.parametrize("path", SAMPLE_JOBS, ids=lambda p: p.name)
def test_sample_jobs_load_and_point_at_the_compose_teachers(path):
    spec = compose_job(path)  # a valid job file, and a valid REST job under the compose profiles
    assert Path(spec.dataset.path).is_file() and Path(spec.dataset.path).parent == JOBS, \
        "datasets live beside the job (the folder mounted at /data/jobs)"
    assert spec.executor.kind == "ray" and spec.executor.address is None, "the cluster comes from $RAY_ADDRESS"
    url = urlsplit(spec.teacher.base_url)
    assert url.scheme == "http" and url.hostname in SERVICES and url.path == "/v1"
    assert url.port in listen_ports(url.hostname), f"{url.hostname} does not listen on {url.port}"
    assert spec.teacher.api_key_env is None, "teachers on the compose network need no key"
    if url.hostname == "vllm":
        (served,) = [p["--served-model-name"] for _, p in parsed_commands()["vllm"]]
        assert spec.teacher.model == served, "teacher.model must be the name vLLM serves"


def test_the_api_reads_the_profiles_and_data_from_the_mounted_jobs_folder():
    env = service("api")["environment"]
    mounted = {"/data/jobs": JOBS}
    assert Path(env["STEPWISE_TEACHERS"]).parent.as_posix() in mounted and env["STEPWISE_DATA_DIRS"] in mounted
    from stepwise.pipeline.admission import TeacherProfiles

    profiles = TeacherProfiles.load(TEACHERS)
    for name, profile in profiles.profiles.items():
        url = urlsplit(profile.fields["base_url"])
        if url.hostname in SERVICES:  # a compose teacher: on the compose network, no key
            assert url.port in listen_ports(url.hostname) and profile.fields.get("api_key_env") is None, name
        else:  # a hosted one: over TLS, with a key passed to every node
            assert url.scheme == "https" and profile.fields["api_key_env"] in service("api")["environment"], name


# ── the checks can fail ────────────────────────────────────────────────────────────────────────────────────────

@pytest.mark.parametrize("argv", [
    ["stepwise", "serve", "--hots", "0.0.0.0"],
    ["stepwise", "serv"],
    ["stepwise", "sim", "--port", "eighty"],
    ["ray", "start", "--adress=ray-head:6379"],
    ["ray", "strat", "--head"],
    ["ray", "start", "--num-cpus=two"],
    ["python", "-c", "import urllib.request; urllib.request.urlopen("],
    ["curl", "-f", "http://127.0.0.1:8000/healthz"],
    ["vllm", "serve", "model", "--served-model", "x"],
    ["vllm", "--port", "8000"],
], ids=lambda argv: " ".join(argv)[:40])
def test_a_wrong_command_fails(argv):
    if argv[0] == "ray":
        ray_cli()
    with pytest.raises(AssertionError):
        check_invocation(argv, STEPWISE_PROGRAMS | VLLM_PROGRAMS)


def test_a_script_running_an_unknown_program_fails(tmp_path):
    with pytest.raises(AssertionError, match="failed"):
        invocations(["sh", "-c", "ray start --address=ray-head:6379 && exec stepwize serve"], STEPWISE_PROGRAMS, {},
                    tmp_path)
    calls = invocations(["sh", "-c", "ray start --address=x:1 && exec stepwise serve --port 1"], STEPWISE_PROGRAMS,
                        {}, tmp_path)
    assert calls == [["ray", "start", "--address=x:1"], ["stepwise", "serve", "--port", "1"]]


def test_interpolation_follows_compose():
    env = {"SET": "v", "EMPTY": ""}
    assert interpolate("$$HOME ${SET} $SET ${UNSET:-d} ${EMPTY:-d} ${EMPTY-d} ${SET:+a} ${UNSET+a}", env) == \
        "$HOME v v d d  a "
    with pytest.raises(MissingVariable, match="UNSET: say so"):
        interpolate("${UNSET:?say so}", env)
    with pytest.raises(MissingVariable):
        interpolate("${EMPTY:?}", env)
    with pytest.raises(ValueError):
        interpolate("${not valid}", env)

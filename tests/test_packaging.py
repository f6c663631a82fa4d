"""Installed, stepwise is one import name and one command. A wheel built from this checkout is installed into a
fresh virtualenv (its dependencies are borrowed from this one's site-packages through a path entry, so nothing is
downloaded); what it adds to site-packages is `stepwise` and its dist-info, and modules named `pipeline`, `api`,
`storage` or `prompts` earlier on sys.path do not break it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from tests.conftest import ROOT

DECOYS = ("pipeline", "api", "storage", "prompts")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the fresh virtualenv's python, its site-packages) with the wheel installed."""
    folder = tmp_path_factory.mktemp("packaging")
    source = folder / "source"  # a copy: the build writes its scratch folders beside the sources
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("stepwise", "pipeline", "prompts", "storage", "api"):
        shutil.copytree(ROOT / name, source / name, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    wheels = folder / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheels), str(source)], check=True, capture_output=True, timeout=300)
    env_dir = folder / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    before = set(os.listdir(site))
    (wheel,) = wheels.glob("*.whl")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                    "-q", str(wheel)], check=True, capture_output=True, timeout=300)
    added = set(os.listdir(site)) - before
    # the dependencies, from this virtualenv: a plain path entry, so its .pth files (our editable finder) stay off
    (site / "borrowed-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python, site, added


def test_one_import_name_is_installed(installed):
    _, _, added = installed
    names = {n for n in added if not n.endswith((".dist-info", "__pycache__"))}
    assert names == {"stepwise"}, names
    assert any(n.startswith("stepwise_distill-") and n.endswith(".dist-info") for n in added)


def test_modules_named_like_the_folders_do_not_break_the_package_or_the_command(installed, tmp_path):
    python, site, _ = installed
    for name in DECOYS:  # unrelated modules of those names, first on sys.path
        (tmp_path / f"{name}.py").write_text("raise ImportError('the unrelated module " + name + "')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    code = ("import stepwise, stepwise.pipeline.run.job, stepwise.api.app; "
            "print(stepwise.__file__); print(stepwise.load_job({'dataset': {'path': 'd.jsonl'}, 'task': 'arithmetic', "
            "'prompt': 'few_shot_cot', 'teacher': {'backend': 'replay', 'path': 'c.jsonl'}}).task.kind)")
    proc = subprocess.run([str(python), "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    where, kind = proc.stdout.split()
    assert where.startswith(str(site)) and kind == "arithmetic"  # the installed copy, not this checkout
    command = python.with_name("stepwise")
    proc = subprocess.run([str(command), "--help"], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=120)
    assert proc.returncode == 0 and "run (or resume) a job file" in proc.stdout, proc.stderr
    proc = subprocess.run([str(python), "-c", "import stepwise; help(stepwise)"], capture_output=True, text=True,
                          env={**env, "PAGER": "cat"}, cwd=tmp_path, timeout=120)
    for name in ("run(", "arun(", "query(", "export(", "train(", "simulator(", "load_job("):
        assert name in proc.stdout, name


def test_install_commands_in_messages_name_this_distribution():
    offenders = []
    for path in [*ROOT.glob("pipeline/**/*.py"), *ROOT.glob("api/**/*.py"), *ROOT.glob("storage/*.py"),
                 ROOT / "README.md"]:
        text = path.read_text(encoding="utf-8")
        if "install 'stepwise[" in text or 'install "stepwise[' in text or "install stepwise[" in text:
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == [], f"these name the wrong distribution (stepwise on the index is another project): {offenders}"

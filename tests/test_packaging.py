"""octbench as a package people install and extend: a plain pip install, a broken plugin package, the starter kit."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from octbench.cli import cli
from octbench.starter import KINDS, TECHNIQUES, new_plugin
from octbench.testing import check_technique

REPO = Path(__file__).resolve().parents[1]


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("kind", [k for k in KINDS if k in TECHNIQUES])
def test_a_new_plugin_of_every_kind_conforms(tmp_path, kind):
    result = CliRunner().invoke(cli, ["new", "plugin", f"my-{kind}", "--kind", kind, "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    root = tmp_path / f"octbench-my-{kind}"
    package = f"octbench_my_{kind.replace('-', '_')}"
    assert {p.name for p in root.iterdir()} == {"pyproject.toml", "README.md", "src", "tests", "suites"}
    assert f'my-{kind} = "{package}.plugin"' in (root / "pyproject.toml").read_text()
    module = _load(root / "src" / package / "plugin.py", f"starter_{kind}")
    classes = [v for v in vars(module).values() if isinstance(v, type) and getattr(v, "name", None) == f"my-{kind}"]
    assert len(classes) == 1
    check_technique(classes[0])
    again = CliRunner().invoke(cli, ["new", "plugin", f"my-{kind}", "--kind", kind, "--dir", str(tmp_path)])
    assert again.exit_code == 2 and "already exists" in again.output


@pytest.mark.parametrize("kind", [k for k in KINDS if k not in TECHNIQUES])
def test_a_kind_a_placeholder_cannot_start_is_refused_with_where_to_start(tmp_path, kind):
    """Datasets and executors must pass checks of their own that a placeholder cannot: the guide's examples do."""
    result = CliRunner().invoke(cli, ["new", "plugin", f"my-{kind}", "--kind", kind, "--dir", str(tmp_path)])
    assert result.exit_code == 2 and "no starter for a" in result.output and "docs/plugins.md" in result.output
    assert "Traceback" not in result.output and not list(tmp_path.iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["preprocessor", "metric", "report-section"])
def test_a_new_plugin_package_passes_its_own_tests_and_builds(tmp_path, kind):
    root = new_plugin(f"my-{kind}", kind, tmp_path)
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=root, env=env, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"),
         str(root)], capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-2000:]
    assert list((tmp_path / "dist").glob(f"octbench_my_{kind.replace('-', '_')}-0.1.0-*.whl"))


def _broken_distribution(folder: Path) -> None:
    """An installed-looking distribution whose octbench entry point fails to import."""
    info = folder / "broken_thing-1.2.3.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-thing\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text("[octbench]\nbroken = broken_thing_plugins\n")
    (folder / "broken_thing_plugins.py").write_text("raise ImportError('a missing dependency: frobnicate')\n")


@pytest.mark.slow
def test_a_plugin_package_that_fails_to_import_blocks_nothing(tmp_path):
    _broken_distribution(tmp_path / "site")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    command = [sys.executable, "-m", "octbench", "plugins"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "broken-thing 1.2.3 failed to import (ImportError: a missing dependency: frobnicate); skipped" in done.stderr
    assert "seed-cnn" in done.stdout and "broken: plugin 'broken'" in done.stdout
    strict = subprocess.run(
        command, env={**env, "OCTBENCH_STRICT_PLUGINS": "1"}, capture_output=True, text=True, timeout=120
    )
    assert strict.returncode == 2 and "broken-thing 1.2.3" in strict.stderr and "Traceback" not in strict.stderr


def test_shipped_suites_run_by_name_and_init_copies_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["init", "project"])
    assert result.exit_code == 0, result.output
    copied = {p.stem for p in (tmp_path / "project" / "suites").glob("*.yaml")}
    assert {"smoke", "ablation", "breastmnist", "cluster"} <= copied
    (tmp_path / "project" / "suites" / "smoke.yaml").write_text("name: mine\nvariants: [{name: x}]\n")
    again = CliRunner().invoke(cli, ["init", "project"])
    assert "0 suites written" in again.output and "kept your" in again.output
    assert (tmp_path / "project" / "suites" / "smoke.yaml").read_text().startswith("name: mine")
    unknown = CliRunner().invoke(cli, ["run", "no-such-suite"])
    assert unknown.exit_code == 2 and "smoke" in unknown.output and "octbench init" in unknown.output
    checked = CliRunner().invoke(
        cli, ["check", "smoke", "--set", "variants=[{name: a}, {name: b, preprocessors: [hist-eq]}]"]
    )
    assert checked.exit_code == 0 and "all 2 variants passed" in checked.output


def test_check_names_the_variant_and_plugin_that_fail_and_run_stops_before_writing(tmp_path):
    hostile = REPO / "tests" / "plugins" / "hostile.py"
    suite = tmp_path / "s.yaml"
    suite.write_text(
        textwrap.dedent(
            f"""
            name: checked
            plugins: [{hostile}]
            dataset: {{name: synthetic-oct, n_train: 300, n_val: 60, n_test: 40}}
            cv: {{folds: 2}}
            train: {{epochs: 1, batch_size: 32, device: cpu}}
            defaults: {{model: {{name: cnn, widths: [8], hidden: 8}}}}
            variants:
              - name: fine
              - {{name: wrong-logits, model: extra-logits}}
              - {{name: wrong-counts, preprocessors: [bad-resampler]}}
            """
        )
    )
    checked = CliRunner().invoke(cli, ["check", str(suite)])
    assert checked.exit_code == 2
    assert "variant 'wrong-logits', training" in checked.output and "(32, 4) logits" in checked.output
    assert "variant 'wrong-counts', preprocessing" in checked.output and "bad-resampler" in checked.output
    assert "variant 'fine'" not in checked.output
    ran = CliRunner().invoke(cli, ["run", str(suite), "--out", str(tmp_path / "out")])
    assert ran.exit_code == 2 and "--no-check" in ran.output and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_plain_pip_install_runs_every_command_without_medmnist(tmp_path):
    """A fresh venv: torch first (the CPU wheel), then octbench's wheel; every command from another folder."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    torch = subprocess.run([*pip, "torch==2.13.0"], capture_output=True, text=True, timeout=600)
    assert torch.returncode == 0, torch.stderr[-2000:]
    wheel = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"),
         str(REPO)], capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert wheel.returncode == 0, wheel.stderr[-2000:]
    installed = subprocess.run(
        [*pip, *map(str, (tmp_path / "dist").glob("*.whl"))], capture_output=True, text=True, timeout=600
    )
    assert installed.returncode == 0, installed.stderr[-2000:]
    octbench = str(venv / "bin" / "octbench")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}

    def run(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run([octbench, *args], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{args}: {done.stdout[-1500:]} {done.stderr[-1500:]}"
        return done

    listed = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "list"], capture_output=True, text=True)
    assert "medmnist" not in listed.stdout.lower()
    assert "seed-cnn" in run("plugins").stdout
    run("init")
    assert (elsewhere / "suites" / "smoke.yaml").exists()
    run("check", "smoke")
    ran = run("run", "smoke", "--no-progress", "--set", "train.epochs=1", "--set", "cv.folds=2")
    assert "8 cells done, 0 failed" in ran.stdout and (elsewhere / "reports" / "smoke" / "report.html").exists()

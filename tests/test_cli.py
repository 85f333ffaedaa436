"""The command line: exit codes, one-line errors, nothing written on bad input, the end-to-end smoke run."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from octbench.cli import cli
from octbench.kinds import KINDS
from tests.conftest import SMOKE_SETTINGS

REPO = Path(__file__).resolve().parents[1]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


GOOD = """
name: t
dataset: {name: synthetic-oct, n_train: 160, n_val: 40, n_test: 40}
cv: {folds: 2}
train: {epochs: 1, batch_size: 32, device: cpu}
defaults: {model: {name: cnn, widths: [8], hidden: 8}}
variants:
  - name: a
"""


@pytest.mark.parametrize(
    ("suite", "expected"),
    [
        (
            GOOD.replace("- name: a", "- {name: a, preprocessors: [clahee]}"),
            "variants[0].preprocessors[0]: unknown preprocessor 'clahee' (did you mean 'clahe'?)",
        ),
        (
            GOOD.replace("- name: a", "- {name: a, preprocessors: [{name: clahe, clip_limit: -1}]}"),
            "The 'clip_limit' parameter of clahe must be greater than 0. Got -1 instead.",
        ),
        (GOOD.replace("name: t\n", ""), "name: required key is missing"),
        (GOOD.replace("cv: {folds: 2}", "cv: {folds: 2"), "malformed YAML"),
        (GOOD.replace("synthetic-oct", "octmnistt"), "unknown dataset 'octmnistt' (did you mean 'octmnist'?)"),
        (GOOD.replace("cnn, widths: [8]", "cnn, widths: [8], depth: 3"), "cnn has no parameter 'depth'"),
    ],
)
def test_invalid_suites_exit_2_with_one_message_and_write_nothing(tmp_path, suite, expected):
    path = tmp_path / "s.yaml"
    path.write_text(suite)
    result = invoke("run", path, "--out", tmp_path / "out", "--no-progress")
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert result.output.startswith("error: ") and "Traceback" not in result.output
    assert not (tmp_path / "out").exists(), "nothing may be written for invalid input"


def test_error_points_at_the_suite_line(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(GOOD.replace("- name: a", "- name: a\n  - name: b\n    model: {name: cnn, dropout: 2}"))
    result = invoke("run", path, "--no-progress")
    assert result.exit_code == 2
    assert f"{path}:10: variants[1].model" in result.output and "dropout" in result.output


BROKEN_DATASET = """
from octbench import hookimpl
from octbench.technique import Dataset


class Broken(Dataset):
    "Always fails."

    name = "broken"

    def load(self, data_dir, *, progress=False):
        raise OSError("disk on fire")


@hookimpl
def register_datasets(register):
    register(Broken)
"""


def test_a_dataset_that_fails_to_load_exits_2(tmp_path):
    plugin = tmp_path / "broken_data.py"
    plugin.write_text(BROKEN_DATASET)
    path = tmp_path / "s.yaml"
    suite = GOOD.replace("{name: synthetic-oct, n_train: 160, n_val: 40, n_test: 40}", "broken")
    path.write_text(suite + f"plugins: [{plugin}]\n")
    result = invoke("run", path, "--out", tmp_path / "out", "--no-progress")
    assert result.exit_code == 2 and "dataset 'broken' failed to load: OSError: disk on fire" in result.output
    assert not (tmp_path / "out").exists()


def test_missing_suite_file(tmp_path):
    result = invoke("run", tmp_path / "absent.yaml")
    assert result.exit_code == 2 and "does not exist" in result.output


def test_wrong_md5_data_file_exits_2_and_says_what_to_do(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "breastmnist.npz").write_bytes(b"truncated download")
    path = tmp_path / "s.yaml"
    path.write_text(GOOD.replace("{name: synthetic-oct, n_train: 160, n_val: 40, n_test: 40}", "breastmnist"))
    result = invoke("run", path, "--data-dir", data, "--out", tmp_path / "out", "--no-progress")
    assert result.exit_code == 2
    assert (
        "expected 750601b1f35ba3300ea97c75c52ff8f6" in result.output and "Delete it and fetch it again" in result.output
    )
    assert not (tmp_path / "out").exists()
    verify = invoke("data", "verify", "--data-dir", data)
    assert verify.exit_code == 2 and "BAD" in verify.output


@pytest.mark.slow
def test_a_real_process_prints_no_traceback(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: [unclosed\n")
    done = subprocess.run([sys.executable, "-m", "octbench", "run", str(path)], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and "Traceback" not in done.stderr


def test_plugins_lists_kinds_parameters_and_sources():
    result = invoke("plugins", "--json")
    assert result.exit_code == 0
    listed = json.loads(result.output)
    rows = {(r["kind"], r["name"]): r for r in listed["plugins"]}
    assert listed["broken"] == [] and rows[("model", "cnn")]["distribution"] == "octbench"
    clahe = rows[("preprocessor", "clahe")]
    assert {p["name"] for p in clahe["parameters"]} == {"clip_limit", "tile_grid"}
    assert clahe["source"].endswith("preprocess.py")
    kinds = {k for k, _ in rows}
    assert {"dataset", "preprocessor", "augmenter", "model", "regularizer", "executor", "optimizer"} <= kinds
    assert kinds <= set(KINDS), "every listed kind is one octbench knows"
    assert "seed-cnn" in invoke("plugins").output


def test_data_list_shows_flags_and_presence(shared_data):
    result = invoke("data", "list", "--data-dir", shared_data)
    assert result.exit_code == 0
    line = next(x for x in result.output.splitlines() if x.strip().startswith("breastmnist"))
    assert "present: 28" in line
    assert invoke("data", "verify", "--data-dir", shared_data).exit_code == 0


@pytest.mark.slow
def test_xss_in_a_variant_name_renders_as_text(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(GOOD.replace("- name: a", "- name: '<script>alert(1)</script>'"))
    assert invoke("run", path, "--out", tmp_path / "out", "--no-progress").exit_code == 0
    html = (tmp_path / "out" / "report.html").read_text()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


@pytest.mark.slow
def test_smoke_suite_end_to_end_then_resumes(smoke_dir, tmp_path):
    out = tmp_path / "smoke"
    shutil.copytree(smoke_dir[0], out)  # the session's run of suites/smoke.yaml through this CLI, which others read
    html = (out / "report.html").read_text()
    conn = sqlite3.connect(out / "results.sqlite")
    variants = [r[0] for r in conn.execute("SELECT DISTINCT variant FROM cells")]
    cells = conn.execute("SELECT count(*) FROM cells WHERE status='done'").fetchone()[0]
    conn.close()
    assert len(variants) == 4 and cells == 12
    for name in variants:
        assert f'alt="confusion matrix of {name}"' in html
        assert f'alt="ROC curves of {name}"' in html
    assert html.count("data:image/png;base64,") >= 3 * len(variants)

    second = invoke("run", REPO / "suites" / "smoke.yaml", "--out", out, "--no-progress", *SMOKE_SETTINGS)
    assert second.exit_code == 0 and "0 cells done, 0 failed, 12 already finished" in second.output
    conn = sqlite3.connect(out / "results.sqlite")
    assert conn.execute("SELECT count(*) FROM cells").fetchone()[0] == 12
    conn.close()

    rerender = invoke("report", out)
    assert rerender.exit_code == 0 and (out / "report.html").exists()


def test_report_of_a_folder_without_results(tmp_path):
    result = invoke("report", tmp_path)
    assert result.exit_code == 2 and "no results" in result.output


@pytest.mark.slow
@pytest.mark.shared_data
def test_real_breastmnist_run(tmp_path, shared_data):
    path = tmp_path / "s.yaml"
    path.write_text(GOOD.replace("{name: synthetic-oct, n_train: 160, n_val: 40, n_test: 40}", "breastmnist"))
    out = tmp_path / "out"
    result = invoke("run", path, "--data-dir", shared_data, "--out", out, "--no-progress", "--set", "train.epochs=3")
    assert result.exit_code == 0, result.output
    conn = sqlite3.connect(out / "results.sqlite")
    accuracy, auc = (
        conn.execute(f"SELECT avg(value) FROM metrics WHERE split='test' AND name='{name}'").fetchone()[0]
        for name in ("accuracy", "auc_macro")
    )
    conn.close()
    assert 0.5 < accuracy <= 1.0 and 0.6 < auc <= 1.0, "a tiny CNN learns something in three epochs"


LISTED = '''
import click

from octbench import hookimpl
from octbench.technique import Preprocessor


class Flat(Preprocessor):
    """Flattens nothing."""

    name = "flat"
    stateless = True

    def transform(self, images):
        return images


@click.command("hello-listing")
def hello():
    """Say hello."""
    click.echo("hello")


@hookimpl
def register_preprocessors(register):
    register(Flat)


@hookimpl
def register_commands(cli):
    cli.add_command(hello)
'''


def test_the_remembered_plugin_listing_follows_a_plugin_edit(tmp_path, monkeypatch):
    """``plugins`` and ``--help`` read the listing ``octbench.listing`` remembers; editing a plugin file (or
    installing one) makes the next command read the plugins again; a listed command still runs."""
    import os

    plugin = tmp_path / "listed.py"
    plugin.write_text(LISTED)
    monkeypatch.setenv("OCTBENCH_PLUGINS", str(plugin))
    monkeypatch.setattr(cli, "commands", dict(cli.commands))  # this test's plugin commands leave with it
    monkeypatch.setattr(cli, "plugins_added", False)

    def names() -> list[str]:
        listed = CliRunner().invoke(cli, ["plugins", "--json"])
        assert listed.exit_code == 0, listed.output
        return [p["name"] for p in json.loads(listed.output)["plugins"] if p["source"] == str(plugin)]

    assert names() == ["flat"]
    remembered = Path(os.environ["OCTBENCH_CACHE_DIR"]) / "listings"
    assert len(list(remembered.glob("*.json"))) == 1
    helped = CliRunner().invoke(cli, ["--help"])
    assert helped.exit_code == 0 and "hello-listing" in helped.output and "Say hello." in helped.output
    plugin.write_text(LISTED.replace('name = "flat"', 'name = "flatter"'))
    os.utime(plugin, ns=(plugin.stat().st_atime_ns, plugin.stat().st_mtime_ns + 1_000_000_000))
    assert names() == ["flatter"], "an edited plugin is read again"
    assert len(list(remembered.glob("*.json"))) == 2
    ran = CliRunner().invoke(cli, ["hello-listing"])
    assert ran.exit_code == 0 and ran.output == "hello\n"

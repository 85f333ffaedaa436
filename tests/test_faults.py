"""Fault injection: real processes, real signals, hostile plugins, hostile names, broken disks and servers.

Each case ends with a consistent store, a report that renders and the documented exit code: 0 every cell
finished, 1 some cells failed (recorded), 2 invalid input or an unwritable results folder, 130 Ctrl-C, 143
SIGTERM. Processes are waited for by state (cells stored, files present), never by sleeping a fixed time.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import markdown
import numpy as np
import pytest
from click.testing import CliRunner

from octbench.cell import cache
from octbench.cli import cli
from octbench.runner import RunInterrupted
from octbench.runner import run_suite as run_checked
from tests.conftest import cells, spy_plugin_path, wait_for

HOSTILE = Path(__file__).resolve().parent / "plugins" / "hostile.py"


def run_suite(suite, **options):
    """A run without the trial of each variant on a sample: these plugins are meant to fail at run time, and some
    (one that kills its process, one that hangs) must not run in the test's own process."""
    return run_checked(suite, check=False, **options)


TINY = "{name: synthetic-oct, n_train: 160, n_val: 40, n_test: 40}"


def suite_file(tmp_path, variants, *, dataset=TINY, folds=2, epochs=1, extra="", name="faults", executor="{stack: 1}"):
    """A tiny suite with the hostile and spy plugins; cells one at a time unless ``executor`` says otherwise, so
    results are committed cell by cell (a stack commits its cells together when it ends)."""
    text = "\n".join(
        [
            f"name: {name}",
            f"plugins: [{HOSTILE}, {spy_plugin_path()}]",
            f"dataset: {dataset}",
            f"cv: {{folds: {folds}, seeds: [0], val_fraction: 0.2}}",
            f"train: {{epochs: {epochs}, batch_size: 32, device: cpu, threads: 1}}",
            "defaults: {model: {name: cnn, widths: [8], hidden: 8}}",
            f"executor: {executor}",
            extra,
            "variants:",
            *[f"  - {v}" for v in variants],
        ]
    )
    path = tmp_path / f"{name}.yaml"
    path.write_text(text + "\n")
    return path


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def run_statuses(out: Path) -> list[str]:
    conn = sqlite3.connect(out / "results.sqlite")
    try:
        return [r[0] for r in conn.execute("SELECT status FROM runs ORDER BY id")]
    finally:
        conn.close()


def consistent(out: Path) -> None:
    """The store passes SQLite's integrity check, holds each cell once, and `octbench report` renders it."""
    conn = sqlite3.connect(out / "results.sqlite")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    keys = conn.execute("SELECT variant, seed, fold FROM cells").fetchall()
    conn.close()
    assert len(keys) == len(set(keys)), "a cell is stored twice"
    result = invoke("report", out, "--output", out / "check.html")
    assert result.exit_code == 0, result.output


def start(suite: Path, out: Path, *extra: str, **popen) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "octbench",
        "run",
        str(suite),
        "--out",
        str(out),
        "--no-progress",
        "--no-check",
        *extra,
    ]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def foreground_job() -> None:
    """In the child before exec: SIGINT as an interactive shell's foreground job has it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


SLOW = "{name: slow, regularizers: [{name: slow-down, seconds: 0.3}]}"


# --- signals and processes ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_sigterm_stops_the_run_renders_what_finished_and_resumes(tmp_path):
    # the second variant's cells wait for a gate that stays shut: the signal surely lands while one is running
    gate = tmp_path / "gate"
    other = f"{{name: other, regularizers: [{{name: slow-down, seconds: 0.1, until: '{gate}'}}]}}"
    suite, out = suite_file(tmp_path, [SLOW, other], epochs=2), tmp_path / "out"
    process = start(suite, out)
    wait_for(lambda: len(cells(out)) >= 1 and Path(f"{gate}.waiting").exists(), process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    assert "Rerun the same command to resume" in stderr and "Traceback" not in stderr
    assert run_statuses(out)[-1] == "interrupted"
    assert (out / "report.html").exists() and not list(out.glob(".*.part"))
    before = len(cells(out))
    assert 1 <= before < 4
    consistent(out)
    gate.touch()
    summary = run_suite(suite, out=out, progress=False)
    assert summary.skipped == before and summary.skipped + summary.done == 4
    consistent(out)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["ctrl-c", "kill -9"])
def test_stopping_a_parallel_run_leaves_no_workers_behind(tmp_path, how):
    # each cell sleeps 3 s, so after the first finishes the others are still running when the signal lands (0.6 s
    # cells once let the run finish first and exit 0 on a fresh clone)
    slow = "{name: slow, regularizers: [{name: slow-down, seconds: 1.5}]}"
    suite = suite_file(tmp_path, [slow], folds=4, epochs=2, executor="{parallel: 2, stack: 1}")
    out = tmp_path / "out"
    # as a terminal's foreground job: Ctrl-C's default action restored, since a pytest started in the background
    # (as CI may start it) passes on an ignored SIGINT, which octbench rightly keeps ignoring (as under nohup)
    process = start(suite, out, start_new_session=True, preexec_fn=foreground_job)
    wait_for(lambda: len(cells(out)) >= 1, process)
    workers = children(process.pid) - {process.pid}
    assert workers, "the parallel run should have worker processes"
    if how == "ctrl-c":
        os.killpg(process.pid, signal.SIGINT)  # what a terminal sends to the whole foreground group
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 130, stderr
        assert "Traceback" not in stderr and len(stderr.splitlines()) < 8, stderr
        assert run_statuses(out)[-1] == "interrupted"
    else:
        process.kill()
        process.communicate(timeout=60)
    wait_for(lambda: not any(alive(w) for w in workers), timeout=30)
    summary = run_suite(suite, out=out, progress=False, overrides=["executor.parallel=1"])
    assert summary.skipped + summary.done == 4 and summary.failed == 0
    consistent(out)


@pytest.mark.slow
def test_a_killed_worker_fails_its_cell_and_the_suite_goes_on(tmp_path):
    flag = tmp_path / "killed-once"
    suite = suite_file(
        tmp_path,
        ["{name: baseline}", f"{{name: victim, regularizers: [{{name: suicide, flag: {flag}}}]}}"],
        executor="{parallel: 2, stack: 1}",
    )
    summary = run_suite(suite, out=tmp_path / "out", progress=False)
    assert (summary.done, summary.failed, summary.exit_code) == (3, 1, 1)
    failed = [c for c in cells(tmp_path / "out") if c[3] == "failed"]
    assert len(failed) == 1 and failed[0][0] == "victim" and "killed by SIGKILL" in failed[0][4]
    consistent(tmp_path / "out")


@pytest.mark.slow
def test_a_trial_whose_process_is_killed_is_named_by_the_next_start(tmp_path):
    """A plugin that kills octbench's own process during the trial of each variant on a sample ended the command with
    exit -9 and no word; the next start of the suite says which variant's trial, and where, was running."""
    flag = tmp_path / "killed-once"
    suite = suite_file(
        tmp_path, ["{name: baseline}", f"{{name: victim, regularizers: [{{name: suicide, flag: {flag}}}]}}"]
    )
    command = [sys.executable, "-m", "octbench", "run", str(suite), "--out", str(tmp_path / "out"), "--no-progress"]
    first = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert first.returncode == -signal.SIGKILL and flag.exists()
    assert not (tmp_path / "out").exists(), "killed in the trial, before anything was written"
    second = invoke("check", suite)
    assert second.exit_code == 0, second.output
    said = " ".join(second.output.split())
    assert f"the last trial of this suite (process {flag.read_text()}," in said
    assert "ended without a word in variant 'victim', building model 'cnn': its process was killed" in said
    assert "without a word" not in invoke("check", suite).output, "said once"


@pytest.mark.slow
def test_a_stack_whose_worker_dies_is_retried_cell_by_cell(tmp_path):
    flag = tmp_path / "killed-once"
    suite = suite_file(
        tmp_path,
        ["{name: baseline}", f"{{name: victim, regularizers: [{{name: suicide, flag: {flag}}}]}}"],
        executor="{parallel: 2, stack: 4}",  # all four cells in one stack: the only worker that can die
    )
    summary = run_suite(suite, out=tmp_path / "out", progress=False)
    assert flag.exists(), "the stack's worker was killed once"
    assert (summary.done, summary.failed) == (4, 0), "which cell killed it is unknown, so each ran again alone"
    consistent(tmp_path / "out")


@pytest.mark.slow
def test_a_second_run_into_a_busy_folder_exits_2_naming_the_first(tmp_path):
    # the first run's cells wait at a gate the test opens only after both attempts: it is surely still running
    gate = tmp_path / "gate"
    held = f"{{name: held, regularizers: [{{name: slow-down, seconds: 0, until: '{gate}'}}]}}"
    suite, out = suite_file(tmp_path, [held], folds=3, epochs=1), tmp_path / "out"
    process = start(suite, out)
    wait_for(lambda: Path(f"{gate}.waiting").exists(), process)
    for extra in ((), ("--fresh",)):
        second = invoke("run", suite, "--out", out, "--no-progress", *extra)
        assert second.exit_code == 2 and f"pid {process.pid}" in second.output, second.output
    gate.touch()
    _, stderr = process.communicate(timeout=180)
    assert process.returncode == 0, stderr
    assert len(cells(out)) == 3, "the first run was not disturbed"
    consistent(out)


@pytest.mark.slow
def test_sys_exit_in_a_plugin_fails_its_cell_not_the_suite(tmp_path):
    summary = run_suite(
        suite_file(tmp_path, ["{name: baseline}", "{name: quits, regularizers: [exits]}"]),
        out=tmp_path / "out",
        progress=False,
    )
    assert (summary.done, summary.failed) == (2, 2)
    errors = {c[4] for c in cells(tmp_path / "out") if c[3] == "failed"}
    assert errors == {"a plugin called sys.exit(0) inside the cell"}
    consistent(tmp_path / "out")


@pytest.mark.serial
@pytest.mark.slow
def test_cells_past_their_time_limit_are_recorded_as_failed(tmp_path, monkeypatch):
    from octbench.cell import workers

    suite = suite_file(
        tmp_path,
        ["{name: baseline}", "{name: slow, regularizers: [{name: slow-batches, seconds: 1.0}]}"],
        epochs=4,
    )
    # the limit is generous for the baseline (under a second per cell when idle, ten times that on a machine whose
    # other core is busy) and far too short for 12 one-second steps
    summary = run_suite(suite, out=tmp_path / "in-training", progress=False, overrides=["train.timeout=8"])
    assert (summary.done, summary.failed) == (2, 2)
    assert all("train.timeout" in c[4] for c in cells(tmp_path / "in-training") if c[3] == "failed")
    # stuck where no signal reaches (a hung C extension): only its worker process can be stopped, and is, in the
    # default executor too (a cell with a time limit runs in a worker)
    monkeypatch.setattr(workers, "HARD_TIMEOUT_GRACE", 1.0)
    suite = suite_file(
        tmp_path,
        ["{name: baseline}", "{name: stuck, preprocessors: [{name: stuck, block_signals: true}]}"],
        name="stuck",
    )
    # 10 s: a baseline cell in a fresh worker process (imports included) must finish well within it on a busy machine
    summary = run_suite(suite, out=tmp_path / "stuck", progress=False, overrides=["train.timeout=10"])
    assert (summary.done, summary.failed) == (2, 2)
    assert all("worker process was killed" in c[4] for c in cells(tmp_path / "stuck") if c[3] == "failed")
    consistent(tmp_path / "stuck")


def test_a_workers_start_up_does_not_count_against_the_cells_time_limit(monkeypatch):
    """A fresh worker imports torch before it can take a cell (seconds, many more on a busy machine): the hard limit
    counts from its first message, not from when the parent handed it the stack."""
    from types import SimpleNamespace

    from octbench.cell import workers

    class Process:
        killed = False

        def kill(self):
            self.killed = True

        def join(self, timeout=None):
            pass

    task = SimpleNamespace(suite=SimpleNamespace(train=SimpleNamespace(timeout=1.0)), key=(0, 0, 0), config_hash="h")
    pool = workers.WorkerPool(1, threads=1)
    worker = workers._Worker(Process(), connection=SimpleNamespace(close=lambda: None), stack=[task])
    pool.pool = [worker]
    monkeypatch.setattr(workers, "HARD_TIMEOUT_GRACE", 0.0)
    failed = []
    pool._enforce_time_limits(failed.append)  # still importing: no clock yet, however long that takes
    assert not worker.process.killed and failed == []
    worker.ready, worker.started = True, time.monotonic() - 5.0  # ready, and then stuck past 1 s + grace
    pool._enforce_time_limits(failed.append)
    assert worker.process.killed and [r.status for r in failed] == ["failed"]
    assert "its worker process was killed" in failed[0].error


HANGS = ["{name: baseline}", "{name: hangs, regularizers: [hangs]}"]


@pytest.mark.serial
@pytest.mark.slow
@pytest.mark.parametrize("executor", ["{stack: 1}", "{stack: 1, parallel: 2}"], ids=["default", "parallel"])
def test_a_plugin_that_never_returns_fails_only_its_cells_in_every_executor(tmp_path, executor):
    """A hang outside the training loop (configure_model), with the preflight skipped: stopped at the limit, where
    it hangs, by the alarm of octbench.cell.deadline (the worker survives; no kill needed). tests/test_ray.py runs the
    same on Ray."""
    suite = suite_file(tmp_path, HANGS, executor=executor)
    started = time.monotonic()
    summary = run_suite(suite, out=tmp_path / "out", progress=False, overrides=["train.timeout=8"])
    assert (summary.done, summary.failed) == (2, 2)
    failed = [c[4] for c in cells(tmp_path / "out") if c[3] == "failed"]
    assert all("ran past train.timeout (8 s) and was stopped in configure_model (hostile.py:" in e for e in failed)
    assert time.monotonic() - started < 120, "stopped at the limit, not after the worker's grace period"
    consistent(tmp_path / "out")


@pytest.mark.serial
@pytest.mark.slow
def test_the_trial_of_each_variant_has_a_time_limit_too(tmp_path):
    suite = suite_file(tmp_path, HANGS)
    result = invoke("run", suite, "--out", tmp_path / "out", "--no-progress", "--set", "train.timeout=6")
    assert result.exit_code == 2, result.output
    assert "variant 'hangs', building model 'cnn': did not finish within 6 s (train.timeout)" in result.output
    assert "stopped in configure_model (hostile.py:" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists(), "nothing is written when the trial finds a problem"


# --- hostile plugins and datasets --------------------------------------------------------------------------------


@pytest.mark.slow
def test_hostile_plugins_fail_only_their_own_cells(tmp_path):
    variants = [
        "{name: baseline}",
        "{name: writes-input, preprocessors: [inplace-invert]}",
        "{name: bad-counts, preprocessors: [bad-resampler]}",
        "{name: extra-logits, model: extra-logits}",
        "{name: markup-error, model: failing-model}",
    ]
    out = tmp_path / "out"
    summary = run_suite(suite_file(tmp_path, variants), out=out, progress=False)
    assert (summary.done, summary.failed, summary.exit_code) == (2, 8, 1)
    errors = {c[0]: c[4] for c in cells(out) if c[3] == "failed"}
    assert "read-only" in errors["writes-input"] and "copy" in errors["writes-input"]
    assert "must return labels one per image: 5 labels for 240 images" in errors["bad-counts"]
    assert "(32, 4) logits" in errors["extra-logits"] and "(32, 7)" in errors["extra-logits"]
    assert "[/data/x.npz]" in errors["markup-error"]
    # the baseline trained and tested on the same images as in a run without the hostile variants
    clean = run_suite(suite_file(tmp_path, ["{name: baseline}"], name="clean"), out=tmp_path / "clean", progress=False)
    assert clean.done == 2
    assert _metrics(out, "baseline") == _metrics(tmp_path / "clean", "baseline")
    consistent(out)


def _metrics(out: Path, variant: str) -> dict:
    conn = sqlite3.connect(out / "results.sqlite")
    rows = conn.execute(
        "SELECT c.fold, m.split, m.name, m.value FROM cells c JOIN metrics m ON m.cell_id = c.id WHERE c.variant = ?",
        (variant,),
    ).fetchall()
    conn.close()
    return {r[:3]: r[3] for r in rows}


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("labels-beyond-classes", "class indices in 0..2"),
        ("one-class", "a single class"),
        ("count-mismatch", "87 labels for 90 images"),
    ],
)
def test_a_dataset_that_breaks_its_contract_exits_2_before_anything_is_written(tmp_path, mode, message):
    suite = suite_file(tmp_path, ["{name: baseline}"], dataset=f"{{name: hostile-data, mode: {mode}}}")
    result = invoke("run", suite, "--out", tmp_path / "out", "--no-progress")
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_test_split_missing_a_class_still_reports(tmp_path):
    suite = suite_file(
        tmp_path,
        ["{name: baseline}", "{name: flip, augmenters: [{name: batch-augment, hflip: 0.5}]}"],
        dataset="{name: hostile-data, mode: missing-test-class}",
    )
    summary = run_suite(suite, out=tmp_path / "out", progress=False)
    assert summary.failed == 0
    html = (tmp_path / "out" / "report.html").read_text()
    assert "Leaderboard" in html and "Verdicts against the reference" in html
    consistent(tmp_path / "out")


HOSTILE_NAMES = [
    "[/bold]evil",
    "lr $\\notacommand$",
    '=HYPERLINK("http://x")',
    "<script>alert(1)</script>",
    "../../up 50% & #_{x}\\end{document}",
]


@pytest.mark.slow
def test_hostile_names_in_every_place_a_name_appears(tmp_path):
    variants = ["{name: baseline}"] + [json.dumps({"name": n}) for n in HOSTILE_NAMES]
    variants.append(json.dumps({"name": "fails [/x]", "model": "failing-model"}))
    out = tmp_path / "out [/red]"
    suite = suite_file(tmp_path, variants, dataset="{name: hostile-data, mode: odd-names}")
    result = invoke("run", suite, "--out", out, "--no-progress", "--no-check")
    assert result.exit_code == 1, result.output  # only the failing variant's cells failed
    assert "[/data/x.npz]" in result.output and "fails [/x]" in result.output
    html = (out / "report.html").read_text()
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert invoke("report", out, "--format", "csv").exit_code == 0
    leaderboard = (out / "leaderboard.csv").read_text()
    assert "'=HYPERLINK" in leaderboard and "\n=HYPERLINK" not in leaderboard and ",=HYPERLINK" not in leaderboard
    md = invoke("report", out, "--format", "md", "--output", "-").output
    assert "<script>" not in md and "&lt;script>" in md
    rendered = markdown.markdown(md, extensions=["tables"])
    assert "<script>" not in rendered and "&lt;script&gt;alert(1)" in rendered, "the name is text, not HTML"
    figures = tmp_path / "figures"
    assert invoke("report", out, "--format", "latex", "--figures", figures).exit_code == 0
    assert r"../../up 50\% \& \#\_\{x\}\textbackslash{}end\{document\}" in (out / "report.tex").read_text()
    assert not list(tmp_path.glob("*.svg")) and not list(tmp_path.parent.glob("*.svg")), "a name escaped the folder"
    assert any("of-up-50-_-x-end-document." in p.name for p in figures.iterdir())
    if shutil.which("pdflatex"):
        command = ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", f"-output-directory={tmp_path}"]
        done = subprocess.run([*command, str(out / "report.tex")], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout[-1500:]
    consistent(out)


@pytest.mark.slow
def test_datasets_that_share_an_md5_label_do_not_share_preprocessed_images(tmp_path):
    for invert in ("false", "true"):
        suite = suite_file(
            tmp_path,
            ["{name: clahe, preprocessors: [clahe]}"],
            dataset=f"{{name: hostile-data, mode: fixed-md5, invert: {invert}}}",
            name=f"invert-{invert}",
        )
        assert run_suite(suite, out=tmp_path / invert, progress=False).failed == 0
    entries = list((cache.cache_dir() / "arrays" / "preprocessed").glob("*.npz"))
    assert len(entries) == 2, "each dataset configuration gets its own cached images"
    assert _metrics(tmp_path / "false", "clahe") != _metrics(tmp_path / "true", "clahe")


@pytest.mark.slow
def test_editing_a_plugin_file_reruns_exactly_the_cells_that_use_it(tmp_path):
    plugin = tmp_path / "mine.py"
    source = (
        "from octbench import hookimpl\nfrom octbench.technique import Preprocessor\n\n"
        "class Brighten(Preprocessor):\n    '''Adds a constant.'''\n    name = 'brighten'\n\n"
        "    def transform(self, images):\n        return (images // 2 + {amount}).astype(images.dtype)\n\n"
        "@hookimpl\ndef register_preprocessors(register):\n    register(Brighten)\n"
    )
    plugin.write_text(source.format(amount=10))
    suite = tmp_path / "s.yaml"
    suite.write_text(
        f"name: edit\nplugins: [{plugin}]\ndataset: {TINY}\ncv: {{folds: 2}}\n"
        "train: {epochs: 1, batch_size: 32, device: cpu}\ndefaults: {model: {name: cnn, widths: [8], hidden: 8}}\n"
        "variants:\n  - name: baseline\n  - {name: brighter, preprocessors: [brighten]}\n"
    )
    first = run_suite(suite, out=tmp_path / "out", progress=False)
    assert first.done == 4
    plugin.write_text(source.format(amount=40))
    second = run_suite(suite, out=tmp_path / "out", progress=False)
    assert (second.done, second.skipped) == (2, 2), "only the two cells using the edited plugin are retrained"
    conn = sqlite3.connect(tmp_path / "out" / "results.sqlite")
    provenance = json.loads(conn.execute("SELECT provenance FROM runs ORDER BY id DESC").fetchone()[0])
    conn.close()
    assert provenance["plugins"]["preprocessor:brighten"]["source"] == str(plugin)
    assert provenance["plugins"]["model:cnn"]["distribution"] == "octbench"


EDITED = '''
import os

import torch
from pydantic import Field

from octbench import hookimpl
from octbench.params import Params
from octbench.technique import Model, Optimizer


class PlainSGD(Optimizer):
    """SGD without momentum, its learning rate scaled."""

    name = "plain-sgd"

    def build(self, parameters, *, lr, weight_decay, device):
        return torch.optim.SGD(parameters, lr=lr * {scale})


class FileStart(Model):
    """A linear model that starts from a file's bytes."""

    name = "file-start"

    class Params(Params):
        weights: str = Field(description="the file it starts from")

    def input_files(self):
        return [self.params.weights]

    def build(self, in_channels, num_classes, image_size):
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(in_channels * image_size**2, num_classes))
        with torch.no_grad():
            model[1].bias.fill_(os.path.getsize(self.params.weights) / 100)
        return model


@hookimpl
def register_optimizers(register):
    register(PlainSGD)


@hookimpl
def register_models(register):
    register(FileStart)
'''

METRIC = '''
import numpy as np

from octbench import hookimpl
from octbench.technique import Metric


class Confidence(Metric):
    """The mean probability of the predicted class."""

    name = "confidence"

    def compute(self, y_true, probs):
        return float(np.mean(probs.max(1)) * {scale})


@hookimpl
def register_metrics(register):
    register(Confidence)
'''


@pytest.mark.slow
def test_editing_an_optimizer_a_metric_or_a_weights_file_reruns_exactly_the_cells_that_use_it(tmp_path):
    """The stored result's key left out the optimizer plugin (which holds the stacked update), metric plugins and the
    content of a weights file: editing one kept every stale cell. One function says what a cell depends on."""
    plugins, metric, weights = tmp_path / "mine.py", tmp_path / "metric.py", tmp_path / "start.bin"
    plugins.write_text(EDITED.format(scale=1.0))
    metric.write_text(METRIC.format(scale=1.0))
    weights.write_bytes(b"1" * 10)
    suite = tmp_path / "s.yaml"
    suite.write_text(
        f"name: edits\nplugins: [{plugins}, {metric}]\ndataset: {TINY}\ncv: {{folds: 2}}\n"
        "train: {epochs: 1, batch_size: 32, device: cpu}\ndefaults: {model: {name: cnn, widths: [8], hidden: 8}}\n"
        "variants:\n  - name: baseline\n"
        "  - {name: plain, regularizers: [{name: optimizer, algorithm: plain-sgd}]}\n"
        f"  - {{name: from-file, model: {{name: file-start, weights: {weights}}}}}\n"
    )
    out = tmp_path / "out"

    def rerun() -> list[str]:
        before = finished(out)
        summary = run_suite(suite, out=out, progress=False)
        assert summary.failed == 0 and summary.done + summary.skipped == 6
        return sorted({key[0] for key, cell in finished(out).items() if before.get(key) != cell})

    assert rerun() == ["baseline", "from-file", "plain"]
    plugins.write_text(EDITED.format(scale=0.5))  # the optimizer and the model live in this file
    assert rerun() == ["from-file", "plain"], "the cells of plain (its optimizer) and from-file (its model) rerun"
    weights.write_bytes(b"2" * 40)
    assert rerun() == ["from-file"], "the cells that start from the replaced file rerun"
    assert rerun() == []
    metric.write_text(METRIC.format(scale=2.0))
    assert rerun() == ["baseline", "from-file", "plain"], "a metric plugin is computed for every cell"
    conn = sqlite3.connect(out / "results.sqlite")
    provenance = json.loads(conn.execute("SELECT provenance FROM runs ORDER BY id DESC").fetchone()[0])
    conn.close()
    assert provenance["plugins"]["optimizer:plain-sgd"]["source"] == str(plugins)
    assert {"optimizer:adam", "metric:confidence"} <= set(provenance["plugins"])
    assert list(provenance["files"]) == [str(weights.resolve())]


def finished(out: Path) -> dict[tuple, tuple]:
    """(variant, seed, fold) -> (config hash, row id) of every finished cell stored under ``out``."""
    if not (out / "results.sqlite").exists():
        return {}
    conn = sqlite3.connect(out / "results.sqlite")
    try:
        rows = conn.execute("SELECT variant, seed, fold, config_hash, id FROM cells WHERE status = 'done'")
        return {tuple(row[:3]): tuple(row[3:]) for row in rows}
    finally:
        conn.close()


@pytest.mark.slow
def test_quick_runs_never_replace_full_results(tmp_path, monkeypatch):
    suite = suite_file(tmp_path, ["{name: baseline}"])
    assert run_suite(suite, out=tmp_path / "full", progress=False).done == 2
    result = invoke("run", suite, "--out", tmp_path / "full", "--quick", "--no-progress")
    assert result.exit_code == 2 and "quick" in result.output
    assert len(cells(tmp_path / "full")) == 2 and run_statuses(tmp_path / "full") == ["done"]
    monkeypatch.chdir(tmp_path)
    quick = run_suite(suite, quick=True, progress=False)
    assert quick.out == Path("reports") / "faults-quick"


@pytest.mark.slow
def test_every_variant_sees_the_same_batch_order_in_every_epoch(tmp_path):
    logs = {name: tmp_path / f"{name}.jsonl" for name in ("plain", "drawing", "augmented")}
    variants = [
        f"{{name: plain, regularizers: [{{name: order-spy, log: {logs['plain']}}}]}}",
        f"{{name: drawing, augmenters: [random-draws], regularizers: [{{name: order-spy, log: {logs['drawing']}}}]}}",
        "{name: augmented, augmenters: [{name: batch-augment, rotate: 10, noise: 0.1}], "
        f"regularizers: [{{name: order-spy, log: {logs['augmented']}}}]}}",
    ]
    assert run_suite(suite_file(tmp_path, variants, epochs=3), out=tmp_path / "out", progress=False).failed == 0
    orders = {name: log.read_text().splitlines() for name, log in logs.items()}
    assert len(orders["plain"]) == 2 * 3 * 3  # 2 folds x 3 epochs x 3 batches (80 training images, batches of 32)
    assert orders["plain"] == orders["drawing"] == orders["augmented"]


def test_two_regularizers_that_choose_the_final_weights_are_warned_about():
    from octbench.plan.check import weight_conflicts
    from octbench.plugins import PluginHost
    from octbench.suite import PluginRef, Variant

    host = PluginHost.load()
    model = PluginRef(name="cnn")
    both = Variant(
        name="v",
        model=model,
        preprocessors=[],
        augmenters=[],
        regularizers=[PluginRef(name="ema"), PluginRef(name="early-stopping")],
    )
    (warning,) = weight_conflicts([both], host)
    assert "'early-stopping' decides" in warning
    no_restore = both.model_copy(
        update={
            "regularizers": [PluginRef(name="ema"), PluginRef(name="early-stopping", params={"restore_best": False})]
        }
    )
    assert weight_conflicts([no_restore], host) == []


def test_a_cell_whose_training_collapses_is_warned_about(capsys):
    from octbench import runner
    from octbench.cell.execute import CellResult

    speeds: list[float] = []
    for speed in (4000, 4200, 3900, 300):
        result = CellResult("v [/x]", 0, 0, "h", timings={"train_images_per_s": speed, "train_warm": 1.0})
        runner._report(result, speeds)
    err = capsys.readouterr().err
    assert err.count("warning") == 1 and "300 images/s" in err and "v [/x]" in err


# --- the store and the cache -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_damaged_foreign_or_future_databases_are_one_line_errors(tmp_path):
    suite = suite_file(tmp_path, ["{name: baseline}"])
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "results.sqlite").write_bytes(b"SQLite format 3\x00" + os.urandom(5000))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    conn = sqlite3.connect(foreign / "results.sqlite")
    conn.execute("CREATE TABLE accounts (id INTEGER, balance REAL)")
    conn.commit()
    conn.close()
    before = hashlib.md5((foreign / "results.sqlite").read_bytes()).hexdigest()
    for folder in (garbage, foreign):
        for args in (("report", folder), ("run", suite, "--out", folder, "--no-progress")):
            result = invoke(*args)
            assert result.exit_code == 2 and "not a usable octbench results database" in result.output, result.output
            assert len(result.output.strip().splitlines()) == 1
    assert hashlib.md5((foreign / "results.sqlite").read_bytes()).hexdigest() == before, "a foreign database changed"
    future = tmp_path / "future"
    assert run_suite(suite, out=future, progress=False).done == 2
    conn = sqlite3.connect(future / "results.sqlite")
    conn.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    conn.commit()
    conn.close()
    result = invoke("report", future)
    assert result.exit_code == 2 and "schema version 99" in result.output


@pytest.mark.slow
def test_corrupted_cache_entries_are_recomputed(tmp_path):
    suite = suite_file(tmp_path, ["{name: clahe, preprocessors: [clahe]}", "{name: smote, preprocessors: [smote]}"])
    assert run_suite(suite, out=tmp_path / "first", progress=False).failed == 0
    entries = list((cache.cache_dir() / "arrays").rglob("*.npz"))
    assert len(entries) == 3  # the CLAHE'd dataset, SMOTE's output for each fold
    for entry in entries:
        entry.write_bytes(b"PK\x03\x04 not a zip any more")
    cache.clear_memory()
    second = run_suite(suite, out=tmp_path / "second", progress=False)
    assert second.failed == 0 and second.done == 4
    assert _metrics(tmp_path / "first", "smote") == _metrics(tmp_path / "second", "smote")


@contextmanager
def tmpfs(path: Path, size: str):
    path.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    ).returncode:
        pytest.skip("cannot mount a tmpfs here (no CAP_SYS_ADMIN)")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.mark.slow
def test_a_read_only_results_folder_still_reports_and_refuses_a_run(tmp_path):
    suite = suite_file(tmp_path, ["{name: baseline}"])
    assert run_suite(suite, out=tmp_path / "made", progress=False).done == 2
    with tmpfs(tmp_path / "ro", "8m") as ro:
        subprocess.run(["cp", str(tmp_path / "made" / "results.sqlite"), str(ro)], check=True)
        subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
        result = invoke("report", ro, "--output", tmp_path / "from-ro.html")
        assert result.exit_code == 0, result.output
        assert "Leaderboard" in (tmp_path / "from-ro.html").read_text()
        result = invoke("report", ro)
        assert result.exit_code == 2 and "--output" in result.output
        result = invoke("run", suite, "--out", ro, "--no-progress")
        assert result.exit_code == 2 and "Choose a writable --out" in result.output


@pytest.mark.slow
def test_a_full_disk_stops_the_run_with_exit_2_and_keeps_every_stored_cell(tmp_path):
    big = "{name: synthetic-oct, n_train: 3000, n_val: 400, n_test: 400}"
    suite = suite_file(tmp_path, ["{name: a}", "{name: b}", "{name: c}"], dataset=big, folds=3)
    with tmpfs(tmp_path / "small", "700k") as small:
        result = invoke("run", suite, "--out", small / "out", "--no-progress")
        assert result.exit_code == 2, result.output
        assert "Free space" in result.output and "rerun the same command" in result.output
        stored = cells(small / "out")
        assert 0 < len(stored) < 9
        subprocess.run(["cp", "-r", str(small / "out"), str(tmp_path / "moved")], check=True)
    summary = run_suite(suite, out=tmp_path / "moved", progress=False)
    assert summary.skipped == len(stored) and summary.skipped + summary.done == 9
    consistent(tmp_path / "moved")


# --- suites ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: a\nname: b\nvariants: [{name: x}]\n", "key 'name' appears twice"),
        ("name: s\ncv: {seeds: [0, 0]}\nvariants: [{name: x}]\n", "repeated: [0]"),
        ("name: s\ncv: {seeds: [-1]}\nvariants: [{name: x}]\n", "between 0 and 4294967295"),
        ("name: s\ntrain: {optimizer: {lr: .inf}}\nvariants: [{name: x}]\n", "finite number"),
        ("name: s\ntrain: {epochs: true}\nvariants: [{name: x}]\n", "should be a number, not true"),
        (
            "name: s\nablation: {mode: full, techniques: {"
            + ", ".join(f"t{i}: {{regularizers: [ema]}}" for i in range(20))
            + "}}\n",
            "1,048,576 variants",
        ),
        (
            "name: s\na: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
            "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
            "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
            "variants: [{name: x, regularizers: [{name: ema, decay: [*e, *e, *e, *e, *e, *e, *e, *e, *e]}]}]\n",
            "alias bomb",
        ),
    ],
)
def test_bad_suites_are_one_short_line_with_exit_2_and_nothing_written(tmp_path, text, message):
    suite = tmp_path / "bad.yaml"
    suite.write_text(text)
    started = time.monotonic()
    result = invoke("run", suite, "--out", tmp_path / "out")
    assert result.exit_code == 2 and message in result.output, result.output
    assert len(result.output) < 2000 and time.monotonic() - started < 10
    assert not (tmp_path / "out").exists()


def test_parameter_errors_show_values_cut_short(tmp_path):
    suite = tmp_path / "s.yaml"
    suite.write_text(
        "name: s\ndefaults: {model: seed-cnn}\nvariants: [{name: x, regularizers: [{name: ema, decay: '"
        + "y" * 5000
        + "'}]}]\n"
    )
    result = invoke("run", suite)
    assert result.exit_code == 2 and "yyy" in result.output and len(result.output) < 600


# --- downloads ---------------------------------------------------------------------------------------------------


class Misbehaving:
    """A server on 127.0.0.1 answering every request in one bad way."""

    def __init__(self, how: str) -> None:
        self.how = how
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}/breastmnist.npz"
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.stop = threading.Event()
        self.thread.start()

    def serve(self) -> None:
        self.socket.settimeout(0.2)
        while not self.stop.is_set():
            try:
                connection, _ = self.socket.accept()
            except TimeoutError:
                continue
            with connection:
                connection.recv(65536)
                if self.how == "garbage":
                    connection.sendall(b"this is not HTTP at all\r\n\r\n")
                elif self.how == "short":
                    connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 500)
                elif self.how == "drip":
                    connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
                    while not self.stop.is_set():
                        try:
                            connection.sendall(b"x")
                        except OSError:
                            break
                        time.sleep(0.3)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.socket.close()


@pytest.mark.slow
@pytest.mark.parametrize(("how", "message"), [("garbage", "failed"), ("short", "ended after"), ("drip", "stalled")])
def test_misbehaving_download_servers_leave_nothing_behind(tmp_path, monkeypatch, how, message):
    from octbench.data import files
    from octbench.data.medmnist import INFO

    server = Misbehaving(how)
    monkeypatch.setitem(INFO, "breastmnist", {**INFO["breastmnist"], "url": server.url})
    monkeypatch.setattr(files, "STALL_SECONDS", 1.0)
    try:
        result = invoke("data", "fetch", "breastmnist", "--data-dir", tmp_path / "data")
    finally:
        server.close()
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output, result.output
    assert not (tmp_path / "data").exists() or not list((tmp_path / "data").iterdir())


@pytest.mark.slow
def test_a_killed_download_leaves_no_part_file(tmp_path):
    server = Misbehaving("drip")
    code = (
        "import sys\nfrom octbench.data.medmnist import INFO\nfrom octbench.cli import main\n"
        f"INFO['breastmnist'] = {{**INFO['breastmnist'], 'url': {server.url!r}}}\n"
        f"sys.argv = ['octbench', 'data', 'fetch', 'breastmnist', '--data-dir', {str(tmp_path / 'data')!r}]\nmain()\n"
    )
    process = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: list((tmp_path / "data").glob(".*.part")) if (tmp_path / "data").exists() else False, process)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        server.close()
    assert process.returncode == 143 and "Traceback" not in stderr, stderr
    assert not (tmp_path / "data").exists() or not list((tmp_path / "data").iterdir())


def test_stored_arrays_handed_to_plugins_are_read_only(tmp_path):
    from octbench.dataset import load_data
    from octbench.plugins import PluginHost
    from octbench.suite.file import load_suite

    suite, _ = load_suite(suite_file(tmp_path, ["{name: baseline}"]))
    data = load_data(suite, PluginHost.load(), None)
    for array in (*data.pool, data.test_images, data.train_images):
        with pytest.raises(ValueError, match="read-only"):
            array[0] = np.zeros_like(array[0])


@pytest.mark.slow
def test_interrupting_run_suite_raises_with_the_summary(tmp_path, monkeypatch):
    from octbench_plugins import executors

    suite = suite_file(tmp_path, ["{name: a}", "{name: b}"])
    real = executors.execute_stack
    calls = []

    def interrupted_on_second(tasks, host=None, on_epoch=None):
        calls.append(tasks)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(tasks, host, on_epoch=on_epoch)

    monkeypatch.setattr(executors, "execute_stack", interrupted_on_second)
    with pytest.raises(RunInterrupted) as stop:
        run_suite(suite, out=tmp_path / "out", progress=False, overrides=["executor.stack=1"])
    assert stop.value.exit_code == 130 and stop.value.summary.done == 1
    assert run_statuses(tmp_path / "out") == ["interrupted"] and (tmp_path / "out" / "report.html").exists()


def test_a_busy_cpu_at_start_makes_torch_threads_wait_passively(tmp_path):
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OCTBENCH_WAIT_POLICY")}
        done = subprocess.run(
            [sys.executable, "-c", "import os, octbench; print(octbench.WAIT_POLICY, os.environ['OMP_WAIT_POLICY'])"],
            capture_output=True, text=True, env=env, timeout=60, check=True,
        )  # fmt: skip
    finally:
        busy.kill()
        busy.wait()
    assert done.stdout.startswith("PASSIVE (other processes were using") and done.stdout.strip().endswith("PASSIVE")
    kept = subprocess.run(
        [sys.executable, "-c", "import octbench; print(octbench.WAIT_POLICY)"],
        capture_output=True, text=True, env={**env, "OMP_WAIT_POLICY": "ACTIVE"}, timeout=60, check=True,
    )  # fmt: skip
    assert kept.stdout.strip() == "ACTIVE (set in the environment)"

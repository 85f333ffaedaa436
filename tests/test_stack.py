"""Stacked cells: several cells' models trained as one computation give each cell what it gets alone.

Exactness: a grouped convolution and a plain one add in different orders, so a stacked step agrees with the same
step alone to float32 rounding (about 1e-7 here), not bit for bit; over epochs those roundings grow as they do
between two machines. The tolerances below are stated where they are checked: one step within 1e-5; every
epoch's training and validation loss within 0.2% (measured: under 0.13% over 4 epochs); final accuracy and AUC
within 0.05 (two test images of 40 on this tiny data; measured 0.025).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import sqlite3
from pathlib import Path

import pytest
import torch

from octbench.cell.stack_model import GroupedModel, probe, unstackable
from octbench.cell.train import Learner, stack_groups, train_stack
from octbench.plugins import PluginHost
from octbench.runner import run_suite
from octbench.suite import Train
from tests.conftest import spy_plugin_path

HOSTILE = Path(__file__).resolve().parent / "plugins" / "hostile.py"


def _model(seed: int, dropout: float = 0.3):
    torch.manual_seed(seed)
    spec = {"widths": [8, 16], "hidden": 16, "batchnorm": True, "dropout": dropout}
    return PluginHost.load().create("model", "cnn", spec).build(1, 4, 28)


def _step(models, images, labels, seeds):
    """One forward and backward of ``models`` as one stack, dropout keyed by ``seeds``; the members' gradients and
    batch-norm statistics as they are after it."""
    for model in models:
        model.train()
    grouped = GroupedModel(models, seeds)
    logits = grouped.run(images)
    sum(torch.nn.functional.cross_entropy(o, y) for o, y in zip(logits, labels, strict=True)).backward()
    for model in models:
        for own, stacked in zip(model.parameters(), grouped.params, strict=True):
            own.grad = stacked.grad[models.index(model)]
    grouped.release()
    return logits


def test_one_stacked_step_is_each_members_step_alone():
    members = [_model(seed) for seed in range(3)]
    alone = [copy.deepcopy(m) for m in members]
    images = [torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    labels = [torch.randint(0, 4, (16,), generator=torch.Generator().manual_seed(10 + i)) for i in range(3)]
    stacked = _step(members, images, labels, [100, 101, 102])
    for i, model in enumerate(alone):
        (own,) = _step([model], [images[i]], [labels[i]], [100 + i])
        torch.testing.assert_close(stacked[i], own, rtol=1e-5, atol=1e-5)
        for (name, a), (_, b) in zip(members[i].named_parameters(), model.named_parameters(), strict=True):
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-5, msg=name)
        for (name, a), (_, b) in zip(members[i].named_buffers(), model.named_buffers(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=name)  # batch-norm statistics per member


def test_cumulative_batch_norm_keeps_each_members_own_count():
    """BatchNorm with momentum=None averages over every batch seen: in a stack each member by its own count (a member
    with a larger training part has stepped more), where the stack used the first member's count for all."""
    torch.manual_seed(0)
    members = [torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4, momentum=None)) for _ in range(3)]
    members[1][1].num_batches_tracked.fill_(5)
    members[1][1].running_mean.fill_(0.5)
    alone = [copy.deepcopy(m) for m in members]
    images = [torch.rand(8, 1, 12, 12, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    grouped = GroupedModel(members)
    for index in (None, torch.tensor([0, 1])):  # the whole stack, then a subset (the tail of an epoch)
        grouped.train()
        chosen = range(3) if index is None else index.tolist()
        grouped(torch.cat([images[g] for g in chosen], dim=1), index)
        for g in chosen:
            alone[g].train()
            alone[g](images[g])
    grouped.release()
    for mine, theirs in zip(members, alone, strict=True):
        for (name, a), (_, b) in zip(mine.named_buffers(), theirs.named_buffers(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_models_that_cannot_be_stacked_are_found():
    host = PluginHost.load([HOSTILE])
    layernorm = host.create("model", "layernorm-net").build(1, 4, 28)
    assert "LayerNorm" in unstackable(layernorm)
    mixers = [host.create("model", "channel-mixer").build(1, 4, 28) for _ in range(2)]
    assert unstackable(mixers[0]) is None, "every layer has a grouped form"
    assert probe(mixers, (1, 28, 28), torch.device("cpu")) is not None
    plain = [_model(s) for s in range(2)]
    assert probe(plain, (1, 28, 28), torch.device("cpu")) is None


STACK_SUITE = f"""
name: stacked
plugins: [{HOSTILE}, {spy_plugin_path()}]
dataset: {{name: synthetic-oct, n_train: 240, n_val: 60, n_test: 40}}
cv: {{folds: 2, seeds: [0, 1], val_fraction: 0.2}}
train: {{epochs: 4, batch_size: 32, device: cpu, threads: 1, precision: fp32}}
defaults: {{model: {{name: cnn, widths: [8, 16], hidden: 16, batchnorm: true, dropout: 0.3}}}}
variants:
  - name: baseline
  - name: stop-plateau
    regularizers: [{{name: early-stopping, patience: 1, min_delta: 0.5}}, {{name: reduce-on-plateau, patience: 0}}]
  - name: smote
    preprocessors: [smote]
  - name: augment
    augmenters: [{{name: batch-augment, hflip: 0.5, rotate: 10, noise: 0.05}}]
"""


def _cells(out: Path) -> dict:
    conn = sqlite3.connect(out / "results.sqlite")
    cells = {}
    for cell_id, variant, seed, fold, status, settings in conn.execute(
        "SELECT id, variant, seed, fold, status, settings FROM cells"
    ):
        metrics = dict(conn.execute("SELECT split || '/' || name, value FROM metrics WHERE cell_id=?", (cell_id,)))
        curves = conn.execute("SELECT train_loss, val_loss FROM curves WHERE cell_id=? ORDER BY epoch", (cell_id,))
        cells[(variant, seed, fold)] = (status, json.loads(settings), metrics, curves.fetchall())
    conn.close()
    return cells


@pytest.mark.slow
def test_a_stacked_run_gives_every_cell_what_it_gets_alone(tmp_path):
    suite = tmp_path / "s.yaml"
    suite.write_text(STACK_SUITE)
    alone = run_suite(suite, out=tmp_path / "alone", progress=False, overrides=["executor.stack=1"])
    stacked = run_suite(suite, out=tmp_path / "stacked", progress=False, overrides=["executor.stack=16"])
    assert alone.done == stacked.done == 16
    one, many = _cells(tmp_path / "alone"), _cells(tmp_path / "stacked")
    assert {s["stack_size"] for _, s, _, _ in one.values()} == {1}
    assert {s["stack_size"] for _, s, _, _ in many.values()} == {16}, "SMOTE's larger training parts stack too"
    # batch-augment augments the stack's batches at once; nothing else in these variants has a hook of its own
    assert all(s["per_member"] == [] for _, s, _, _ in many.values())
    lengths = {len(curves) for _, _, _, curves in many.values()}
    assert len(lengths) > 1, "early stopping ended some members before the others"
    for key, (_, _, metrics, curves) in one.items():
        _, _, stacked_metrics, stacked_curves = many[key]
        assert len(stacked_curves) == len(curves), f"{key} stopped at another epoch"
        # the same training up to float rounding, which differs between a grouped kernel and a single one (more so
        # where the CPU has AVX-512) and compounds epoch by epoch: within 0.2% after one epoch, twice that each next
        # (measured on an AVX-512 EPYC: at most 0.03%, 0.06%, 0.23% and 0.42% after epochs 1 to 4)
        for epoch, (losses, stacked_losses) in enumerate(zip(curves, stacked_curves, strict=True)):
            assert stacked_losses == pytest.approx(losses, rel=2e-3 * 2**epoch), (key, epoch + 1)
        # accuracy and AUC; precision is left out: for a class the model almost never predicts, one image moves it
        # between 0 and 1
        for name in ("heldout/accuracy", "heldout/auc_macro", "test/accuracy", "test/auc_macro"):
            assert stacked_metrics[name] == pytest.approx(metrics[name], abs=0.05), (key, name)


@pytest.mark.slow
def test_a_nan_loss_fails_its_member_alone_and_unstackable_models_train_alone(tmp_path, capsys):
    suite = tmp_path / "s.yaml"
    suite.write_text(
        STACK_SUITE.split("variants:")[0]
        + "variants:\n  - name: baseline\n  - {name: diverges, regularizers: [nan-loss]}\n"
        + "  - {name: layernorm, model: layernorm-net}\n"
    )
    summary = run_suite(
        suite, out=tmp_path / "out", progress=False, overrides=["executor.stack=12", "train.epochs=1"], check=False
    )
    assert (summary.done, summary.failed) == (8, 4)
    cells = _cells(tmp_path / "out")
    assert {k[0] for k, (status, *_) in cells.items() if status == "failed"} == {"diverges"}
    layernorm = [s for (variant, *_), (_, s, _, _) in cells.items() if variant == "layernorm"]
    assert all(s["stack_size"] == 1 and "LayerNorm" in s["not_stacked_because"] for s in layernorm)
    assert "layernorm trained alone, not stacked" in capsys.readouterr().err


def test_members_with_different_training_sizes_train_their_own_epochs():
    models = [_model(0, dropout=0.0), _model(1, dropout=0.0)]
    generator = torch.Generator().manual_seed(0)
    data = [
        (torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=generator), torch.arange(n) % 4)
        for n in (70, 130)
    ]
    config = Train(epochs=2, batch_size=32, device="cpu", precision="fp32")
    learners = [
        Learner(m, d, d, config=config, epochs=2, augmenters=[], regularizers=[], seed=i, num_classes=4)
        for i, (m, d) in enumerate(zip(models, data, strict=True))
    ]
    assert [len(group.learners) for group in stack_groups(learners)] == [2], "they stack"
    train_stack(learners, epochs=2)
    assert [learner.steps for learner in learners] == [3, 5]  # 70 = 2 x 32 + 6; 130 = 4 x 32 + 2
    assert all(learner.error is None and learner.result.epochs_run == 2 for learner in learners)


def test_cells_of_one_stack_train_their_own_epochs(tiny_suite):
    """A search may choose train.epochs per cell: the stack trained every member for its first member's epochs."""
    from octbench.cell.execute import execute_stack
    from octbench.plan.run import plan_run

    plan = plan_run(tiny_suite("- name: baseline"), overrides=["train.precision=fp32"])
    tasks = [
        dataclasses.replace(task, suite=task.suite.model_copy(update={"train": task.suite.train.model_copy(
            update={"epochs": epochs})}))
        for task, epochs in zip(plan.tasks, (1, 3), strict=True)
    ]  # fmt: skip
    results = execute_stack(tasks, plan.host)
    assert [r.status for r in results] == ["done", "done"]
    assert [r.settings["stack_size"] for r in results] == [2, 2], "they trained as one stack"
    assert [len(r.history) for r in results] == [1, 3]


def test_precision_is_measured_once_per_machine_and_a_suite_can_fix_it(monkeypatch, tmp_path):
    from octbench.cell import machine

    monkeypatch.setenv("OCTBENCH_TUNING_FILE", str(tmp_path / "machine.json"))  # not the session's record
    if not machine.bf16_native(torch.device("cpu")):
        pytest.skip("this CPU has no native bf16: there is nothing to choose")
    trials = []
    monkeypatch.setattr(machine, "_images_per_s", lambda *a: trials.append(a[-1]) or (2.0 if a[-1] else 1.0))
    model = _model(0)
    first = machine.precision(Train(), "cnn", model, (1, 28, 28), 4, torch.device("cpu"))
    again = machine.precision(Train(), "cnn", model, (1, 28, 28), 4, torch.device("cpu"))
    assert first == again == "bf16" and trials == [True, False, True, False], "the second came from the cache"
    assert machine.precision(Train(precision="fp32"), "cnn", model, (1, 28, 28), 4, torch.device("cpu")) == "fp32"
    assert len(trials) == 4
    monkeypatch.setattr(machine, "_images_per_s", lambda *a: 1.1 if a[-1] else 1.0)
    assert machine.precision(Train(batch_size=7), "cnn", model, (1, 28, 28), 4, torch.device("cpu")) == "fp32", (
        "bf16 only when clearly faster"
    )

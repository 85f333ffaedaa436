"""The plugin system: discovery, the contract, and failing loudly at load."""

from __future__ import annotations

import importlib.metadata
import inspect
import re
from pathlib import Path

import pytest

from octbench import hookspecs
from octbench.errors import PluginError
from octbench.kinds import KINDS, hook_kinds
from octbench.plugins import PluginHost, distribution_of

OCTBENCH_SOURCE = Path(__file__).resolve().parents[1] / "octbench"


@pytest.fixture(scope="module")
def host():
    return PluginHost.load()


def write_plugin(tmp_path, body: str, name: str = "my_plugins.py") -> Path:
    path = tmp_path / name
    path.write_text("from octbench import hookimpl\nfrom octbench.technique import *\n" + inspect.cleandoc(body))
    return path


def test_every_hook_is_documented_and_delivers_builtins(host):
    """Every hook delivers octbench's own techniques, except metrics and report sections, which octbench ships none
    of: the example package (examples/octbench-extra, installed by ``scripts/install.sh --dev``) delivers those."""
    unshipped = []
    for hook_name, kind in hook_kinds().items():
        spec = getattr(hookspecs, hook_name)
        assert (spec.__doc__ or "").strip(), f"{hook_name} has no docstring"
        if kind in ("metric", "report-section"):
            if not host.names(kind):
                unshipped.append(kind)
            continue
        assert any(distribution_of(host.get(kind, n).cls)[0] == "octbench" for n in host.names(kind)), (
            f"no built-in {kind} arrived through {hook_name}"
        )
    assert {"seed-cnn", "cnn"} <= set(host.names("model"))
    assert {"clahe", "smote"} <= set(host.names("preprocessor"))
    assert {"octmnist", "breastmnist", "retinamnist", "synthetic-oct"} <= set(host.names("dataset"))
    if unshipped:
        pytest.skip(
            f"no {' or '.join(unshipped)} plugin is installed to show its hook delivering: octbench ships none; "
            "install the example package (pip install -e examples/octbench-extra, or scripts/install.sh --dev)"
        )


def test_builtins_arrive_through_the_entry_point_group(host):
    entry_points = {ep.name for ep in importlib.metadata.entry_points(group="octbench")}
    assert {reg.plugin for reg in host.all()} == entry_points
    assert not PluginHost.load(entry_points=False).all()


def test_the_core_never_names_a_builtin_technique(host):
    # the suite's defaults name a dataset (octmnist), an executor (local) and an optimizer (adam); nothing else may
    # be named
    # only octbench's own: an installed third-party package may name a technique anything, e.g. a word the CLI uses
    builtins = [reg for reg in host.all() if distribution_of(reg.cls)[0] == "octbench"]
    assert len(builtins) > 20
    # the core names its kinds; the 'optimizer' regularizer shares its name with the optimizer kind
    names = {reg.name for reg in builtins if reg.kind != "dataset"} - {"local", "adam"} - set(KINDS) | {
        "octbench_plugins"
    }
    for path in OCTBENCH_SOURCE.rglob("*.py"):
        text = path.read_text()
        for name in names:
            assert not re.search(rf"['\"]{re.escape(name)}['\"]|import {name}", text), f"{path.name} names {name}"


def test_a_plugin_file_registers_techniques(tmp_path):
    path = write_plugin(
        tmp_path,
        """
        class Invert(Preprocessor):
            '''Invert intensities.'''
            name = "invert"
            def transform(self, images):
                return 255 - images

        @hookimpl
        def register_preprocessors(register):
            register(Invert)
        """,
    )
    host = PluginHost.load([path])
    reg = host.get("preprocessor", "invert")
    assert reg.source == str(path.resolve()) and reg.cls.summary() == "Invert intensities."
    assert host.create("preprocessor", "invert") is not host.create("preprocessor", "invert")


def test_a_plugin_folder_loads_every_file(tmp_path):
    folder = tmp_path / "plugins"
    folder.mkdir()
    for i in range(2):
        write_plugin(
            folder,
            f"""
            class M{i}(Model):
                name = "m{i}"

            @hookimpl
            def register_models(register):
                register(M{i})
            """,
            name=f"p{i}.py",
        )
    assert {"m0", "m1"} <= set(PluginHost.load([folder]).names("model"))


def test_duplicate_names_fail_naming_both_plugins(tmp_path):
    path = write_plugin(
        tmp_path,
        """
        class Clahe2(Preprocessor):
            name = "clahe"

        @hookimpl
        def register_preprocessors(register):
            register(Clahe2)
        """,
    )
    with pytest.raises(PluginError) as info:
        PluginHost.load([path])
    message = str(info.value)
    assert "'clahe' is registered twice" in message and "preprocess" in message and "my_plugins" in message


def test_unknown_hooks_fail_at_load(tmp_path):
    path = write_plugin(tmp_path, "@hookimpl\ndef register_modles(register):\n    pass\n")
    with pytest.raises(PluginError, match="register_modles"):
        PluginHost.load([path])


def test_registering_the_wrong_kind_fails(tmp_path):
    path = write_plugin(
        tmp_path,
        """
        class NotAModel(Preprocessor):
            name = "nope"

        @hookimpl
        def register_models(register):
            register(NotAModel)
        """,
    )
    with pytest.raises(PluginError, match="not a subclass of Model"):
        PluginHost.load([path])


def test_a_plugin_that_fails_to_import_is_named(tmp_path):
    path = write_plugin(tmp_path, "raise ImportError('needs a package you lack')\n")
    with pytest.raises(PluginError, match=r"my_plugins\.py failed to import.*needs a package"):
        PluginHost.load([path])


def test_a_plugin_that_exits_while_imported_is_exit_2_naming_the_file(tmp_path):
    from click.testing import CliRunner

    from octbench.cli import cli

    path = write_plugin(tmp_path, "import sys\nsys.exit(0)\n")
    with pytest.raises(PluginError, match=r"my_plugins\.py failed to import: it called sys\.exit\(0\)"):
        PluginHost.load([path])
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        f"name: exits\nplugins: [{path}]\ndataset: {{name: synthetic-oct}}\nvariants: [{{name: baseline}}]\n"
    )
    result = CliRunner().invoke(cli, ["run", str(suite), "--out", str(tmp_path / "out"), "--no-progress"])
    assert result.exit_code == 2 and "my_plugins.py failed to import: it called sys.exit(0)" in result.output
    assert not (tmp_path / "out").exists()


def test_a_cross_field_parameter_error_names_the_parameters_it_involves(tmp_path):
    path = write_plugin(
        tmp_path,
        """
        from pydantic import model_validator
        from octbench.params import Params

        class PercentileClip(Preprocessor):
            name = "percentile-clip"
            stateless = True

            class Params(Params):
                low: float = 1
                high: float = 99
                keep_dtype: bool = True

                @model_validator(mode="after")
                def ordered(self):
                    if self.low >= self.high:
                        raise ValueError("low must be below high")
                    return self

            def transform(self, images):
                return images

        @hookimpl
        def register_preprocessors(register):
            register(PercentileClip)
        """,
    )
    host = PluginHost.load([path])
    with pytest.raises(PluginError) as info:
        host.create("preprocessor", "percentile-clip", {"high": 40, "low": 60})
    assert str(info.value) == (
        "The 'low' and 'high' parameters of percentile-clip are invalid together: low must be below high. "
        "Got low=60, high=40."
    )


def test_a_hook_that_raises_is_named(tmp_path):
    path = write_plugin(tmp_path, "@hookimpl\ndef register_models(register):\n    raise KeyError('oops')\n")
    with pytest.raises(PluginError, match="failed in register_models: KeyError"):
        PluginHost.load([path])


def test_missing_plugin_file_is_an_error(tmp_path):
    with pytest.raises(PluginError, match="does not exist"):
        PluginHost.load([tmp_path / "absent.py"])


def test_bad_parameters_are_explained(host):
    with pytest.raises(PluginError) as info:
        host.create("preprocessor", "clahe", {"clip_limit": -1})
    assert str(info.value) == "The 'clip_limit' parameter of clahe must be greater than 0. Got -1 instead."
    with pytest.raises(PluginError, match=r"clahe has no parameter 'clip' \(did you mean 'clip_limit'\?\)"):
        host.create("preprocessor", "clahe", {"clip": 2})


def test_unknown_names_list_the_kind_and_suggest(host):
    with pytest.raises(PluginError) as info:
        host.get("preprocessor", "smoet")
    assert "did you mean 'smote'" in str(info.value) and "clahe" in str(info.value)


def test_environment_variables_add_and_block_plugins(tmp_path, monkeypatch):
    path = write_plugin(
        tmp_path,
        """
        class Tiny(Model):
            name = "tiny-model"

        @hookimpl
        def register_models(register):
            register(Tiny)
        """,
    )
    monkeypatch.setenv("OCTBENCH_PLUGINS", str(path))
    monkeypatch.setenv("OCTBENCH_DISABLE_PLUGINS", "resample")
    host = PluginHost.load()
    assert "tiny-model" in host.names("model")
    assert "smote" not in host.names("preprocessor") and "clahe" in host.names("preprocessor")


SHAPES = Path(__file__).resolve().parent / "plugins" / "shapes.py"


@pytest.mark.slow
def test_preprocessors_that_change_channels_or_size_run_end_to_end(tmp_path):
    from octbench.runner import run_suite
    from octbench.testing import check_technique

    host = PluginHost.load([SHAPES])
    for name in ("to-rgb", "resize"):
        check_technique(host.get("preprocessor", name).cls)
    suite = tmp_path / "shapes.yaml"
    suite.write_text(
        f"name: shapes\nplugins: [{SHAPES}]\n"
        "dataset: {name: synthetic-oct, n_train: 160, n_val: 40, n_test: 40}\ncv: {folds: 2}\n"
        "train: {epochs: 1, batch_size: 32, device: cpu}\ndefaults: {model: {name: cnn, widths: [8], hidden: 8}}\n"
        "variants:\n  - name: baseline\n  - {name: rgb, preprocessors: [to-rgb]}\n"
        "  - {name: bigger, preprocessors: [{name: resize, size: 40}]}\n"
        "  - {name: both, preprocessors: [to-rgb, {name: resize, size: 20}, normalize]}\n"
    )
    summary = run_suite(suite, out=tmp_path / "out", progress=False)
    assert (summary.done, summary.failed) == (8, 0)


def test_dataset_commands_come_from_their_plugin_and_a_plugin_cannot_replace_a_core_command(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from octbench import cli as cli_module

    listed = CliRunner().invoke(cli_module.cli, ["data", "list", "--data-dir", str(tmp_path)])
    assert listed.exit_code == 0 and "octmnist" in listed.output, listed.output
    data = cli_module.cli.get_command(None, "data")
    assert data.callback.__module__ == "octbench_plugins.medmnist_data", "the core command line names no dataset"

    hijack = tmp_path / "hijack.py"
    hijack.write_text(
        "import click\nfrom octbench import hookimpl\n\n@click.command('run')\ndef run():\n    pass\n\n"
        "@hookimpl\ndef register_commands(cli):\n    cli.add_command(run)\n"
    )
    monkeypatch.setenv("OCTBENCH_PLUGINS", str(hijack))
    monkeypatch.setattr(cli_module.cli, "commands", dict(cli_module.cli.commands))
    monkeypatch.setattr(cli_module.cli, "plugins_added", False)
    result = CliRunner().invoke(cli_module.cli, ["no-such-command"])
    assert result.exit_code == 2 and "registered a command named run" in result.output, result.output
    assert cli_module.cli.commands["run"].callback.__module__ == "octbench.cli", "octbench's own run is kept"

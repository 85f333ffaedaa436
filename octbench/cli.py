"""The command line: parses arguments and delegates. Invalid input exits 2 with one line; failed cells exit 1."""

from __future__ import annotations

import json
import signal
import sys

import click

from octbench.cell.metrics import SCALARS
from octbench.errors import Interrupted, OctbenchError
from octbench.signals import stop_on_sigterm
from octbench.starter import KINDS as STARTER_KINDS


class UserError(click.ClickException):
    exit_code = 2

    def show(self, file=None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


class Cli(click.Group):
    """octbench's commands, and those plugins add through ``register_commands`` (loaded only when a name is not
    one of octbench's own, or for the list in ``--help``: the core commands start without loading plugins)."""

    plugins_added = False
    core: frozenset[str] = frozenset()  # octbench's own commands, named once the module has defined them

    formatting = False  # while --help lists the commands: a listed plugin command shows as remembered

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        found = self.commands.get(name)
        if found is None or (isinstance(found, Listed) and not self.formatting):
            self._add_plugin_commands(strict=True)  # a plugin's command, used: its plugin is imported now
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self.formatting = True
        try:
            super().format_commands(ctx, formatter)
        finally:
            self.formatting = False

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._list_plugin_commands()
        return super().list_commands(ctx)

    def own(self) -> dict[str, click.Command]:
        return {name: cmd for name, cmd in self.commands.items() if name in self.core}

    def _list_plugin_commands(self) -> None:
        """Plugins' commands for ``--help``, from the remembered listing (``octbench.listing``): no plugin is
        imported unless one was installed or changed since the last command."""
        if self.plugins_added:
            return
        from octbench.listing import listing

        try:
            found = listing(self.own())
        except OctbenchError as exc:
            click.echo(f"warning: plugins' commands are not listed: {exc}", err=True)
            return
        warn_broken(found["broken"])
        for name, help_text in found["commands"].items():
            self.commands.setdefault(name, Listed(name, short_help=help_text))

    def _add_plugin_commands(self, strict: bool) -> None:
        if self.plugins_added:
            return
        self.plugins_added = True
        for name in [n for n, c in self.commands.items() if isinstance(c, Listed)]:
            del self.commands[name]  # the real commands replace what the listing remembered
        from octbench.plugins import PluginHost

        try:
            PluginHost.load().add_commands(self)
        except OctbenchError as exc:
            if strict:
                raise UserError(str(exc)) from None
            click.echo(f"warning: plugins' commands are not listed: {exc}", err=True)

    def invoke(self, ctx: click.Context):
        try:
            with stop_on_sigterm():
                return super().invoke(ctx)
        except OctbenchError as exc:
            raise UserError(str(exc)) from None
        except (KeyboardInterrupt, Interrupted) as exc:
            signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
            click.echo(f"interrupted by {signal.Signals(signum).name}; nothing was lost", err=True)
            ctx.exit(128 + int(signum))


class Listed(click.Command):
    """A plugin's command as ``--help`` lists it, before its plugin is imported; using it imports the plugin."""


def warn_broken(broken: list[dict]) -> None:
    """The warning an entry point that failed to import gets, also when the listing remembered it."""
    if not broken:
        return
    from octbench.plugins import BrokenPlugin, warn_once

    for found in broken:
        warn_once(BrokenPlugin(**found))


@click.group(cls=Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="octbench")
def cli() -> None:
    """Benchmark techniques on OCTMNIST and any MedMNIST 2D dataset, leakage-free, with a report."""


@cli.command()
@click.argument("suite")
@click.option("--out", type=click.Path(file_okay=False), help="Output folder [default: reports/<suite name>].")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Folder with MedMNIST .npz files.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), help="Overrides the suite's train.device.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a suite key, e.g. cv.folds=3.")
@click.option("--executor", "executor_name", metavar="NAME", help="Run cells with this executor (local, ray, ...).")
@click.option("--address", metavar="ADDR", help="The executor's cluster address (Ray: auto, ray://host:port).")
@click.option(
    "--fresh", is_flag=True, help="Discard stored results and tuning trials in the output folder and start over."
)
@click.option("--quick", is_flag=True, help="Cap epochs and subsample training for a fast first look.")
@click.option("--no-check", is_flag=True, help="Skip the trial of every variant on a sample before the run.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def run(suite, out, data_dir, device, overrides, executor_name, address, fresh, quick, no_check, no_progress) -> None:
    """Train and evaluate every variant of SUITE (a file, or the name of a shipped suite such as smoke); resume where
    a previous run stopped."""
    from octbench.runner import RunInterrupted, run_suite

    overrides = list(overrides)
    if executor_name:
        overrides.append(f"executor.name={executor_name}")
    if address:
        overrides.append(f"executor.address={address}")
    try:
        summary = run_suite(
            suite,
            out=out,
            data_dir=data_dir,
            device=device,
            overrides=overrides,
            fresh=fresh,
            quick=quick,
            progress=not no_progress,
            check=not no_check,
        )
    except RunInterrupted as stop:
        done = stop.summary.skipped + stop.summary.done + stop.summary.failed
        click.echo(
            f"interrupted by {signal.Signals(stop.signum).name}: {done} of {stop.summary.planned} cells are stored "
            f"({stop.summary.done} finished in this run). Rerun the same command to resume.\n"
            f"report of what finished: {stop.summary.report}",
            err=True,
        )
        sys.exit(stop.exit_code)
    click.echo(
        f"{summary.done} cells done, {summary.failed} failed, {summary.skipped} already finished "
        f"({summary.planned} planned) in {summary.seconds:.1f} s\nreport: {summary.report}"
    )
    sys.exit(summary.exit_code)


@cli.command()
@click.argument("suite")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Folder with MedMNIST .npz files.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), help="Overrides the suite's train.device.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a suite key, e.g. cv.folds=3.")
@click.option("--quick", is_flag=True, help="Try the variants on the sample a --quick run would fold.")
def check(suite, data_dir, device, overrides, quick) -> None:
    """Try every variant of SUITE on a sample of its data (fit, two training steps, evaluation), in seconds, and
    report each problem with the variant and plugin named. Writes nothing; exits 2 when something fails."""
    import time

    from octbench.plan.check import print_notes
    from octbench.plan.preflight import check_suite
    from octbench.plan.run import plan_run

    started = time.perf_counter()
    plan = plan_run(suite, overrides=list(overrides), quick=quick, device=device, data_dir=data_dir, progress=True)
    problems = check_suite(plan)
    seconds = time.perf_counter() - started
    if problems:
        listed = "\n  ".join(map(str, problems))
        raise UserError(f"{len(problems)} of {len(plan.variants)} variants failed their trial:\n  {listed}")
    click.echo(
        f"all {len(plan.variants)} variants passed their trial on a sample of {plan.suite.dataset.name} "
        f"({seconds:.1f} s)"
    )
    print_notes(plan.notes, click.echo)
    tuned = [v for v in plan.variants if v.tune is not None]
    if tuned:
        cells = len(plan.suite.cv.seeds) * plan.suite.cv.folds
        trainings = sum((v.tune.trials + 1) * cells for v in tuned) + (len(plan.variants) - len(tuned)) * cells
        budgets = sorted({v.tune.trials for v in tuned})
        click.echo(
            f"{len(tuned)} of {len(plan.variants)} variants are tuned inside each of their {cells} cells with "
            f"{' to '.join(map(str, budgets))} trials: {trainings:,} trainings in all (tried at their set values here)"
        )


@cli.command()
@click.argument("dataset")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="A dataset parameter, e.g. size=64.")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Folder with MedMNIST .npz files.")
@click.option(
    "--threshold",
    type=click.FloatRange(min=0, max=2, min_open=True),
    help="Distance under which two images count as near-duplicates [default: 0.1].",
)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--show", type=click.IntRange(min=0), default=5, show_default=True, help="Closest pairs to list.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def audit(dataset, params, data_dir, threshold, device, show, as_json) -> None:
    """Near-duplicates in DATASET before any training: for every CV-pool image (train + val) its nearest neighbour
    in the rest of the pool, for every test image its nearest in the pool, and how many are closer than the
    threshold. A pool with many more near-copies of itself than the test split has makes CV look optimistic."""
    import numpy as np
    import yaml

    from octbench.cell.device import resolve
    from octbench.dataset import load_data
    from octbench.plugins import PluginHost
    from octbench.report import audit as near
    from octbench.suite import PluginRef

    parsed = {}
    for item in params:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--param {item!r}: write KEY=VALUE, e.g. --param size=64.")
        parsed[key.strip()] = yaml.safe_load(value) if value.strip() else ""
    data = load_data(PluginRef(name=dataset, params=parsed), PluginHost.load(), data_dir, progress=not as_json)
    found = near.audit(data.pool[0], data.test_images, threshold=threshold or near.THRESHOLD, device=resolve(device))
    pairings = [p for p in (found.within_pool, found.test_to_pool) if p is not None]
    if as_json:
        payload = {
            "dataset": dataset,
            "params": parsed,
            "md5": data.md5,
            "threshold": found.within_pool.threshold,
            "optimistic": found.optimistic,
            **{
                p.queries: {
                    "images": len(p.distances),
                    "blank": int(p.blank.sum()),
                    "rate": p.rate,
                    "closest": p.closest(show),
                }
                for p in pairings
            },
        }
        click.echo(json.dumps(payload, indent=1))
        return
    click.echo(found.sentence())
    for p in pairings:
        blank = f", {int(p.blank.sum())} blank frames apart" if p.blank.any() else ""
        click.echo(f"{p.name}: {int(p.near.sum())} of {int((~p.blank).sum())} images{blank} ({100 * p.rate:.1f}%) "
                   f"closer than {p.threshold:g}; median distance to the nearest "
                   f"{float(np.nanmedian(p.distances)):.3f}")  # fmt: skip
        for i, j, d in p.closest(show):
            click.echo(f"  {p.queries} #{i}  pool #{j}  distance {d:.3f}")


@cli.command()
@click.argument("directory", default=".", type=click.Path(file_okay=False))
def init(directory) -> None:
    """Copy the suites octbench ships into DIRECTORY/suites, to edit and run (existing files are kept)."""
    from pathlib import Path

    from octbench.suite.file import shipped_suites

    target = Path(directory) / "suites"
    try:
        target.mkdir(parents=True, exist_ok=True)
        written, kept = [], []
        for name, source in shipped_suites().items():
            destination = target / source.name
            if destination.exists():
                kept.append(name)
                continue
            destination.write_bytes(source.read_bytes())
            written.append(name)
    except OSError as exc:
        raise UserError(f"cannot write to {target}: {exc.strerror}. Choose a writable folder.") from None
    click.echo(f"{len(written)} suites written to {target}" + (f"; kept your {', '.join(kept)}" if kept else ""))
    click.echo(f"next: octbench run {target / 'smoke.yaml'}   (or by name: octbench run smoke)")


@cli.command()
@click.argument("directories", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["html", "md", "csv", "json", "latex", "predictions"]),
    default="html",
    show_default=True,
    help="html: the page; md, csv, json: every number; latex: a booktabs table (report.tex, compiles as is); "
    "predictions: every stored per-image prediction (predictions.csv).",
)
@click.option(
    "--figures",
    type=click.Path(file_okay=False),
    help="Also write every figure to this folder as SVG, PDF and 300-dpi PNG.",
)
@click.option(
    "--metric",
    help="The metric compared with the reference: one of octbench's (" + ", ".join(SCALARS) + ") or a metric "
    "plugin's [default: the suite's report.metric, else accuracy].",
)
@click.option(
    "--rope",
    type=click.FloatRange(min=0, max=0.5, min_open=True),
    help="Differences within ±ROPE count as practically equivalent [default: the suite's report.rope, else 0.01].",
)
@click.option(
    "--positive-class",
    metavar="NAME|INDEX",
    help="Binary tasks: the class whose sensitivity is reported [default: the suite's, else the minority class].",
)
@click.option(
    "--output",
    type=click.Path(allow_dash=True),
    help="File to write (a folder for csv; '-' prints md, json or latex) [default: in the first DIR].",
)
def report(directories, fmt, figures, metric, rope, positive_class, output) -> None:
    """Render a report from stored results only (no training). Several DIRs of one dataset merge into one
    comparison; DIRs of different datasets make a study over datasets (rank tests, critical-difference diagram)."""
    from pathlib import Path

    from octbench.report.publish import publish

    if output == "-" and fmt in ("html", "csv", "predictions"):
        raise UserError(f"--output - prints md, json or latex only; give a path for {fmt}.")
    paths = publish(
        list(directories),
        fmt=fmt,
        output=output,
        metric=metric,
        rope=rope,
        positive_class=positive_class,
        figures=figures,
    )
    drawn = [p for p in paths if figures and p.is_relative_to(Path(figures))]
    for path in paths:
        if path not in drawn:
            click.echo(f"{fmt}: {path}")
    if figures:
        tiles = [p for p in drawn if p.is_relative_to(Path(figures) / "images")]
        click.echo(
            f"figures: {len(drawn) - len(tiles)} files (SVG, PDF, 300-dpi PNG) in {figures}"
            + (f", and the page's {len(tiles)} images (PNG) under {Path(figures) / 'images'}" if tiles else "")
        )


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--plugin", "paths", multiple=True, type=click.Path(), help="Also load this plugin file or folder.")
def plugins(as_json, paths) -> None:
    """List every technique and executor: name, kind, parameters, and the plugin, package and version it came from."""
    from octbench.kinds import kinds
    from octbench.listing import listing
    from octbench.plugins import BrokenPlugin

    found = listing(cli.own(), paths)  # remembered: no plugin is imported unless one changed
    warn_broken(found["broken"])
    rows = found["plugins"]
    if as_json:
        click.echo(json.dumps({"plugins": rows, "broken": found["broken"]}, indent=2, default=str))
        return
    for kind in kinds():
        members = [r for r in rows if r["kind"] == kind]
        if not members:
            continue
        click.echo(f"{kind}s:")
        # techniques that share one parameter list and origin (MedMNIST's eleven datasets) are listed together
        groups: dict[str, list[dict]] = {}
        for r in members:
            groups.setdefault(json.dumps([r["parameters"], r["plugin"]], default=str), []).append(r)
        for group in groups.values():
            first = group[0]
            params = ", ".join(_parameter(p) for p in first["parameters"]) or "no parameters"
            origin = first["plugin"] + (
                f", {first['distribution']} {first['version']}" if first["distribution"] else ""
            )
            if len(group) > 3:
                click.echo(f"  {', '.join(r['name'] for r in group)}")
                click.echo(f"  {'':<20} each {first['summary'].split()[0]} {kind}: {params}  [{origin}]")
                continue
            for r in group:
                click.echo(f"  {r['name']:<20} {r['summary']}")
                click.echo(f"  {'':<20} {params}  [{origin}]")
    for broken in found["broken"]:
        click.echo(f"broken: {BrokenPlugin(**broken)}")


def _parameter(described: dict) -> str:
    return (
        f"{described['name']} (required)" if described["required"] else f"{described['name']}={described['default']!r}"
    )


@cli.group()
def new() -> None:
    """Start something new: a plugin package."""


@new.command("plugin")
@click.argument("name")
@click.option(
    "--kind",
    type=click.Choice(STARTER_KINDS),
    default="preprocessor",
    show_default=True,
)
@click.option("--dir", "folder", type=click.Path(file_okay=False), default=".", help="Where to write the package.")
def new_plugin(name, kind, folder) -> None:
    """Write octbench-NAME/: a plugin package with one KIND technique, its tests and a suite, ready to install."""
    from pathlib import Path

    from octbench.starter import new_plugin as write

    root = write(name, kind, Path(folder))
    click.echo(f"wrote {root}\nnext: pip install -e {root} && pytest {root}")


cli.core = frozenset(cli.commands)


def main() -> None:
    from octbench.cpu_wait import decide

    decide()  # before anything loads torch: OpenMP reads the policy once, when torch loads
    cli(prog_name="octbench")

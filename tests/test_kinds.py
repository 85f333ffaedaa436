"""A kind is named once: a toy kind, added to ``octbench.kinds`` and given a base class in a temporary module, flows
through the hooks, ``octbench plugins``, the suite's variant lists and their reference checks, what a cell depends
on (its configuration hash) and the provenance, the report, the starter and the conformance kit, with no other
change. It runs in a fresh interpreter, where the kind is added before octbench reads its kinds, as an entry in
``kinds.py`` is."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from octbench import kinds
from octbench.kinds import variant_lists

REPO = Path(__file__).resolve().parents[1]

TOY = '''
from octbench import hookimpl
from octbench.technique import Technique


class Toy(Technique):
    """A made-up kind of technique."""

    kind = "toy"


class Wobble(Toy):
    """Wobbles (does nothing: the kind's code would use it)."""

    name = "wobble"


@hookimpl
def register_toys(register):
    register(Wobble)
'''

SCRIPT = """
import json, os, sqlite3, sys
from pathlib import Path

from octbench import kinds

kinds.REGISTRY["toy"] = kinds.Kind("toy", ("toykind:Toy",), "Register ``Toy`` subclasses: made up.", "toys")

from click.testing import CliRunner

from octbench import hookspecs

from octbench.plan import dependencies
from octbench.cli import cli
from octbench.plan.run import plan_run
from octbench.starter import new_plugin
from octbench.testing import COMMON, check_technique, checks_for
from tests.numbers import write_results
import toykind

here = Path.cwd()
found = {}
found["hook"] = "register_toys" in vars(hookspecs.every_hook())
listed = CliRunner().invoke(cli, ["plugins", "--json"])
found["plugins"] = [(p["kind"], p["name"]) for p in json.loads(listed.output)["plugins"] if p["kind"] == "toy"]
found["plugins_text"] = "toys:" in CliRunner().invoke(cli, ["plugins"]).output
wrong = CliRunner().invoke(cli, ["check", "wrong.yaml"])
found["wrong"] = [wrong.exit_code, wrong.output]
plan = plan_run(here / "suite.yaml", out=here / "out")
found["toys"] = {v.name: [r.name for r in v.toys] for v in plan.variants}
found["depends"] = [list(p) for p in dependencies.of_cell(plan.host, plan.suite, plan.variants[1]).plugins]
found["hashes"] = {t.variant.name: t.config_hash for t in plan.tasks if t.fold == 0}
found["dumped"] = plan.variants[0].model_dump()
write_results(here / "suite.yaml", here / "out")
conn = sqlite3.connect(here / "out" / "results.sqlite")
provenance = json.loads(conn.execute("SELECT provenance FROM runs").fetchone()[0])
conn.close()
found["provenance"] = sorted(k for k in provenance["plugins"] if k.startswith("toy:"))
page = (here / "out" / "report.html").read_text()
found["page"] = "toys:" in page and "<code>wobble</code>" in page
root = new_plugin("my-toy", "toy", here / "starter")
sys.path.insert(0, str(root / "src"))
import octbench_my_toy.plugin as started
found["started"] = [started.MyToy.kind, check_technique(started.MyToy)]
found["checks"] = [c.__name__ for c in checks_for(toykind.Wobble)] == [c.__name__ for c in COMMON]
check_technique(toykind.Wobble)
print(json.dumps(found))
"""

SUITE = """
name: toys
dataset: {name: synthetic-oct, n_train: 120, n_val: 20, n_test: 40}
cv: {folds: 2, seeds: [0], val_fraction: 0.2}
train: {epochs: 1, batch_size: 32, device: cpu, precision: fp32}
defaults: {model: {name: cnn, widths: [4], hidden: 4}}
variants:
  - name: baseline
  - name: wobbly
    toys: [wobble]
"""


def test_a_toy_kind_flows_through_every_place_that_knows_kinds(tmp_path):
    import json

    (tmp_path / "toykind.py").write_text(TOY)
    (tmp_path / "suite.yaml").write_text(SUITE)
    (tmp_path / "wrong.yaml").write_text(SUITE.replace("toys: [wobble]", "toys: [wobbel]"))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)]),
        "OCTBENCH_PLUGINS": "toykind",
        "OCTBENCH_CACHE_DIR": str(tmp_path / "cache"),
        "OCTBENCH_TUNING_FILE": str(tmp_path / "tuning.json"),
    }
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT)], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["hook"], "the kind has its hook, register_toys"
    assert found["plugins"] == [["toy", "wobble"]] and found["plugins_text"], "octbench plugins lists it"
    code, output = found["wrong"]
    assert code == 2 and "wobbel" in output and "wobble" in output and "Traceback" not in output, output
    assert found["toys"] == {"baseline": [], "wobbly": ["wobble"]}, "variants list it under its suite key"
    assert ["toy", "wobble"] in found["depends"], "a cell that lists it depends on its source"
    assert found["provenance"] == ["toy:wobble"]
    assert found["page"], "the report shows the variant's list"
    assert found["started"] == ["toy", []], "the starter writes one that passes the conformance kit"
    assert found["checks"], "the kit's common checks apply, and no other"
    # a variant that lists none of the new kind is stored and hashed as before the kind existed
    assert "toys" not in found["dumped"]
    assert "toys" not in variant_lists().values() and "toy" not in kinds.REGISTRY  # this process never had it
    assert found["hashes"]["baseline"] == _baseline_hash(tmp_path)


def _baseline_hash(tmp_path: Path) -> str:
    from octbench.plan.run import plan_run

    plain = tmp_path / "plain.yaml"
    plain.write_text(SUITE.split("  - name: wobbly")[0])
    plan = plan_run(plain, out=tmp_path / "plain")
    return next(t.config_hash for t in plan.tasks if t.variant.name == "baseline" and t.fold == 0)

"""``octbench new plugin NAME``: a plugin package that installs, registers and passes its own tests as written.

It writes ``octbench-NAME/`` with a ``pyproject.toml`` declaring the ``octbench`` entry point, one technique of the
chosen kind in ``src/octbench_NAME/plugin.py``, its tests (the conformance kit, and a short run that uses it), a
suite, and a README saying what to change.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

from octbench import kinds
from octbench.errors import OctbenchError

TECHNIQUES = {
    "preprocessor": (
        '''
        class {cls}(Preprocessor):
            """Invert pixel intensities (a placeholder: put your transform here)."""

            name = "{name}"
            stateless = True  # each image on its own and nothing fitted: transformed once per dataset, then cached

            class Params(Params):
                strength: float = Field(1.0, ge=0, le=1, description="how much of the inverted image to blend in")

            def transform(self, images):
                inverted = images.max() - images if images.dtype != np.uint8 else 255 - images
                out = (1 - self.params.strength) * images + self.params.strength * inverted
                return out.round().astype(images.dtype) if images.dtype == np.uint8 else out.astype(images.dtype)
        ''',
        "preprocessors: [{name}]",
    ),
    "augmenter": (
        '''
        class {cls}(Augmenter):
            """Add Gaussian noise to training batches (a placeholder: put your augmentation here)."""

            name = "{name}"

            class Params(Params):
                std: float = Field(0.05, ge=0, le=1, description="noise standard deviation, in the batch's units")

            def __call__(self, batch, generator):
                noise = torch.randn(batch.shape, generator=generator, device=batch.device, dtype=batch.dtype)
                low, high = self.value_range  # what the batch's values span: (0, 1) for uint8 images
                return (batch + noise * self.params.std * (high - low)).clamp(low, high)
        ''',
        "augmenters: [{name}]",
    ),
    "model": (
        '''
        class {cls}(Model):
            """A small CNN (a placeholder: put your architecture here)."""

            name = "{name}"
            image_sizes = (28, 64)

            class Params(Params):
                width: int = Field(16, ge=1, le=512, description="channels of the convolution")

            def build(self, in_channels, num_classes, image_size):
                width = self.params.width
                return nn.Sequential(
                    nn.Conv2d(in_channels, width, 3, padding=1),
                    nn.ReLU(),
                    nn.AdaptiveAvgPool2d(1),
                    nn.Flatten(),
                    nn.Linear(width, num_classes),
                )
        ''',
        "model: {name}",
    ),
    "regularizer": (
        '''
        class {cls}(Regularizer):
            """Clip the gradient norm before every optimizer step (a placeholder: put your training change here)."""

            name = "{name}"

            class Params(Params):
                max_norm: float = Field(1.0, gt=0, description="largest total gradient norm")

            def before_step(self, model):
                torch.nn.utils.clip_grad_norm_(model.parameters(), self.params.max_norm)
        ''',
        "regularizers: [{name}]",
    ),
    "optimizer": (
        '''
        class {cls}(Optimizer):
            """Adagrad (a placeholder: build your optimizer here)."""

            name = "{name}"

            class Params(Params):
                lr_decay: float = Field(0.0, ge=0, description="learning-rate decay per step")

            def build(self, parameters, *, lr, weight_decay, device):
                return torch.optim.Adagrad(
                    parameters, lr=lr, lr_decay=self.params.lr_decay, weight_decay=weight_decay
                )
        ''',
        "regularizers: [{{name: optimizer, algorithm: {name}}}]",
    ),
    "metric": (
        '''
        class {cls}(Metric):
            """Top-2 accuracy (a placeholder: compute your metric here)."""

            name = "{name}"
            higher_is_better = True

            def compute(self, y_true, probs):
                top = np.argsort(probs, axis=1)[:, -2:]
                return float(np.mean([label in row for label, row in zip(y_true, top)]))
        ''',
        None,
    ),
    "report-section": (
        '''
        class {cls}(ReportSection):
            """Cells done per variant (a placeholder: compute your section here)."""

            name = "{name}"
            title = "Cells per variant"

            def rows(self, results, analysis):
                return [{{"variant": v.key, "done": len(v.cells), "planned": v.planned}} for v in results.variants]

            def render(self, results, analysis):
                items = "".join(
                    f"<li>{{html.escape(r['variant'])}}: {{r['done']}} of {{r['planned']}}</li>"
                    for r in self.rows(results, analysis)
                )
                return f"<ul>{{items}}</ul>"
        ''',
        None,
    ),
}
#: a kind without a template of its own gets this one: a technique with no method of its own, which passes the
#: conformance kit's common checks (and a kind's own checks, where it has none)
GENERIC = '''
class {cls}({base}):
    """A placeholder {kind}: write what a {base} does here (see the guide, docs/plugins.md)."""

    name = "{name}"

    class Params(Params):
        strength: float = Field(1.0, ge=0, description="a parameter, validated before anything runs")
'''


def __getattr__(name: str) -> tuple[str, ...]:
    # the kinds `octbench new plugin` offers: every kind octbench knows (``octbench.kinds``), read when asked for
    if name == "KINDS":
        return kinds.kinds()
    raise AttributeError(f"module 'octbench.starter' has no attribute {name!r}")


def _template(kind: str) -> tuple[str, str, str | None]:
    """(base class name, class body, the variant line of its suite) for ``kind``; a kind with no template of its
    own gets ``GENERIC`` where the conformance kit has no check specific to it, and a clear refusal otherwise."""
    base = kinds.bases(kind)[0]
    if kind in TECHNIQUES:
        body, line = TECHNIQUES[kind]
        return base.__name__, body, line
    from octbench.testing import COMMON, checks_for

    if len(checks_for(base)) > len(COMMON):
        raise OctbenchError(
            f"octbench new plugin has no starter for a {kind} yet: a {base.__name__} must pass checks of its own "
            "that a placeholder cannot. Start from the guide's example instead (docs/plugins.md)."
        )
    return base.__name__, GENERIC.replace("{base}", base.__name__).replace("{kind}", kind), None


def _imports(code: str, module: str, base: str) -> str:
    """The imports ``code`` uses: one block, sorted as isort sorts third-party imports (octbench is one here)."""
    needed = ["from octbench import hookimpl", f"from {module} import {base}"]
    if "np." in code:
        needed.append("import numpy as np")
    if re.search(r"(?<![\w.])torch\.", code):
        needed.append("import torch")
    if "Field(" in code:
        needed.append("from pydantic import Field")
    if re.search(r"(?<![\w.])nn\.", code):
        needed.append("from torch import nn")
    if "Params" in code:
        needed.append("from octbench.params import Params")
    if "html." in code:
        needed.append("import html")
    plain = sorted(line for line in needed if line.startswith("import "))
    froms = sorted((line for line in needed if line.startswith("from ")), key=lambda line: line.split()[1])
    return "\n".join([*plain, *froms])


def _identifier(name: str) -> str:
    return re.sub(r"\W", "_", name)


def new_plugin(name: str, kind: str, folder: Path) -> Path:
    """Write the package into ``folder/octbench-NAME`` and return that path."""
    if not re.fullmatch(r"[a-z][a-z0-9-]*", name):
        raise OctbenchError(
            f"a plugin name is lowercase letters, digits and '-', starting with a letter; got {name!r}."
        )
    if kind not in kinds.REGISTRY:
        raise OctbenchError(f"--kind must be one of {', '.join(kinds.kinds())}; got {kind!r}.")
    base, body, suite_line = _template(kind)
    module = kinds.REGISTRY[kind].bases[0].partition(":")[0]
    root = folder / f"octbench-{name}"
    if root.exists():
        raise OctbenchError(f"{root} already exists: choose another name or folder.")
    package = f"octbench_{_identifier(name)}"
    cls = "".join(part.capitalize() for part in re.split(r"[-_]", name))
    technique = textwrap.dedent(body).format(cls=cls, name=name).strip()
    files = {
        "pyproject.toml": PYPROJECT.format(name=name, package=package),
        "README.md": README.format(name=name, kind=kind, package=package),
        f"src/{package}/__init__.py": f'"""octbench plugin {name}."""\n',
        f"src/{package}/plugin.py": PLUGIN.format(
            name=name,
            hook=kinds.hook_name(kind),
            cls=cls,
            technique=technique,
            kind=kind,
            imports=_imports(technique, module, base),
        ),
        "tests/test_plugin.py": TESTS.format(
            package=package,
            cls=cls,
            variant=(suite_line.format(name=name) if suite_line else "regularizers: []"),
            check_metric=(f"\n    assert '{name}' in stored" if kind == "metric" else ""),
        ),
        f"suites/{name}.yaml": SUITE.format(
            name=name,
            package=package,
            variant=(suite_line.format(name=name) if suite_line else "regularizers: []"),
        ),
    }
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


PYPROJECT = """[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "octbench-{name}"
version = "0.1.0"
description = "octbench plugin: {name}"
requires-python = ">=3.10"
dependencies = ["octbench"]

# octbench loads every module named in this entry-point group; the left-hand name is the plugin's
[project.entry-points.octbench]
{name} = "{package}.plugin"

[tool.setuptools.packages.find]
where = ["src"]

[tool.pytest.ini_options]
testpaths = ["tests"]
"""

README = """# octbench-{name}

An octbench plugin ({kind}), made with `octbench new plugin {name} --kind {kind}`.

```bash
pip install -e .              # octbench finds it through the `octbench` entry point in pyproject.toml
octbench plugins              # lists it, with this package's name and version
pytest                        # the conformance kit and a short run that uses it
octbench run suites/{name}.yaml
```

Change `src/{package}/plugin.py`: the class is a placeholder that works. Its parameters are the pydantic
`Params` model; octbench validates them before any training. The conformance kit (`octbench.testing`) checks what
every technique of this kind must do; `octbench check suites/{name}.yaml` tries the suite on a sample in seconds.
See octbench's guide, docs/plugins.md, for every kind and hook.
"""

PLUGIN = '''"""The {name} {kind}, registered through octbench's hooks (``octbench.hookspecs``)."""

from __future__ import annotations

{imports}


{technique}


@hookimpl
def {hook}(register):
    register({cls})
'''

TESTS = '''"""The conformance kit over the plugin, and a short run that uses it."""

from __future__ import annotations

import sqlite3

from octbench.testing import parametrize_with_checks
from {package}.plugin import {cls}


@parametrize_with_checks([{cls}])
def test_conformance(technique, check):
    check(technique)


def test_in_a_run(octbench_register, octbench_suite, octbench_run):
    octbench_register("{package}.plugin")  # registered even when the package is not installed
    suite = octbench_suite("- name: baseline\\n- {{name: with-it, {variant}}}")
    summary = octbench_run(suite)
    assert summary.failed == 0 and summary.done > 0
    conn = sqlite3.connect(summary.out / "results.sqlite")
    stored = {{name for (name,) in conn.execute("SELECT DISTINCT name FROM metrics")}}
    conn.close()
    assert "accuracy" in stored{check_metric}
'''

SUITE = """# The plugin against a baseline, on synthetic OCT-like data: `octbench run suites/{name}.yaml`
name: {name}
dataset: {{name: synthetic-oct, n_train: 600, n_val: 100, n_test: 200}}
cv: {{folds: 3, seeds: [0]}}
train: {{epochs: 3, batch_size: 64}}
defaults: {{model: seed-cnn}}
variants:
  - name: baseline
  - {{name: with-{name}, {variant}}}
"""

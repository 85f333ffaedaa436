"""The fixtures octbench gives plugin authors (octbench/pytest_plugin.py), used as an author would."""

from __future__ import annotations

import pytest

from octbench.plugins import PluginHost

PLUGIN = '''
from octbench import hookimpl
from octbench.technique import Preprocessor


class Invert(Preprocessor):
    """Invert intensities."""

    name = "invert"
    stateless = True

    def transform(self, images):
        return 255 - images


@hookimpl
def register_preprocessors(register):
    register(Invert)
'''


@pytest.mark.slow
def test_fixtures_let_an_author_run_their_plugin(octbench_register, octbench_suite, octbench_run, tmp_path):
    plugin = tmp_path / "invert_plugin.py"
    plugin.write_text(PLUGIN)
    octbench_register(plugin)
    assert "invert" in PluginHost.load().names("preprocessor")
    summary = octbench_run(octbench_suite("- name: baseline\n- {name: inverted, preprocessors: [invert]}"))
    assert (summary.done, summary.failed) == (4, 0)


def test_tiny_data(octbench_tiny_data):
    assert octbench_tiny_data.train_images.shape == (160, 28, 28, 1)

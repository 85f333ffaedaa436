"""A regularizer that records which Ray node (and process) trained each cell, then takes its time."""

from __future__ import annotations

import json
import os
import time

from octbench import hookimpl
from octbench.params import Params
from octbench.technique import Regularizer


class NodeSpy(Regularizer):
    """Logs the Ray node id and process of the cell it configures, then sleeps ``seconds``."""

    name = "node-spy"

    class Params(Params):
        log: str
        seconds: float = 0.0

    def configure_model(self, model):
        import ray

        node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else "not on ray"
        with open(self.params.log, "a") as handle:
            handle.write(json.dumps({"node": node, "pid": os.getpid()}) + "\n")
        time.sleep(self.params.seconds)
        return model


@hookimpl
def register_regularizers(register):
    register(NodeSpy)

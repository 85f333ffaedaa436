"""The Ray executor: each stack of cells is a Ray task, on a cluster or on a Ray instance started for the run.

The driver (``octbench run``) stays the only writer of the store: results come back as tasks finish and are
committed one by one, so resumption, skipping finished cells and the report work as with the local executor. The
dataset goes once into Ray's object store and every task reads it from there; the plugin files the suite names
travel with the tasks (written out on each node), so a node needs octbench and the packages of entry-point plugins
installed (the same environment, or Ray's ``runtime_env``), not the suite's folder. A task whose worker process or
node is lost is retried by Ray up to ``max_retries`` times, then recorded as failed with the reason.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic import Field
from rich.markup import escape

from octbench import hookimpl
from octbench.cell import failed_result
from octbench.console import task_progress
from octbench.errors import OctbenchError
from octbench.params import Params
from octbench.technique import Executor, RunContext

INSTALL = "pip install 'octbench[ray]'"


def _ray():
    try:
        import ray
    except ImportError:
        raise OctbenchError(f"executor 'ray' needs Ray, which is not installed: {INSTALL}") from None
    return ray


WAIT_POLICY_HOOK = "octbench.cpu_wait.decide"


def _write_plugins(files: dict[str, bytes]) -> dict[str, str]:
    """The suite's plugin files, written under this node's temporary folder (by content); original path to local."""
    local = {}
    for original, content in files.items():
        digest = hashlib.sha1(original.encode() + content).hexdigest()[:12]
        folder = Path(tempfile.gettempdir()) / "octbench-plugins" / digest
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / Path(original).name
        if not path.exists():
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(content)
            os.replace(tmp, path)
        local[original] = str(path)
        local[str(Path(original).parent)] = str(folder)  # a plugin folder maps to the folder of its files
    return local


def run_stack(stack: list[Any], data: Any, files: dict[str, bytes], threads: int) -> list[Any]:
    """A Ray task: one stack of cells on whatever node Ray chose, with the driver's data and plugin files."""
    import torch

    from octbench.cell import execute_stack
    from octbench.dataset import provide_data, provide_datasets

    torch.set_num_threads(threads)
    local = _write_plugins(files)
    stack = [
        dataclasses.replace(task, plugin_paths=tuple(local.get(p, p) for p in task.plugin_paths)) for task in stack
    ]
    first = stack[0]
    data, datasets = data
    provide_data(first.suite, first.data_dir, data)
    provide_datasets(datasets)  # a variant's own size of the data, as the driver loaded it
    try:
        return execute_stack(stack)
    except Exception as exc:  # the plugins could not even be loaded here: every cell of the stack fails with why
        reason = f"could not run on node {_node()}: {type(exc).__name__}: {exc}"
        return [failed_result(task, reason) for task in stack]


def _node() -> str:
    try:
        import ray

        return ray.get_runtime_context().get_node_id()[:12]
    except Exception:
        return "?"


class RayExecutor(Executor):
    """A Ray cluster (``address``), or a Ray instance started on this machine for the run: each stack is a task."""

    name = "ray"

    class Params(Params):
        address: str | None = Field(
            None,
            description="'auto' (the cluster RAY_ADDRESS or `ray start` names), 'ray://host:port', a GCS "
            "address; none: start a private Ray instance on 127.0.0.1 for this run",
        )
        cpus_per_cell: float = Field(1.0, gt=0, description="CPUs Ray reserves for each stack's task")
        gpus_per_cell: float = Field(0.0, ge=0, description="GPUs per task; fractions let small models share one")
        max_retries: int = Field(3, ge=0, le=100, description="retries of a task whose worker or node was lost")
        runtime_env: dict[str, Any] | None = Field(None, description="Ray runtime_env for the tasks (pip, env_vars)")

    def check(self) -> None:
        _ray()

    def threads_per_cell(self) -> int | None:
        return max(1, int(self.params.cpus_per_cell))

    def parallelism(self, device: str, stacks: int) -> tuple[int, str]:
        return stacks, f"as many stacks as the cluster's resources fit ({self.params.cpus_per_cell:g} CPUs each)"

    def run(self, stacks, on_result, context: RunContext) -> None:
        ray = _ray()
        started_here = not ray.is_initialized()
        if started_here:
            # Without an address, start a private instance on loopback: never join whatever RAY_ADDRESS or a
            # stale /tmp/ray/ray_current_cluster left by another session points to ('auto' asks for that).
            local = {"address": "local", "_node_ip_address": "127.0.0.1"}
            ray.init(
                **({"address": self.params.address} if self.params.address else local),
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
                # each worker decides its CPU wait policy for its own node before it loads torch, as the command
                # line does for this machine (octbench.cpu_wait)
                runtime_env={"worker_process_setup_hook": WAIT_POLICY_HOOK, **(self.params.runtime_env or {})},
            )
        task = ray.remote(run_stack).options(
            num_cpus=self.params.cpus_per_cell,
            num_gpus=self.params.gpus_per_cell,
            max_retries=self.params.max_retries,
            retry_exceptions=False,
        )
        pending: dict = {}
        try:
            data = ray.put((context.data, context.datasets))
            for stack in stacks:
                pending[task.remote(stack, data, context.plugin_files, context.threads)] = stack
            self._collect(ray, pending, on_result, context, sum(len(s) for s in stacks))
        except BaseException:  # Ctrl-C, SIGTERM: stop what has not finished; the store keeps what has
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        finally:
            if started_here:
                ray.shutdown()

    def _collect(self, ray, pending: dict, on_result, context: RunContext, total: int) -> None:
        with task_progress() as bars:
            cells = bars.add_task("cells", total=total, status="", visible=context.progress)
            last = 0.0
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                for ref in done:
                    stack = pending.pop(ref)
                    try:
                        results = ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        reason = f"the Ray task running this cell failed after {self.params.max_retries} retries: "
                        reason += str(exc).strip().splitlines()[0][:300]
                        results = [failed_result(t, reason) for t in stack]
                    for result in results:
                        on_result(result)
                        bars.update(cells, advance=1)
                if time.monotonic() - last > 2:  # cells done, running and queued, and the nodes they run on
                    last = time.monotonic()
                    alive = sum(1 for node in ray.nodes() if node.get("Alive"))
                    queued = sum(len(s) for s in pending.values())
                    bars.update(cells, status=escape(f"{queued} to go on {alive} node{'s' if alive != 1 else ''}"))


@hookimpl
def register_executors(register):
    register(RayExecutor)

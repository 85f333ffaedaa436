"""Where a result came from: package versions, device, octbench version and commit, suite hash, data MD5."""

from __future__ import annotations

import contextlib
import os
import platform
import re
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, requires, version
from pathlib import Path
from typing import Any

from octbench.cpu_wait import decide as wait_policy
from octbench.plugins import distribution_of


def _declared_packages() -> list[str]:
    """octbench and its declared (non-extra) dependencies."""
    try:
        requirements = requires("octbench") or []
    except PackageNotFoundError:
        requirements = []
    names = [re.match(r"[A-Za-z0-9_.-]+", r).group(0) for r in requirements if "extra ==" not in r]
    return ["octbench", *names]


def package_versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in _declared_packages():
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


SOURCE_PATHS = ("octbench", "plugins", "pyproject.toml")


def source_commit() -> str:
    """The git commit of the octbench source tree, when it is a checkout, with '+dirty' if its code (the core, the
    built-in plugins, the package metadata) differs from that commit."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return "unknown"
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(
            # octbench's own code only: a results folder or a suite inside the checkout is not the code
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--", *SOURCE_PATHS],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (commit or "unknown") + ("+dirty" if dirty else "")


def accelerator() -> dict[str, Any]:
    """torch, CUDA, cuDNN and NVIDIA driver versions and the GPU's name (None where there is none), the CPU."""
    import torch

    from octbench.cell.device import cpu_model

    found: dict[str, Any] = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": None,
        "driver": None,
        "gpu": None,
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
    }
    if torch.cuda.is_available():
        found["cudnn"] = torch.backends.cudnn.version()
        found["gpu"] = torch.cuda.get_device_name(0)
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            answer = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=10,
            )
            found["driver"] = answer.stdout.split("\n")[0].strip() or None
    return found


def collect(
    *,
    device: str,
    suite_hash: str,
    data_md5: str,
    data_source: str,
    quick: bool,
    data_dir: str | None = None,
    pools: dict[str, Any] | None = None,
    plugins: dict[str, Any] | None = None,
    files: dict[str, str] | None = None,
    executor: dict[str, Any] | None = None,
    host: Any = None,
    plugin_paths: tuple[str, ...] = (),
    notes: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    """``pools``: per seed, how many pool rows its cells fold and a digest of which (``RunPlan.pools``).
    ``plugins``: for each plugin a cell uses (``kind:name``, ``octbench.plan.dependencies``), its plugin, file,
    distribution, version and source hash (``PluginHost.provenance``); ``files``: each file a technique reads (a
    checkpoint) and a hash of its content. With the run's ``host``: every installed plugin distribution and its
    version, the metric plugins and whether higher is better, and entry points that failed to import."""
    installed, metrics, broken = {}, {}, []
    if host is not None:
        for reg in host.all():
            distribution, version = distribution_of(reg.cls)
            if distribution:
                installed[distribution] = version
        metrics = {m.name: m.higher_is_better for m in host.instances("metric")}
        broken = [str(b) for b in host.broken]
    return {
        "plugins": plugins or {},
        "files": files or {},
        "notes": notes or {},
        "plugin_distributions": installed,
        "plugin_paths": list(plugin_paths),
        "metrics": metrics,
        "broken_plugins": broken,
        "cpu_wait": wait_policy(),
        "executor": executor or {},
        "versions": package_versions(),
        "accelerator": accelerator(),
        "octbench_commit": source_commit(),
        "platform": platform.platform(),
        "device": device,
        "suite_hash": suite_hash,
        "data_md5": data_md5,
        "data_source": data_source,
        "data_dir": data_dir,
        "quick": quick,
        "pools": pools or {},
        "command": " ".join(sys.argv),
    }

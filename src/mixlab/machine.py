"""What a result was measured on: software versions and the machine (recorded with runs and reports)."""
from __future__ import annotations

import os
import platform

from ._version import __version__


def versions() -> dict:
    """mixlab, torch, numpy, python, platform and CUDA versions, the instruction set torch's CPU kernels use and
    its threads (every results row records them)."""
    import numpy
    import torch

    return {"mixlab": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "python": platform.python_version(), "platform": platform.platform(),
            "cuda": torch.version.cuda if torch.cuda.is_available() else None,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch_threads": torch.get_num_threads()}


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else what ``platform`` says)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")),
                        platform.processor() or "")
    except OSError:
        return platform.processor() or ""


def machine() -> dict:
    """CPU, cores, torch's threads, GPU and :func:`versions` (reports and benchmarks print them)."""
    import torch

    return {"cpu": cpu_name(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, **versions()}

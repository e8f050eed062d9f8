"""The compiled CPU kernel of :func:`mixlab.ot.convolutional_barycenter`: its float32 warm start, fused per group.

PyTorch runs the batched iteration as about 75 operations, each streaming the whole batch through memory; on a
CPU that, not arithmetic, is most of a solve. ``_barycenter_f32.c`` does the same iteration one group at a time,
in the core's cache. It is plain C (no Python or PyTorch headers): compiled on first use with the system's C
compiler (``$CC``, else ``cc``, ``gcc`` or ``clang``) for this machine's CPU, in about 2 s, cached in
``$MIXLAB_KERNEL_DIR`` (default ``~/.cache/mixlab/kernels``) under a name that hashes the source, the flags
and the CPU, and called through :mod:`ctypes` from up to ``torch.get_num_threads()`` threads (ctypes releases
the GIL).

Where no compiler works, or with ``MIXLAB_NATIVE=0``, the solver runs its PyTorch iteration instead (same
result up to rounding; :func:`status` says why). Only the starting point comes from here: the exact iterations
that finish every solve stay in PyTorch and must meet the tolerance themselves.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch import Tensor

SOURCE = Path(__file__).with_name("_barycenter_f32.c")
MAX_K, MAX_HISTORY = 16, 8  # as in the C source

_lock = threading.Lock()
_state: dict = {}  # "fn": the loaded function, or "reason": why there is none
_pool: tuple[int, int, ThreadPoolExecutor] | None = None  # (the process it was made in, its threads, the pool)


def _cache_dir() -> Path:
    return Path(os.environ.get("MIXLAB_KERNEL_DIR") or Path.home() / ".cache" / "mixlab" / "kernels")


def _compilers() -> list[str]:
    names = [os.environ["CC"]] if os.environ.get("CC") else ["cc", "gcc", "clang"]
    return [path for path in (shutil.which(name) for name in names) if path]


def _cpu_id() -> str:
    """What ``-march=native`` depends on: the CPU's model and feature flags (Linux), else the platform."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return "".join(sorted({line for line in lines if line.startswith(("model name", "flags", "Features"))}))
    except OSError:
        return platform.machine() + platform.processor()


def _flag_sets() -> list[tuple[list[str], list[str]]]:
    """``(compiler flags, libraries)`` to try, best first."""
    base = ["-O3", "-std=gnu11", "-fPIC", "-shared", "-fno-math-errno", "-fno-trapping-math",
            "-fassociative-math", "-fno-signed-zeros"]
    sets = [(base + ["-march=native"], []), (base, [])]
    if platform.system() == "Linux" and platform.machine() == "x86_64":  # glibc's vectorised expf / logf
        sets.insert(0, (base + ["-march=native", "-DMIXLAB_MVEC"], ["-lmvec"]))
    return sets


def disabled() -> bool:
    """Whether ``MIXLAB_NATIVE=0`` (or false / no / off) asks for the PyTorch / Python paths."""
    return os.environ.get("MIXLAB_NATIVE", "1").strip().lower() in ("0", "false", "no", "off")


def _build(path: Path = SOURCE, stem: str = "barycenter_f32") -> Path:
    """Compiles a kernel's C source (or finds it cached as ``<stem>-<hash>.so``); raises RuntimeError saying why
    it could not."""
    compilers = _compilers()
    if not compilers:
        raise RuntimeError("no C compiler found (set CC, or install gcc or clang)")
    source = path.read_bytes()
    errors = []
    for cc in compilers:
        try:
            version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError) as error:
            errors.append(f"{cc}: {error}")
            continue
        for flags, libs in _flag_sets():
            key = hashlib.sha256(b"\0".join([source, " ".join(flags + libs).encode(), version.encode(),
                                             _cpu_id().encode()])).hexdigest()[:16]
            target = _cache_dir() / f"{stem}-{key}.so"
            failed = target.with_suffix(".failed")  # holds the compiler's message: not retried on every start
            if target.exists():
                return target
            if failed.exists():
                errors.append(f"{cc} {' '.join(flags)}: {failed.read_text().strip()} (cached; see {failed})")
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)  # then renamed: concurrent builds are safe
            os.close(fd)
            try:
                result = subprocess.run([cc, *flags, str(path), "-o", tmp, *libs, "-lm"], capture_output=True,
                                        text=True, timeout=120)
                if result.returncode == 0:
                    os.replace(tmp, target)
                    return target
                message = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1]
                failed.write_text(message + "\n")
                errors.append(f"{cc} {' '.join(flags)}: {message}")
            except (OSError, subprocess.SubprocessError) as error:
                errors.append(f"{cc}: {error}")
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
    raise RuntimeError("compiling the kernel failed: " + "; ".join(errors))


def _load():
    with _lock:
        if not _state:
            if disabled():
                _state["reason"] = "disabled by MIXLAB_NATIVE=0"
            else:
                try:
                    fn = ctypes.CDLL(str(_build())).mixlab_barycenter_f32
                    i64, ptr = ctypes.c_int64, ctypes.c_void_p
                    fn.argtypes = [i64] * 6 + [ptr] * 9 + [ctypes.c_double, i64, i64, i64, ctypes.c_double, i64,
                                                           ctypes.c_float, ptr]
                    fn.restype = ctypes.c_int
                    _state["fn"] = fn
                except Exception as error:  # whatever went wrong, the PyTorch iteration runs: say why
                    _state["reason"] = f"{type(error).__name__}: {error}"
        return _state.get("fn")


def available() -> bool:
    """Whether the compiled kernel can be used (compiles it on the first call)."""
    return _load() is not None


def status() -> str:
    """``"available"``, or why the PyTorch iteration is used instead."""
    return "available" if available() else _state["reason"]


def reset() -> None:
    """Forgets the loaded kernel (and why there was none): the next use tries again, e.g. after setting CC."""
    with _lock:
        _state.clear()


def warm_start(a_box: Tensor, r0: Tensor, c0: Tensor, w: Tensor, k_h: Tensor, k_w: Tensor, floor_at: float,
               tol: float, max_iter: int, anderson: int, relax: float, patience: int = 10
               ) -> tuple[Tensor, Tensor, Tensor]:
    """Float32 iterations of every group until ``tol`` (checked every iteration), a stall over ``patience``
    iterations, or ``max_iter``.

    Args: ``a_box`` ``(B, k, hb, wb)`` the images cut to their boxes, whose top-left corners on the ``H x W`` grid
    are ``r0``, ``c0`` ``(B, k)`` (CPU; see ``_boxes``, ``_cut_to_boxes``); ``w`` ``(B, k)`` weights summing to one
    in float32, largest last; ``k_h`` ``(H, H)``, ``k_w`` ``(W, W)`` the float32 Gibbs kernel per axis;
    ``floor_at`` the floor of kernel sums (see ``_LogKernel``).
    Returns ``(G, niter, err)``: potentials ``(B, k, H, W)`` float32, iterations and last criterion ``(B,)``.
    """
    global _pool
    fn = _load()
    if fn is None:
        raise RuntimeError(f"the compiled barycenter kernel is not available: {_state['reason']}")
    b, k, hb, wb = a_box.shape
    h, wd = k_h.shape[0], k_w.shape[0]
    if not 2 <= k <= MAX_K or not 0 <= anderson <= MAX_HISTORY:
        raise ValueError(f"the compiled kernel takes 2 to {MAX_K} images per group and an Anderson history of at "
                         f"most {MAX_HISTORY}; got k = {k}, anderson = {anderson}")
    a_box = torch.nn.functional.pad(a_box.float(), (0, -wb % 8)).contiguous()  # rows padded to a multiple of 8
    r0 = r0.to(torch.int64).contiguous()
    c0 = c0.to(torch.int64).contiguous()
    w = w.float().contiguous()
    k_h, k_w = k_h.float().contiguous(), k_w.float().contiguous()
    g = torch.empty(b, k, h, wd)
    niter = torch.empty(b, dtype=torch.int64)
    err = torch.empty(b)
    counter = torch.zeros(1, dtype=torch.int64)
    args = (b, k, h, wd, hb, wb, a_box.data_ptr(), r0.data_ptr(), c0.data_ptr(), k_h.data_ptr(), k_w.data_ptr(),
            w.data_ptr(), g.data_ptr(), niter.data_ptr(), err.data_ptr(), tol, max_iter, 1, anderson, relax,
            patience, floor_at, counter.data_ptr())
    threads = max(1, min(torch.get_num_threads(), b))
    if threads == 1:
        codes = [fn(*args)]
    else:
        with _lock:  # a pool made before a fork has no threads in the child: make another there
            if _pool is None or _pool[0] != os.getpid() or _pool[1] < threads:
                _pool = (os.getpid(), threads, ThreadPoolExecutor(threads, thread_name_prefix="mixlab-ot"))
            pool = _pool[2]
        codes = list(pool.map(lambda _: fn(*args), range(threads)))  # the threads share the groups (counter)
    if 1 in codes:
        raise MemoryError("the compiled barycenter kernel could not allocate its work buffers")
    if any(codes):
        raise RuntimeError(f"the compiled barycenter kernel refused its arguments (codes {codes})")
    return g, niter, err

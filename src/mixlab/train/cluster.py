"""``--executor ray``: a sweep's runs as Ray tasks (the optional extra ``ray``), results and checkpoints coming back
into the one store (:func:`train_on_ray`, called by :func:`mixlab.train.train_missing`).

Each run is one task asking for its resources (a CPU run: its threads as CPUs; a GPU run: ``1 / jobs`` of a GPU
and one CPU). Ray connects to ``address`` (a flag), else ``$RAY_ADDRESS``, else starts a local instance on this
machine. Two ways a task trains, chosen by whether the task's node sees the driver's output folder (a token file
written there by the driver, read back by the task):

* shared folder (one machine, or a cluster with a shared file system): the task trains into ``out`` itself,
  exactly as a ``--jobs`` worker does (checkpoint every epoch, its row written to ``results.db``, shared caches
  built once under a lock);
* no shared folder: the task trains in a temporary folder of its node and sends each epoch's checkpoint to a
  keeper actor on the driver's side; the driver writes the finished run's row and its final checkpoint into
  ``out``. (Caches such as OptTransMix's barycenters are built per task there.)

A task whose worker dies (node lost, process killed) is retried by Ray (``max_retries``) and resumes from the last
checkpoint: the one in ``out``, or the keeper's. A run that raises is not retried: the sweep stops, as with
``--jobs``.
"""
from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path
from typing import Callable

from ..config import TrainConfig, device_kind

#: retries of a task whose worker died (its run resumes from its last checkpoint)
MAX_RETRIES = 3
TOKEN_FILE = ".ray-token"


def ray_module():
    """``ray``, or an ImportError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ImportError("--executor ray needs Ray: pip install 'mixlab[ray]' (or pip install ray)") from None
    return ray


def connect(address: str | None = None) -> bool:
    """Join the Ray cluster at ``address`` (else ``$RAY_ADDRESS``), or start a local instance; True if this call
    started it (the caller shuts it down). A local instance's workers import this mixlab (its folder on their
    ``PYTHONPATH``), not another installed copy."""
    ray = ray_module()
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        ray.init(address=address, configure_logging=False)
    else:
        source = str(Path(__file__).resolve().parents[2])  # the folder that holds the mixlab package
        path = os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH")) if p)
        ray.init(include_dashboard=False, configure_logging=False,
                 runtime_env={"env_vars": {"PYTHONPATH": path, "OMP_WAIT_POLICY": "PASSIVE"}})
    return True


def resources(config: TrainConfig, jobs: int) -> dict:
    """What a run's task asks of Ray: a CPU run its threads as CPUs; a GPU run ``1 / jobs`` of a GPU and one CPU."""
    if device_kind(config.device) == "cuda":
        return {"num_cpus": 1, "num_gpus": 1.0 / max(1, jobs)}
    return {"num_cpus": config.identity().get("threads") or 1}


def train_on_ray(configs: list[TrainConfig], texts: list[str], out: str | Path, jobs: int = 1,
                 data_dir: str | None = None, log: Callable[[str], None] = print, address: str | None = None,
                 copy_back: bool = False, _die_after_epoch: int | None = None) -> set[str]:
    """Train ``configs`` (distinct runs, none stored yet) as Ray tasks, logging ``texts[i]`` with each outcome as it
    finishes; return the run ids another process held locked. ``copy_back``: train in the nodes' temporary folders
    and copy back even where ``out`` is visible (as on a cluster without a shared file system). ``_die_after_epoch``:
    tests only, the first attempt of every task exits after that epoch."""
    from ..results import ResultsStore
    from .engine import outcome

    ray = ray_module()
    started = connect(address)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(8)
    (out / TOKEN_FILE).write_text(token)
    keeper = ray.remote(num_cpus=0)(Keeper).remote()
    task = ray.remote(max_retries=MAX_RETRIES)(train_task)
    refs = {task.options(**resources(c, jobs)).remote(c, str(out), data_dir, None if copy_back else token, keeper,
                                                     text, die_after_epoch=_die_after_epoch): (c, text)
            for c, text in zip(configs, texts)}
    log(f"training {len(configs)} runs as Ray tasks ({ray.cluster_resources().get('CPU', 0):g} CPUs"
        + (f", {ray.cluster_resources().get('GPU', 0):g} GPUs" if ray.cluster_resources().get("GPU") else "")
        + " in the cluster)")
    store, locked, pending = ResultsStore(out), set(), list(refs)
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            config, text = refs[done[0]]
            try:
                back = ray.get(done[0])
            except BaseException as error:
                log(f"{text}: FAILED ({type(error).__name__}: {error}); stopping the other runs")
                raise
            for line in back["lines"]:
                log(line)
            result = back["result"]
            if result is None:
                locked.add(config.run_id())
                continue
            if not back["shared"]:  # trained where ``out`` is not visible: its checkpoint and row come back here
                if back["checkpoint"] is not None:  # (none for a run that diverged in its first epoch)
                    run_dir = out / "runs" / result["run_id"]
                    run_dir.mkdir(parents=True, exist_ok=True)
                    tmp = run_dir / "checkpoint.pt.tmp"
                    tmp.write_bytes(back["checkpoint"])
                    tmp.replace(run_dir / "checkpoint.pt")
                store.add_run(result, config.identity())
            log(f"{text}: {outcome(result)}" + (" (trained on a node without --out)" if not back["shared"] else "")
                + (" (resumed from its last checkpoint)" if back["resumed"] else ""))
    except BaseException:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    finally:
        (out / TOKEN_FILE).unlink(missing_ok=True)
        if started:
            ray.shutdown()
    return locked


class Keeper:
    """A Ray actor on the driver's side: each run's last checkpoint (bytes), sent by its task every epoch."""

    def __init__(self):
        self.blobs: dict[str, bytes] = {}

    def put(self, run_id: str, blob: bytes) -> None:
        self.blobs[run_id] = blob

    def get(self, run_id: str) -> bytes | None:
        return self.blobs.get(run_id)


def train_task(config: TrainConfig, out: str, data_dir: str | None, token: str | None, keeper, text: str,
               die_after_epoch: int | None = None) -> dict:
    """A Ray task: train one run (see the module's docstring); returns its result (None: locked), the lines it
    logged, whether it trained in ``out`` (``shared``: ``token`` read back from there) and, if not, its final
    checkpoint's bytes, and whether it resumed from a checkpoint (an earlier attempt's, or an earlier sweep's)."""
    import ray

    from .engine import run_unless_locked
    from .factory import make_trainer

    try:
        shared = token is not None and (Path(out) / TOKEN_FILE).read_text() == token
    except OSError:
        shared = False
    lines: list[str] = []
    work = Path(out) if shared else Path(tempfile.mkdtemp(prefix="mixlab-ray-"))
    trainer = make_trainer(config, out=work, data_dir=data_dir, progress="lines", store=shared)
    resumed = trainer.checkpoint_path.exists()
    if not shared:
        blob = ray.get(keeper.get.remote(trainer.run_id))
        if blob is not None:  # an earlier attempt's last epoch
            trainer.run_dir.mkdir(parents=True, exist_ok=True)
            trainer.checkpoint_path.write_bytes(blob)
            resumed = True
    save = trainer.save_checkpoint

    def save_and_send(epoch: int) -> None:
        save(epoch)
        if not shared:
            ray.get(keeper.put.remote(trainer.run_id, trainer.checkpoint_path.read_bytes()))
        if die_after_epoch is not None and not resumed and epoch + 1 >= die_after_epoch:
            os._exit(1)  # tests: the worker dies; Ray retries the task

    trainer.save_checkpoint = save_and_send
    result = run_unless_locked(trainer, lines.append, text)
    checkpoint = None
    if not shared and result is not None and trainer.checkpoint_path.exists():
        checkpoint = trainer.checkpoint_path.read_bytes()
    return {"result": result, "lines": lines, "shared": shared, "checkpoint": checkpoint, "resumed": resumed}

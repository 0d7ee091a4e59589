"""``--ray [ADDRESS]``: run score, evaluate and features on a Ray cluster with Ray Data.

The driver (the command) reads the input, skips what the output already holds, and cuts
the rest into units of work: for ``score`` one unit is one ``--batch-size`` batch (the head
pads a batch, so a unit is scored as one process would score it), for ``evaluate`` and
``features`` one row. The units go through ``Dataset.map_batches`` on a fixed pool of actors
(``ActorPoolStrategy``); each actor loads the model once (``workers.open_*``) and calls
the single-process batch function on every unit it gets. Results come back in input order
(``preserve_order``) and the driver writes them as they arrive, so a stopped run resumes
like a single-process one.

Failures: an actor that dies (killed, out of memory, node lost) is restarted and its task
retried (``max_restarts``, ``max_task_retries``); the driver only writes results of tasks
that finished, so every row is written once. A row that fails (malformed, too long) comes
back as an error result: reported and skipped, as in one process.

Without an address, ``ray.init()`` starts a local cluster on this machine; with one, the
driver connects to it and ships this package to the workers (``py_modules``). A process
already connected to Ray (a notebook, a test) keeps its connection.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InputError

logger = logging.getLogger(__name__)

# Tries of one task on restarted actors before the run stops: a row that kills its worker every
# time would otherwise be retried for ever. Rows finished before the stop stay written.
TASK_RETRIES = 3
# Environment that decides what a worker loads and where its caches are.
_FORWARD = ("UHEAD_VIZ_", "HF_", "TRANSFORMERS_")


@dataclass(frozen=True)
class RaySettings:
    """How to run on Ray: where, how many rows per task, how many actors with what resources."""

    address: str | None = None  # None: start a local cluster
    rows_per_task: int = 32
    actors: int | None = None  # None: as many as the cluster's resources allow
    cpus_per_actor: float = 1.0
    gpus_per_actor: float | None = None  # None: 1 if the cluster has GPUs, else 0


def require_ray() -> None:
    try:
        import ray  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError as e:
        raise InputError(
            f"--ray needs Ray ({e}). Install it into the venv with `make ray` "
            "(pip install -r requirements-ray.txt)."
        ) from e


def add_ray_arguments(p: argparse.ArgumentParser, batch_help: str) -> None:
    """The ``--ray`` flags of a command."""
    g = p.add_argument_group("Ray (docs/scaling.md)")
    g.add_argument(
        "--ray", nargs="?", const="", default=None, metavar="ADDRESS",
        help="run on Ray: alone, a local cluster on this machine; with ADDRESS (host:port, ray://host:port "
        "or auto), that cluster",
    )
    g.add_argument("--ray-batch-size", type=int, default=None, help=batch_help)
    g.add_argument("--ray-actors", type=int, default=None, help="actors, each with its own model (default: all "
                   "the cluster's GPUs or CPUs allow)")
    g.add_argument("--ray-cpus-per-actor", type=float, default=1.0, help="CPUs per actor (default 1; also its "
                   "torch threads)")
    g.add_argument("--ray-gpus-per-actor", type=float, default=None, help="GPUs per actor (default: 1 if the "
                   "cluster has GPUs, else 0)")


def ray_settings(args: argparse.Namespace, rows_per_batch: int) -> RaySettings | None:
    """The settings the flags ask for, or None without ``--ray``; InputError for impossible ones."""
    if getattr(args, "ray", None) is None:
        return None
    require_ray()
    rows = args.ray_batch_size if args.ray_batch_size is not None else rows_per_batch
    if rows < 1:
        raise InputError(f"--ray-batch-size must be at least 1, not {rows}.")
    if args.ray_actors is not None and args.ray_actors < 1:
        raise InputError(f"--ray-actors must be at least 1, not {args.ray_actors}.")
    if args.ray_cpus_per_actor <= 0:
        raise InputError(f"--ray-cpus-per-actor must be above 0, not {args.ray_cpus_per_actor}.")
    if args.ray_gpus_per_actor is not None and args.ray_gpus_per_actor < 0:
        raise InputError(f"--ray-gpus-per-actor must be 0 or more, not {args.ray_gpus_per_actor}.")
    return RaySettings(args.ray or None, rows, args.ray_actors, args.ray_cpus_per_actor, args.ray_gpus_per_actor)


def local_cluster_options(extra_path: str = "") -> dict[str, Any]:
    """``ray.init`` arguments of the local cluster ``--ray`` starts without an address.

    Workers on this machine import the package from where the driver does (plus ``extra_path``)
    and get the driver's ``UHEAD_VIZ_*``/thread settings. They run at the command's own priority:
    Ray's default worker niceness (15) would make them yield to every other job on the machine
    (two actors beside one normal-priority job shared one core).
    """
    env = {k: v for k, v in os.environ.items() if k.startswith(_FORWARD)}
    package = Path(__file__).resolve().parent
    parts = (str(package.parent), extra_path, os.environ.get("PYTHONPATH", ""))
    return {
        "include_dashboard": False,
        "runtime_env": {"env_vars": {**env, "PYTHONPATH": os.pathsep.join(p for p in parts if p)}},
        "logging_level": logging.WARNING,
        "_system_config": {"worker_niceness": 0},
    }


def connect(address: str | None) -> bool:
    """Connect to Ray (start a local cluster without ``address``); True if this call did it."""
    import ray

    if ray.is_initialized():
        return False
    if address is None:
        ray.init(**local_cluster_options())
    else:  # nodes elsewhere get this package's code; their venv must hold its dependencies
        env = {k: v for k, v in os.environ.items() if k.startswith(_FORWARD)}
        package = Path(__file__).resolve().parent
        ray.init(address=address, runtime_env={"env_vars": env, "py_modules": [str(package)]},
                 logging_level=logging.WARNING)
    return True


@dataclass(frozen=True)
class Plan:
    """How one run's units are divided over the cluster; logged before the run starts."""

    rows: int
    units: int
    units_per_task: int
    tasks: int
    actors: int
    cpus: float
    gpus: float
    where: str
    cluster_cpus: float
    cluster_gpus: float

    def describe(self, what: str) -> str:
        return (
            f"Ray plan: {self.rows} {what} in {self.tasks} task{'s' * (self.tasks != 1)} of up to "
            f"{self.rows_per_task()} rows; "
            f"{self.actors} actor(s) x ({self.cpus:g} CPU, {self.gpus:g} GPU), each loading the model once; "
            f"cluster {self.where} with {self.cluster_cpus:g} CPUs, {self.cluster_gpus:g} GPUs"
        )

    def rows_per_task(self) -> int:
        return math.ceil(self.rows / self.tasks) if self.tasks else 0


def make_plan(units: list[list[Any]], settings: RaySettings, resources: dict[str, float]) -> Plan:
    """How the units are divided: tasks of about ``rows_per_task`` rows, whole units only."""
    rows = sum(len(u) for u in units)
    per_unit = max(1, max((len(u) for u in units), default=1))
    units_per_task = max(1, settings.rows_per_task // per_unit)
    tasks = math.ceil(len(units) / units_per_task)
    cpus, gpus_have = float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
    gpus = settings.gpus_per_actor if settings.gpus_per_actor is not None else (1.0 if gpus_have else 0.0)
    if settings.actors is not None:
        actors = settings.actors
    else:
        fit = gpus_have / gpus if gpus else cpus / settings.cpus_per_actor
        actors = max(1, int(fit))
    actors = max(1, min(actors, tasks))
    if actors * settings.cpus_per_actor > cpus or actors * gpus > gpus_have:
        logger.warning(
            "%d actors x (%g CPU, %g GPU) is more than the cluster has (%g CPUs, %g GPUs): actors wait for room "
            "(or for the autoscaler)", actors, settings.cpus_per_actor, gpus, cpus, gpus_have,
        )
    where = settings.address or "local"
    return Plan(rows, len(units), units_per_task, tasks, actors, settings.cpus_per_actor, gpus, where, cpus, gpus_have)


class _Actor:
    """One Ray Data actor: opens the work once, then runs it on every unit of every batch it gets."""

    def __init__(self, opener: Callable[[Any], Any], recipe: Any, threads: int) -> None:
        import torch

        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        torch.set_num_threads(max(1, threads))
        self.work = opener(recipe)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        out = [json.dumps(self.work(json.loads(str(u)))) for u in batch["unit"]]
        flush = getattr(self.work, "flush", None)
        if flush is not None:
            flush()  # what a result reports as done is on disk before the result leaves
        return {"n": np.asarray(batch["n"]), "out": np.array(out, dtype=object)}


def _quiet_memory_detector(ctx: Any) -> None:
    """Turn off Ray Data's every-30-s advice about actors' memory: each actor holds a whole model
    by design (4.5 GB for the default model at int8), which the plan and docs/scaling.md state."""
    detectors = getattr(ctx, "issue_detectors_config", None)
    config = getattr(detectors, "high_memory_detector_config", None)
    if config is not None and hasattr(config, "detection_time_interval_s"):
        config.detection_time_interval_s = -1


def _user_error(e: BaseException) -> BaseException | None:
    """The error a user can fix (InputError, PackError) behind a Ray failure, if any.

    A task's exception travels as its cause; a worker whose setup failed dies, and Ray keeps
    only the text of what it raised, so that is read back from the message.
    """
    from .errors import PackError

    seen = set()
    stack: list[Any] = [e]
    while stack:
        x = stack.pop()
        if x is None or id(x) in seen:
            continue
        seen.add(id(x))
        if isinstance(x, (InputError, PackError)):
            return x
        stack += [getattr(x, "cause", None), x.__cause__, x.__context__]
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
    found = re.findall(r"^uhead_viz\.[\w.]+\.(?:InputError|PackError|HeadError): (.+)$", text, re.MULTILINE)
    return InputError(found[-1]) if found else None


class RayRunner:
    """``runner(units) -> each unit's results, in order``, computed by a pool of Ray actors.

    ``opener(recipe)`` (picklable, run in each actor) returns the work function: rows in,
    one result per row out. ``what`` names the rows in the plan line.
    """

    def __init__(self, opener: Callable[[Any], Any], recipe: Any, settings: RaySettings, what: str = "rows") -> None:
        self.opener = opener
        self.recipe = recipe
        self.settings = settings
        self.what = what
        self.plan: Plan | None = None

    def __call__(self, units: list[list[Any]]) -> Iterator[list[Any]]:
        if not units:
            return
        import numpy as np  # noqa: F401  (Ray Data's numpy batches)
        import ray
        import ray.data

        started = connect(self.settings.address)
        try:
            plan = self.plan = make_plan(units, self.settings, ray.cluster_resources())
            logger.info(plan.describe(self.what))
            ctx = ray.data.DataContext.get_current()
            ctx.execution_options.preserve_order = True
            ctx.enable_progress_bars = False  # the command's own bar counts rows
            ctx.print_on_execution_start = False
            _quiet_memory_detector(ctx)
            items = [{"n": i, "unit": json.dumps(u)} for i, u in enumerate(units)]
            ds = ray.data.from_items(items, override_num_blocks=plan.tasks)
            with warnings.catch_warnings():  # bounded retries are set as a remote arg (Ray 2.60, pinned)
                warnings.filterwarnings("ignore", message=".*ray_remote_args.*")
                ds = self._map(ds, plan)
            yield from self._ordered(ds, len(units))
        except Exception as e:
            cause = _user_error(e)
            if cause is not None and cause is not e:
                raise cause from None
            raise
        finally:
            if started:
                ray.shutdown()

    def _map(self, ds: Any, plan: Plan) -> Any:
        from ray.data import ActorPoolStrategy

        threads = int(self.settings.cpus_per_actor)
        return ds.map_batches(
            _Actor,
            fn_constructor_kwargs={"opener": self.opener, "recipe": self.recipe, "threads": threads},
            batch_size=plan.units_per_task,
            batch_format="numpy",
            compute=ActorPoolStrategy(size=plan.actors),
            num_cpus=plan.cpus,
            num_gpus=plan.gpus,
            max_restarts=-1,
            max_task_retries=TASK_RETRIES,
        )

    @staticmethod
    def _ordered(ds: Any, n_units: int) -> Iterator[list[Any]]:
        """Each unit's results in unit order, as soon as all units before it are done."""
        waiting: dict[int, list[Any]] = {}
        nxt = 0
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for n, out in zip(batch["n"], batch["out"]):
                waiting[int(n)] = json.loads(str(out))
            while nxt in waiting:
                yield waiting.pop(nxt)
                nxt += 1
        if nxt != n_units:
            raise RuntimeError(f"Ray returned results for {nxt} of {n_units} units")

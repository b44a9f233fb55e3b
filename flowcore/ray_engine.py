"""The Ray engine of the job runner (flowcore.jobs): one Ray task per task, on a cluster.

`RayEngine` holds the settings (where the cluster is, CPUs and GPUs per task, retries) and the
checks a run makes before it starts (`gpus_for`, `check_cluster`); `RayEngine.run_tasks` is the
engine's loop: submit a task per task (at most `limit` at once), collect the results, pass the
tasks' messages on. Each task calls the same job function as a local run, in a Ray worker
process, so results are the same (a store bit for bit, a fold's weights at the same thread count).

Resources: a task asks Ray for `cpus_per_task` CPUs (its OpenCV and torch use that many threads)
and `gpus_per_task` GPUs. A fraction of a GPU lets several tasks share one. Ray's scheduler places
the task and pins it to its GPU through CUDA_VISIBLE_DEVICES, so inside the task the device is
"cuda".

Failures: a task that raises is a failed task (its error as the cause). A task whose worker dies
(killed, out of memory, node lost) is rerun by Ray up to `max_retries` times; after that it is
failed with `WorkerLost`, and the other tasks go on. A rerun starts the task afresh (the job's
own resume applies: a video is redone, a fold resumes from its last saved epoch).

Progress: tasks send their messages, at most every PROGRESS_SECONDS, to a small actor that the
driver drains every WAIT_SECONDS. The actor is placed on the driver's own node: a lost worker
node (its tasks rerun elsewhere) never takes the run's progress with it.

Convention: the store, the run folder and the source's videos must be reachable under the same
URLs (object storage, flowcore/locations.py) or paths (a shared filesystem) from the driver and
from every node. Ray is imported only inside this
module's functions, and this module only when the Ray engine is asked for.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

from flowcore.jobs import Done, Worker, WorkerLost, first_line, limit_threads

RAY_MISSING = 'the Ray engine needs Ray, which is not installed here: pip install "mespot[ray]"'
PROGRESS_SECONDS = 0.5  # a task sends its progress at most this often (s)
WAIT_SECONDS = 0.25  # the driver's polling period for results and progress (s)
GPU_TASKS_PER_GPU = 8  # default sharing of one GPU (as flowcore.batch.GPU_WORKERS)


def task_name(kind: str, key: str) -> str:
    """A task's name in `ray list tasks` and its worker's process title (`ray::<name>`)."""
    return f"mespot-{kind}:{key}"


class RayMissingError(ImportError):
    """Ray is not importable; the message says how to install it."""


def import_ray():
    """The `ray` module, or RayMissingError with the install command."""
    try:
        import ray
    except ImportError as err:
        raise RayMissingError(RAY_MISSING) from err
    return ray


@dataclass(frozen=True)
class RayEngine:
    """Run each task as one Ray task (see the module docstring): an engine of flowcore.jobs."""

    address: str | None = None  # None: start Ray on this machine, or join the one running here;
    #                             "auto": the cluster `ray start` made here; "HOST:PORT": its head
    gpus_per_task: float | None = None  # GPUs per task; None: 0 on the CPU, 1/8 on a GPU device
    cpus_per_task: float = 1.0  # CPUs per task; its OpenCV and torch use that many threads
    max_retries: int = 2  # reruns of a task whose worker died, then the video is failed
    local_cpus: int | None = None  # CPUs of a Ray instance started here; None: every core

    def __post_init__(self):
        if self.gpus_per_task is not None and self.gpus_per_task < 0:
            raise ValueError(f"gpus_per_task must be >= 0, got {self.gpus_per_task}")
        if self.cpus_per_task <= 0:
            raise ValueError(f"cpus_per_task must be > 0, got {self.cpus_per_task}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.local_cpus is not None and self.local_cpus < 1:
            raise ValueError(f"local_cpus must be >= 1, got {self.local_cpus}")

    def gpus_for(self, device: str, hint: str = "") -> float:
        """GPUs each task reserves for a run on `device` ('cpu', 'cuda' or 'cuda:0'; inside a
        task the device is 'cuda': Ray gives it its GPU); ValueError for a combination that
        cannot work. `hint`: more flags the message for GPUs on a CPU run suggests."""
        on_gpu = device != "cpu"
        gpus = self.gpus_per_task
        if gpus is None:
            gpus = 1.0 / GPU_TASKS_PER_GPU if on_gpu else 0.0
        if on_gpu and not device.startswith("cuda"):
            raise ValueError(f"--device {device}: the Ray engine runs on cpu or cuda")
        if device not in ("cpu", "cuda", "cuda:0"):
            raise ValueError(f"--device {device}: with the Ray engine, Ray gives each "
                             f"task its GPU; use --device cuda")
        if on_gpu and gpus == 0:
            raise ValueError("--device cuda with --gpus-per-task 0: a task would see no GPU; "
                             "give each task a share of one (e.g. --gpus-per-task 0.25)")
        if not on_gpu and gpus > 0:
            raise ValueError(f"--gpus-per-task {gpus:g} with --device cpu: the tasks would hold "
                             f"GPUs they never use; add --device cuda{hint}")
        return gpus

    def run_tasks(self, function, tasks, on_message, on_note=None, limit: int | None = None,
                  name: str = "task", noun: str = "task", device: str = "cpu"):
        """Yield one flowcore.jobs.Done per task, in the order they finish (see flowcore.jobs).

        limit: at most this many tasks at once (None: as many as the cluster's resources allow).
        name: the tasks' names are `mespot-<name>:<key>`; noun: what a task is, in the line
        about the cluster given to `on_note`.
        device: the run's device ('cpu' or 'cuda'; inside a task it is 'cuda' on a GPU: Ray
        gives the task its GPU). Connects to Ray unless this process already is (then leaves it
        as it is): to `address`, or with None to RAY_ADDRESS or a cluster running on this machine,
        else to a new Ray instance here; disconnects at the end (a new instance stops). Raises
        ValueError, before connecting, for a device the settings cannot serve.
        """
        ray = import_ray()
        gpus = self.gpus_for(device)
        if not tasks:
            return
        with self.connected(ray):
            text = self.check_cluster(ray, gpus, len(tasks), noun)
            if on_note is not None:
                on_note(text)
            yield from self._collect(ray, function, tasks, on_message, gpus, limit, name)

    @contextlib.contextmanager
    def connected(self, ray):
        """Connected to Ray inside the block (see `run`); a Ray instance started here stops at
        its end, a connection made before is left as it is."""
        started_here = not ray.is_initialized()
        if started_here:
            local = {"num_cpus": self.local_cpus} if self.local_cpus is not None else {}
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                     logging_level="WARNING", **local)
        try:
            yield
        finally:
            if started_here:
                ray.shutdown()

    def check_cluster(self, ray, gpus: float, n_tasks: int, kind: str) -> str:
        """A one-line description of the cluster; ValueError if no node can run a task."""
        total = ray.cluster_resources()
        nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
        cpus, gpus_there = total.get("CPU", 0.0), total.get("GPU", 0.0)
        if cpus < self.cpus_per_task:
            raise ValueError(f"each task asks for {self.cpus_per_task:g} CPU(s); the Ray cluster "
                             f"has {cpus:g}")
        if gpus > 0 and gpus_there == 0:
            raise ValueError(f"each task asks for {gpus:g} GPU; the Ray cluster has none (start "
                             f"its nodes on GPU machines, or run with --device cpu)")
        return (f"ray: {nodes} node(s) with {cpus:g} CPU(s) and {gpus_there:g} GPU(s); "
                f"{n_tasks} {kind} task(s) of {self.cpus_per_task:g} CPU and {gpus:g} GPU each")

    def _collect(self, ray, function, tasks, on_message, gpus: float, limit, name: str):
        remote = ray.remote(_ray_task)
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        drivers_node = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(),
                                                      soft=False)
        sink = ray.remote(num_cpus=0)(ProgressSink).options(
            scheduling_strategy=drivers_node).remote()
        threads = max(1, int(self.cpus_per_task))
        device = "cuda" if gpus > 0 else "cpu"
        waiting, running = list(tasks), {}  # running: ObjectRef -> key
        try:
            while waiting or running:
                while waiting and len(running) < (limit or len(tasks)):
                    task = waiting.pop(0)
                    ref = remote.options(
                        num_cpus=self.cpus_per_task, num_gpus=gpus, max_retries=self.max_retries,
                        name=task_name(name, task.key),
                    ).remote(function, task.payload, device, threads, sink)
                    running[ref] = task.key
                ready, _ = ray.wait(list(running), num_returns=len(running), timeout=WAIT_SECONDS)
                _forward(ray.get(sink.take.remote()), on_message)
                for ref in ready:
                    yield self._outcome(ray, ref, running.pop(ref))
            _forward(ray.get(sink.take.remote()), on_message)
        finally:  # interrupted: stop the tasks still running (never hide the first error)
            with contextlib.suppress(Exception):
                for ref in running:
                    ray.cancel(ref, force=True)
                ray.kill(sink)

    def _outcome(self, ray, ref, key: str) -> Done:
        """The task's result, or the error that ended it."""
        try:
            return Done(key, ray.get(ref))
        except ray.exceptions.RayTaskError as err:  # the task raised
            return Done(key, error=err.cause if err.cause is not None else err)
        except ray.exceptions.RayError as err:  # the worker died every time
            return Done(key, error=WorkerLost(
                f"its Ray worker died {self.max_retries + 1} time(s) ({type(err).__name__}: "
                f"{first_line(err)}); rerun to retry"))


def _forward(messages, on_message) -> None:
    for message in messages:
        on_message(message)


# ---- inside the Ray workers ----------------------------------------------------------------------

def _ray_task(function, payload, device: str, threads: int, sink):
    """One task in a Ray worker process."""
    limit_threads(threads)
    forward = _Forwarder(sink)
    try:
        return function(payload, Worker(device, threads, forward))
    finally:
        forward.flush()


class _Forwarder:
    """A task's `report`: keeps its messages and sends them to the sink actor in one call at most
    every PROGRESS_SECONDS (fire and forget)."""

    def __init__(self, sink):
        self.sink = sink
        self.waiting: list[tuple] = []
        self.sent = time.monotonic()

    def __call__(self, message: tuple) -> None:
        self.waiting.append(message)
        if time.monotonic() - self.sent >= PROGRESS_SECONDS:
            self.flush()

    def flush(self) -> None:
        if self.waiting:
            self.sink.put.remote(self.waiting)
            self.waiting = []
        self.sent = time.monotonic()


class ProgressSink:
    """A Ray actor (no CPU reserved) holding progress messages until the driver takes them."""

    def __init__(self):
        self.messages: list[tuple] = []

    def put(self, messages: list[tuple]) -> None:
        self.messages.extend(messages)

    def take(self) -> list[tuple]:
        taken, self.messages = self.messages, []
        return taken

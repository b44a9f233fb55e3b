"""Extraction on a Ray cluster: one Ray task per video, every task writing into one shared store.

The driver (the machine running `mespot extract --engine ray`) plans exactly as a local run
(flowcore.batch.run_extraction skips the complete videos), then `RayEngine.run` submits one task
per video left and collects the results. Each task calls flowcore.extract.extract_video in a
Ray worker process: the same function, parameters and store code as a local run, so the store
is the same bit for bit, and a video counts only when its status, written last, says complete.

Resources: a task asks Ray for `cpus_per_task` CPUs and `gpus_per_task` GPUs. A fraction of a
GPU lets several tasks share one (each decodes and fits landmarks on its own core, as the local
pool's processes do). Ray's scheduler places the task and pins it to its GPU through
CUDA_VISIBLE_DEVICES, so inside the task the device is "cuda".

Failures: a bad video fails inside its task as it does locally (recorded by extract_video). A
task whose worker dies (killed, out of memory, node lost) is rerun by Ray up to `max_retries`
times; after that the video is recorded as failed (stage "worker") in the store and the report,
and the other videos go on. A rerun starts the video afresh (FeatureStore.begin).

Progress: tasks send their (video_id, phase, done, total) messages, at most every
PROGRESS_SECONDS, to a small actor that the driver drains into its progress display.

Convention: the store and the source's videos must be reachable under the same paths from the
driver and from every node (a shared filesystem). Ray is imported only inside this module's
functions, and this module only when the Ray engine is asked for.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

from flowcore.extract import ExtractParams, RunOptions, VideoResult, extract_video

RAY_MISSING = 'the Ray engine needs Ray, which is not installed here: pip install "mespot[ray]"'
PROGRESS_SECONDS = 0.5  # a task sends its progress at most this often (s)
WAIT_SECONDS = 0.25  # the driver's polling period for results and progress (s)
TASK_NAME = "mespot-extract:{video_id}"  # in `ray list tasks` and the worker's process title
GPU_TASKS_PER_GPU = 8  # default sharing of one GPU (as flowcore.batch.GPU_WORKERS)


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
    """Run each video as one Ray task (see the module docstring); pass to run_extraction."""

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

    def task_options(self, options: RunOptions) -> tuple[RunOptions, float]:
        """(options as a task sees them, GPUs per task); ValueError for a combination that
        cannot work (a GPU device without GPUs, GPUs for a CPU run, a GPU index)."""
        gpus = self.gpus_for(options.device, hint=" --backend torch")
        device = "cuda" if options.device != "cpu" else "cpu"
        return RunOptions(device, options.batch_size, options.frame_cache_mb), gpus

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

    def run(self, todo, params: ExtractParams, store, dataset: str, options: RunOptions,
            workers: int | None, progress):
        """Yield one VideoResult per VideoSpec of `todo`, in the order they finish.

        workers: at most this many tasks at once (None: as many as the cluster's resources
        allow). Connects to Ray unless this process already is (then leaves it as it is): to
        `address`, or with None to RAY_ADDRESS or a cluster running on this machine, else to a
        new Ray instance here; disconnects at the end (a new instance stops).
        """
        ray = import_ray()
        task_options, gpus = self.task_options(options)
        if not todo:
            return
        with self.connected(ray):
            _note(progress, self.check_cluster(ray, gpus, len(todo), "video"))
            yield from self._collect(ray, todo, params, store, dataset, task_options, gpus,
                                     workers, progress)

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

    def _collect(self, ray, todo, params, store, dataset, options, gpus, workers, progress):
        extract = ray.remote(_extract_task)
        sink = ray.remote(num_cpus=0)(ProgressSink).remote()
        threads = max(1, int(self.cpus_per_task))
        waiting = list(todo)
        running = {}  # ObjectRef -> VideoSpec
        limit = workers or len(todo)
        try:
            while waiting or running:
                while waiting and len(running) < limit:
                    spec = waiting.pop(0)
                    ref = extract.options(
                        num_cpus=self.cpus_per_task, num_gpus=gpus, max_retries=self.max_retries,
                        name=TASK_NAME.format(video_id=spec.video_id),
                    ).remote(spec, params, str(store.path), dataset, options, threads, sink)
                    running[ref] = spec
                ready, _ = ray.wait(list(running), num_returns=len(running), timeout=WAIT_SECONDS)
                _forward(ray.get(sink.take.remote()), progress)
                for ref in ready:
                    result = self._result(ray, ref, running.pop(ref), store)
                    if progress is not None:
                        progress.finish(result)
                    yield result
        finally:  # interrupted: stop the tasks still running (never hide the first error)
            with contextlib.suppress(Exception):
                for ref in running:
                    ray.cancel(ref, force=True)
                ray.kill(sink)

    def _result(self, ray, ref, spec, store) -> VideoResult:
        """The task's VideoResult, or a failed one (recorded in the store) if the task was lost."""
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as err:  # the task raised (not a bad video: a bug,
            cause = err.cause if err.cause is not None else err  # or a node's environment)
            error = f"the Ray task raised {type(cause).__name__}: {first_line(cause)}"
        except ray.exceptions.RayError as err:  # the worker died every time
            error = (f"its Ray worker died {self.max_retries + 1} time(s) "
                     f"({type(err).__name__}: {first_line(err)}); rerun to retry")
        return _record_failure(store, spec, error)


def first_line(err: BaseException) -> str:
    text = str(err).strip() or repr(err)
    return text.splitlines()[0]


def _record_failure(store, spec, error: str) -> VideoResult:
    """Write the failure of a lost task into the store (status "failed", stage "worker")."""
    attrs = {"subject": spec.subject, "source": str(spec.path), "subsample": spec.subsample,
             "fps": spec.fps_kept}
    try:
        with store.video_lock(spec.video_id) as mine:
            if mine:
                store.fail(spec.video_id, "worker", error, attrs)
    except Exception as store_err:  # the store itself is broken: say both
        error += f" (and recording the failure failed: {store_err})"
    return VideoResult(spec.video_id, spec.subject, "failed", stage="worker", error=error)


def _note(progress, text: str) -> None:
    note = getattr(progress, "note", None)
    if note is not None:
        note(text)


def _forward(messages, progress) -> None:
    if progress is not None:
        for message in messages:
            progress.update(*message)


# ---- inside the Ray workers ----------------------------------------------------------------------

def _extract_task(spec, params: ExtractParams, path: str, dataset: str, options: RunOptions,
                  threads: int, sink) -> VideoResult:
    """One video in a Ray worker process (the store's root exists: the driver made it)."""
    from flowcore.batch import limit_threads, worker_store

    limit_threads(threads)
    forward = _Forwarder(sink)
    result = extract_video(spec, params, worker_store(path, params, dataset), options, forward)
    forward.flush()
    return result


class _Forwarder:
    """A task's progress callback: keeps the latest message of each phase and sends them to the
    sink actor in one call at most every PROGRESS_SECONDS (fire and forget)."""

    def __init__(self, sink):
        self.sink = sink
        self.latest: dict[tuple[str, str], tuple] = {}
        self.sent = time.monotonic()

    def __call__(self, video_id: str, phase: str, done: int, total: int) -> None:
        self.latest[(video_id, phase)] = (video_id, phase, done, total)
        if time.monotonic() - self.sent >= PROGRESS_SECONDS:
            self.flush()

    def flush(self) -> None:
        if self.latest:
            self.sink.put.remote(list(self.latest.values()))
            self.latest = {}
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

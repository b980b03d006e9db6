"""Where tasks run: Ray tasks on a local or remote cluster, or in this process for debugging.

Both executors have one method, ``map(fn, items, label, cpus=1, own_process=False, sizes=None,
on_result=None, more=None)``, which returns results in item order, so nothing downstream can depend
on which worker finished first (``sizes``, an estimate of each item's work, only changes the order
Ray starts them in: largest first, so that a large unit does not start last and leave the other
workers idle; ``on_result``, called in the driver on each result as it arrives, in any order, gives
what the list holds instead: the runner takes the stats out of receipts there; ``more(result)``,
called likewise, gives items that can start now, whose results follow the others' in the order they
were added: the fused runner's tasks for the shards a source task did not hand on), and say with
``node_cpus`` how many CPUs one task can have (the largest node's). Ray executes at most
``num_workers`` tasks at once, ``cpus`` CPUs each (a task that runs threads of its own, such as the
tokenizer's trainer, reserves them so that no other task shares its cores). ``Group`` and
``run_group`` put several small items of one function into one task, for work whose items take
about as long as a task costs the driver (a few ms); with ``own_process``
each task runs in a worker process that exits after it, so the memory a large task held goes back to
the node and its peak memory is its own. Ray retries a task up to ``max_retries`` times, on any
node, when its worker process or whole node died (Ray notices a dead node after its missed health
checks, 15 s by default) or when it raised an error that another attempt may not hit (an I/O error,
a lost connection, out of memory, any error this module does not know to be deterministic); tasks
write their outputs atomically, so a retry simply redoes the unit.

Errors that would recur on every attempt are not retried: a runner task that hits a problem
retrying cannot fix (bad input, lost rows, a full disk, no permission) returns a ``Failure`` itself,
and any task that raises one of ``DETERMINISTIC_ERRORS`` (a missing module or file, a bad value, a
bug: the same code on the same input fails the same way) has it turned into a ``Failure`` by the
wrapper ``map`` puts around every task. The run then stops at once with a one-line message naming
the task and the error; the other tasks are cancelled and the running ones awaited (``stop_wait_s``).

``make_executor`` starts Ray lazily, on the first ``map`` with work to do (or the first look at
``workers`` or ``node_cpus``), so a command that finds everything up to date never pays Ray's
start-up (seconds) or touches a cluster.
"""
from __future__ import annotations

import functools
import os
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from tqdm import tqdm

from pipeline.config import RayConfig
from pipeline.errors import TaskFailed
from pipeline.local_ray import start_local_ray
from pipeline.memory_pool import use_jemalloc


@dataclass(frozen=True)
class Failure:
    """Returned by a task for a problem retrying cannot fix; ``message`` is shown to the user."""

    message: str


# Exceptions that the same code raises again on the same input, wherever and however often it runs.
# OSError in general is left out (a dropped connection or a busy disk may not recur), except the
# kinds that name a path that is not there or not readable; MemoryError too (another node, or less
# load, may have the memory). RuntimeError is left out: it is what libraries raise for anything.
DETERMINISTIC_ERRORS: tuple[type[BaseException], ...] = (
    ImportError,  # a missing package or module: ModuleNotFoundError
    FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError,
    ValueError,  # bad values, pydantic's ValidationError, UnicodeError, pyarrow's ArrowInvalid
    TypeError, LookupError, AttributeError, NameError, ArithmeticError, AssertionError,
    NotImplementedError, RecursionError,
)


def _not_retried(fn: Callable) -> Callable:
    """``fn`` with the exceptions of ``DETERMINISTIC_ERRORS`` returned as a ``Failure``, which Ray
    does not retry, instead of raised. The message names the task, the error and the line of code
    that raised it; ``--no-ray`` (or ``stage``) runs the same task in-process with the full traceback."""
    @functools.wraps(fn)
    def task(item):
        use_jemalloc()  # in the worker process, before the task allocates (``pipeline.memory_pool``)
        try:
            return fn(item)
        except DETERMINISTIC_ERRORS as error:
            frame = traceback.extract_tb(error.__traceback__)[-1]
            where = f"{os.path.basename(frame.filename)}:{frame.lineno}"
            return Failure(f"task for {_describe(fn, item)} failed: {type(error).__name__}: {error} "
                           f"(at {where}; not retried: it would fail the same way again)")
    return task


@dataclass(frozen=True)
class Group:
    """Several items of one function for one task (``run_group``): a task costs the driver a few
    milliseconds, which is most of the work of an item that takes a few."""

    fn: Callable
    items: tuple

    def __repr__(self) -> str:  # the task's name in an error message (``_describe``); no spaces
        return f"{getattr(self.fn, '__name__', 'task')}[{','.join(_last_part(item) for item in self.items)}]"


def run_group(group: Group) -> list:
    """``fn(item)`` for each item of ``group``, in order, and their results. An item that fails in a
    way retrying cannot fix stops the group with a ``Failure`` naming that item, as its own task
    would have; any other error fails the whole group, which Ray then retries (its items' outputs are
    written atomically, so the items done already are redone, not duplicated)."""
    task = _not_retried(group.fn)
    results = []
    for item in group.items:
        result = task(item)
        if isinstance(result, Failure):
            return result
        results.append(result)
    return results


def _check(result: Any, label: str) -> Any:
    if isinstance(result, Failure):
        raise TaskFailed(f"{label}: {result.message}")
    return result


class InProcessExecutor:
    """Runs every task in this process, one after another: print statements and debuggers work."""

    workers = 1
    startup_seconds = 0.0
    node_cpus = os.cpu_count() or 1

    def __init__(self):
        use_jemalloc()  # as a Ray task does (``pipeline.memory_pool``)

    def map(self, fn: Callable, items: Sequence, label: str = "", cpus: int = 1, own_process: bool = False,
            sizes: Sequence[float] | None = None, on_result: Callable[[Any], Any] | None = None,
            more: Callable[[Any], Sequence] | None = None) -> list:
        items, results = list(items), []
        progress = tqdm(total=len(items), desc=label, unit="task", disable=not items, file=sys.stderr, leave=False)
        with progress:
            while len(results) < len(items):
                result = _check(fn(items[len(results)]), label)
                results.append(on_result(result) if on_result else result)
                _add_more(items, progress, more(result) if more else ())
                progress.update(1)
        return results

    def shutdown(self) -> None:
        pass


class RayExecutor:
    """Runs tasks on Ray: joins ``ray.address`` (or RAY_ADDRESS) when set, else starts Ray locally."""

    stop_wait_s = 30.0  # how long a failing run waits for the running tasks it cancelled to end

    def __init__(self, config: RayConfig):
        import ray

        self.ray = ray
        self.config = config
        self._remotes: dict[tuple, Any] = {}
        started = time.perf_counter()
        self.owns_cluster = not ray.is_initialized()
        if self.owns_cluster:
            address = config.address or os.environ.get("RAY_ADDRESS")
            if address:
                ray.init(address=address, include_dashboard=False, configure_logging=False, log_to_driver=True)
            else:
                start_local_ray(config.num_cpus, configure_logging=False, log_to_driver=True)
        self.startup_seconds = time.perf_counter() - started
        cluster_cpus = int(ray.cluster_resources().get("CPU", 1))
        self.workers = config.num_workers or cluster_cpus
        self.cluster_cpus = cluster_cpus
        self.node_cpus = max((int(node["Resources"].get("CPU", 0)) for node in ray.nodes() if node["Alive"]),
                             default=1) or 1

    def map(self, fn: Callable, items: Sequence, label: str = "", cpus: int = 1, own_process: bool = False,
            sizes: Sequence[float] | None = None, on_result: Callable[[Any], Any] | None = None,
            more: Callable[[Any], Sequence] | None = None) -> list:
        # retry_exceptions=True: every exception that reaches Ray is one worth another attempt,
        # since _not_retried returned the deterministic ones as a Failure already
        key = (fn, cpus, own_process)  # made once: Ray ships each new remote function to every worker (ms)
        if key not in self._remotes:
            self._remotes[key] = self.ray.remote(num_cpus=cpus, max_retries=self.config.max_retries,
                                                 retry_exceptions=True, max_calls=1 if own_process else 0)(_not_retried(fn))
        remote = self._remotes[key]
        items, results = list(items), [None] * len(items)
        pending: dict[Any, int] = {}
        order = submission_order(len(items), sizes)  # items that ``more`` adds go after, as they come
        submitted = 0
        # Where the cluster's CPUs already cap the tasks running at once at ``workers``, a second
        # task per worker waits in Ray, which starts it as soon as one ends, without waiting for this
        # process to take the result and submit the next (a few ms of idle worker per task).
        in_flight = 2 * self.workers if self.workers * cpus >= self.cluster_cpus else self.workers
        progress = tqdm(total=len(items), desc=label, unit="task", disable=not items, file=sys.stderr, leave=False)
        try:
            while submitted < len(items) or pending:
                while submitted < len(items) and len(pending) < in_flight:
                    position = order[submitted] if submitted < len(order) else submitted
                    pending[remote.remote(items[position])] = position
                    submitted += 1
                done, _ = self.ray.wait(list(pending), num_returns=1)
                index = pending.pop(done[0])
                try:
                    try:
                        result = _check(self.ray.get(done[0]), label)
                    except self.ray.exceptions.RayError as error:
                        raise TaskFailed(f"{label}: task for {_describe(fn, items[index])} failed after "
                                         f"{self.config.max_retries} retries: {_cause(error)}") from None
                except TaskFailed:  # cancel the rest; a rerun started at once must not meet one still writing
                    for ref in pending:
                        self.ray.cancel(ref)
                    if pending:
                        self.ray.wait(list(pending), num_returns=len(pending), timeout=self.stop_wait_s)
                    raise
                results[index] = on_result(result) if on_result else result
                _add_more(items, progress, more(result) if more else ())
                results += [None] * (len(items) - len(results))
                progress.update(1)
        finally:
            progress.close()
        return results

    def shutdown(self) -> None:
        if self.owns_cluster:
            self.ray.shutdown()


def _add_more(items: list, progress: tqdm, extra: Sequence) -> None:
    """Queue the items ``map``'s ``more`` gave for a result; the progress bar counts them."""
    items += extra
    progress.total = len(items)


def submission_order(count: int, sizes: Sequence[float] | None) -> list[int]:
    """Item positions in the order to start them: largest ``sizes`` first (ties in item order), the
    longest-processing-time-first rule, whose makespan is within 4/3 of the best possible; item
    order when sizes are unknown."""
    if sizes is None:
        return list(range(count))
    if len(sizes) != count:
        raise ValueError(f"got {len(sizes)} sizes for {count} items")
    return sorted(range(count), key=lambda position: (-sizes[position], position))


def _describe(fn: Callable, item: Any) -> str:
    """``unit NAME`` for a runner task (a (spec, unit) pair); else the function and the item's last
    part, e.g. ``link_partition 7`` for a dedup task (a (job, partition) pair)."""
    last = item[-1] if isinstance(item, tuple) and item else item
    if getattr(last, "unit", None):
        return f"unit {last.unit}"
    return f"{getattr(fn, '__name__', 'task')} {repr(last)[:200]}"


def _last_part(item: Any) -> str:
    """An item's last part without spaces, e.g. ``7`` for (job, 7) or ``(2,5)`` for (job, (2, 5))."""
    return "".join(repr(item[-1] if isinstance(item, tuple) and item else item).split())


def _cause(error: BaseException) -> str:
    """The original exception of a Ray error, without Ray's wrapper traceback."""
    cause = getattr(error, "cause", None)
    if cause is not None:
        return f"{type(cause).__name__}: {cause}"
    return str(error).strip().splitlines()[-1]


class LazyRayExecutor:
    """A ``RayExecutor`` started on the first ``map`` that has items, not before: a rerun that finds
    every stage and step up to date starts no Ray at all. ``on_start(executor)`` is called once Ray
    is up (the runner logs how long that took)."""

    def __init__(self, config: RayConfig, on_start: Callable[["RayExecutor"], None] | None = None):
        self.config = config
        self.on_start = on_start
        self.started: RayExecutor | None = None

    def _executor(self) -> RayExecutor:
        if self.started is None:
            self.started = RayExecutor(self.config)
            if self.on_start is not None:
                self.on_start(self.started)
        return self.started

    workers = property(lambda self: self._executor().workers)
    node_cpus = property(lambda self: self._executor().node_cpus)

    def map(self, fn: Callable, items: Sequence, label: str = "", cpus: int = 1, own_process: bool = False,
            sizes: Sequence[float] | None = None, on_result: Callable[[Any], Any] | None = None,
            more: Callable[[Any], Sequence] | None = None) -> list:
        return self._executor().map(fn, items, label, cpus, own_process, sizes, on_result, more) if items else []

    def shutdown(self) -> None:
        if self.started is not None:
            self.started.shutdown()


def make_executor(config: RayConfig, use_ray: bool, on_start: Callable[[RayExecutor], None] | None = None):
    """The executor of a run: Ray (started on first use) or, with ``use_ray=False``, this process."""
    use_jemalloc()  # for the driver's own reads too (``pipeline.memory_pool``)
    return LazyRayExecutor(config, on_start) if use_ray else InProcessExecutor()

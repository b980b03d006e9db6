"""Every error the pipeline raises on purpose, in one module that imports nothing of the project.

Each is an error a person fixes (a config key, an input file, a disk), so its message says what and
where; the command line prints it as one ``error:`` line (``pipeline.cli``). None of them is retried
by the executor: the same input fails the same way again.
"""
from __future__ import annotations


class ConfigError(Exception):
    """A configuration file that cannot be used; the message names the file and the key."""


class PipelineError(Exception):
    """A run that cannot go on; the message says which stage (or step) and what to do."""


class StepError(PipelineError):
    """A command that cannot run with this config (a section it needs is missing)."""


class ConservationError(Exception):
    """A unit's rows in differ from its rows kept plus removed: a bug in a stage, so never retried."""


class OutputError(Exception):
    """A stage made a table that is not valid Arrow data (a string that is not UTF-8, offsets past
    their buffer): a bug in the stage, found before anything was written, so never retried."""


class InputError(Exception):
    """Bad input under ``on_bad_input: fail``: the message names the file, the line and the problem."""


class TaskFailed(Exception):
    """A task failed (after its retries); the message names the stage and the unit of work."""


class StorageError(OSError):
    """A write failed for a reason retrying cannot fix (disk full, no permission, read-only)."""

"""The HTML report as the last step: written after every run, configured steps or not, unless it is
newer than everything it summarises (a rerun of a finished run writes nothing)."""
from __future__ import annotations

from pipeline.steps import Step


def _run(config, settings, executor, force, log) -> None:
    from pipeline.html_report import report_is_current, report_path, write_html_report

    if force or not report_is_current(config):
        write_html_report(config, log=log, executor=_running_ray(executor))
    else:
        log(f"report: up to date ({report_path(config)})")


def _running_ray(executor):
    """The run's Ray executor when Ray is up already (the run had work to do), else None: a run that
    found everything done started no Ray, and the report alone is not worth starting it; in process
    (``--no-ray``) there is no other process to read in."""
    from pipeline.executor import LazyRayExecutor, RayExecutor

    if isinstance(executor, LazyRayExecutor):
        return executor.started
    return executor if isinstance(executor, RayExecutor) else None


STEP = Step(name="report", run=_run, section=False, help="the HTML report (<work_dir>/report.html)")

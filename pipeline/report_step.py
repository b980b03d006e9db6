"""The HTML report as the last step: written after every run, configured steps or not, unless it is
newer than everything it summarises (a rerun of a finished run writes nothing)."""
from __future__ import annotations

from pipeline.steps import Step


def _run(config, settings, executor, force, log) -> None:
    from pipeline.html_report import report_is_current, report_path, write_html_report

    if force or not report_is_current(config):
        # In a task when Ray is up already (the run had work to do); a run that found everything
        # done started no Ray, and the report alone is not worth starting it.
        started = getattr(executor, "started", executor)
        write_html_report(config, log=log, executor=started if hasattr(started, "map") else None)
    else:
        log(f"report: up to date ({report_path(config)})")


STEP = Step(name="report", run=_run, section=False, help="the HTML report (<work_dir>/report.html)")

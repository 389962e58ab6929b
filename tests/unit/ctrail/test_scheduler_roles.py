"""Who schedules what: `ctrail run` everything; distributed, the one `ctrail worker scheduler`
the reports and the evidence worker its own archive's sealing and expiry (one process holds an
archive); no other worker schedules anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctrail.cli.main import main
from ctrail.cli.run import _start_scheduler
from ctrail.settings import Settings


def settings(tmp_path: Path) -> Settings:
    return Settings.model_validate({
        "data_dir": tmp_path, "evidence": {},
        "reports": {"weekly": {"template": "weekly", "schedule": "0 6 * * 1"}}})


@pytest.mark.parametrize(("role", "jobs"), [
    ("run", {"report:weekly", "evidence:seal", "evidence:expire"}),
    ("scheduler", {"report:weekly"}),
    ("evidence", {"evidence:seal", "evidence:expire"}),
    ("process", None), ("store", None), ("notify", None), ("collect", None),
])
def test_each_role_schedules_only_its_jobs(tmp_path: Path, role: str,
                                           jobs: set[str] | None) -> None:
    scheduler = _start_scheduler(settings(tmp_path), role)
    try:
        assert (None if scheduler is None else set(scheduler.wanted())) == jobs
    finally:
        if scheduler is not None:
            scheduler.stop()


def test_a_scheduler_worker_without_reports_is_a_usage_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"data_dir: {tmp_path}\n")
    assert main(["worker", "scheduler", "--config", str(config)]) == 2
    assert "`ctrail worker scheduler` needs at least one entry under `reports:`" in (
        capsys.readouterr().err)

"""The latency workflow: side by side on every pull request, inconclusive measured again and then failed."""
from __future__ import annotations

from pathlib import Path

import yaml

WORKFLOW = Path(__file__).resolve().parents[1] / ".github" / "workflows" / "latency.yml"


def _steps():
    doc = yaml.safe_load(WORKFLOW.read_text())
    return {s.get("name"): s for s in doc["jobs"]["latency"]["steps"] if s.get("name")}


def test_side_by_side_runs_on_every_pull_request():
    steps = _steps()
    ab = steps["Base and head side by side"]
    assert ab["if"].strip() == "github.event_name == 'pull_request'"  # not only after a baseline alarm
    run = ab["run"]
    assert "--against ../base" in run and "--require-power 5%" in run and "--threshold 2%" in run
    assert "[ $rc -eq 5 ]" in run and "rounds=$((rounds * 2))" in run  # inconclusive: measure more


def test_verdict_fails_on_regression_and_on_inconclusive():
    run = _steps()["Verdict"]["run"]
    assert "1) echo \"::error::latency regression" in run and "exit 1" in run
    assert "5) echo \"::error::inconclusive" in run
    trend = _steps()["Trend against the committed baseline (informational, never the verdict)"]["run"]
    assert "|| true" in trend  # the committed baseline never decides

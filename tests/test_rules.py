"""The alert rules, tried by Prometheus's own rule engine: `promtool test rules` feeds it
series shaped as guardian's metrics file gives them and checks which alerts fire, when.

(.ci/run installs promtool, from Debian's prometheus package; elsewhere these skip.)
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).parent
TESTS = HERE / "prometheus" / "guardian-rules.test.yml"
RULES = HERE.parent / "etc" / "prometheus" / "guardian-rules.yml"

promtool = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(promtool is None, reason="promtool is not installed")


def run_tests(path: Path) -> subprocess.CompletedProcess[str]:
    assert promtool is not None
    return subprocess.run(
        [promtool, "test", "rules", path.name],
        cwd=path.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@needs_promtool
def test_each_alert_fires_when_it_should_and_not_before() -> None:
    result = run_tests(TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@needs_promtool
def test_the_rule_tests_can_fail(tmp_path: Path) -> None:
    # The same tests against rules whose target-down alert waits 10 minutes, not 5.
    (tmp_path / "etc" / "prometheus").mkdir(parents=True)
    (tmp_path / "tests" / "prometheus").mkdir(parents=True)
    rules = RULES.read_text()
    assert rules.count("for: 5m") == 1
    (tmp_path / "etc" / "prometheus" / RULES.name).write_text(rules.replace("for: 5m", "for: 10m"))
    copy = tmp_path / "tests" / "prometheus" / TESTS.name
    copy.write_text(TESTS.read_text())
    result = run_tests(copy)
    assert result.returncode != 0
    assert "GuardianTargetDown" in result.stdout + result.stderr

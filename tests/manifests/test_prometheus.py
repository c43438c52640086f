"""The example Prometheus files (deploy/prometheus), offline: `promtool` (Debian package
prometheus) checks the rules and the scrape configuration and runs the rules' unit tests
(alerts.test.yaml); and, without promtool, every metric the rules, their tests and the README
name is one the services export."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from celery_config_sync.environment import Environment
from celery_config_sync.live_config import LiveConfig
from celery_config_sync.metrics import PREFIX, ServiceMetrics
from celery_config_sync.metrics_exposition import STATE
from tests.conftest import ROOT, require

PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
# A metric's name; not the package celery_config_sync that comments and links name.
NAME = re.compile(rf"\b{PREFIX}(?!sync\b)[a-z_]+\b")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    require(shutil.which("promtool") is not None,
            "promtool is not installed (apt-get install --no-install-recommends prometheus)")
    return subprocess.run(["promtool", *args], cwd=PROMETHEUS_DIR, capture_output=True,
                          text=True, timeout=60, check=False)


@pytest.mark.parametrize("args", [("check", "rules", "alerts.yaml"),
                                  ("check", "config", "prometheus.yaml"),
                                  ("test", "rules", "alerts.test.yaml")],
                         ids=["check-rules", "check-config", "test-rules"])
def test_promtool(args: tuple[str, ...]) -> None:
    result = promtool(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_unit_test_that_fires_it() -> None:
    """A rule added to alerts.yaml without a case in alerts.test.yaml that expects it to fire
    is a rule nothing checks (promtool passes a test file that never names it)."""
    rules = yaml.safe_load((PROMETHEUS_DIR / "alerts.yaml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    cases = yaml.safe_load((PROMETHEUS_DIR / "alerts.test.yaml").read_text())["tests"]
    fired = {check["alertname"] for case in cases for check in case.get("alert_rule_test", [])
             if check.get("exp_alerts")}
    assert "CeleryConfigQueueWithoutConsumer" in alerts
    assert alerts <= fired, sorted(alerts - fired)


def exported_samples() -> set[str]:
    """Every name of a celery_config_ metric a service exports (before any load): its samples'
    (``..._total``, ``..._bucket``) and the histogram's own, as PromQL and docs name them."""
    metrics = ServiceMetrics(LiveConfig("api", Environment()))  # no Redis is touched
    families = [family for family in metrics.registry.collect()
                if family.name.startswith(PREFIX)]
    names = {sample.name for family in families for sample in family.samples}
    names = {name for name in names if not name.endswith("_created")}
    names |= {family.name for family in families if family.type == "histogram"}
    names |= {PREFIX + family.name + ("_info" if family.kind.__name__.startswith("Info") else "")
              for family in STATE}
    return names


def readme_metrics_section() -> str:
    """The README's "Metrics" section (elsewhere celery_config_ names a package, a channel)."""
    match = re.search(r"^## Metrics\n(.*?)(?=^## )", (ROOT / "README.md").read_text(),
                      re.MULTILINE | re.DOTALL)
    assert match, "README.md has no '## Metrics' section"
    return match.group(1)


def test_every_metric_named_by_the_rules_and_the_readme_is_exported() -> None:
    exported = exported_samples()
    assert {"celery_config_applies_total", "celery_config_reload_seconds_bucket",
            "celery_config_applied_info", "celery_config_queue_depth"} <= exported
    for where, text in (("alerts.yaml", (PROMETHEUS_DIR / "alerts.yaml").read_text()),
                        ("alerts.test.yaml", (PROMETHEUS_DIR / "alerts.test.yaml").read_text()),
                        ("README", readme_metrics_section())):
        named = set(NAME.findall(text))
        assert named, where
        assert named <= exported, (where, named - exported)


def test_the_readme_lists_every_metric() -> None:
    def family(name: str) -> str:
        return re.sub(r"_(info|total|bucket|count|sum)$", "", name)

    listed = {family(name) for name in NAME.findall(readme_metrics_section())}
    missing = {family(name) for name in exported_samples()} - listed
    assert not missing, missing

"""The pure parts of the metrics: kombu's list keys of a queue, the priority steps a
configuration gives the broker, and the worker's metrics port setting."""

from __future__ import annotations

import pytest

from celery_config_sync.environment import Environment
from celery_config_sync.errors import CeleryConfigError
from celery_config_sync.queue_depth import PRIORITY_STEPS, list_keys, priority_steps


def test_a_queue_is_one_list_per_priority_step_under_the_prefix() -> None:
    assert list_keys("scan", "celery:") == ["celery:scan", "celery:scan\x06\x163",
                                            "celery:scan\x06\x166", "celery:scan\x06\x169"]
    assert list_keys("scan", "", (0,)) == ["scan"]


@pytest.mark.parametrize(("settings", "steps"), [
    ({}, PRIORITY_STEPS),
    ({"broker_transport_options": {"visibility_timeout": 60}}, PRIORITY_STEPS),
    ({"broker_transport_options": {"priority_steps": [9, 0, 5]}}, (0, 5, 9)),
])
def test_priority_steps_come_from_the_transport_options(settings: dict[str, object],
                                                        steps: tuple[int, ...]) -> None:
    assert priority_steps(settings) == steps


@pytest.mark.parametrize(("text", "port"), [("", 0), ("0", 0), ("9808", 9808)])
def test_the_metrics_port_is_off_unless_set(text: str, port: int) -> None:
    assert Environment().metrics_port == 0
    assert Environment.from_environ({"CELERY_CONFIG_METRICS_PORT": text}).metrics_port == port


@pytest.mark.parametrize("text", ["-1", "65536", "http"])
def test_a_bad_metrics_port_is_one_clear_error(text: str) -> None:
    with pytest.raises(CeleryConfigError, match="CELERY_CONFIG_METRICS_PORT"):
        Environment.from_environ({"CELERY_CONFIG_METRICS_PORT": text})

"""Validation checks each distinct route value once (issue 20): a value equal to one found
valid is skipped, so "equal" must never let a bad route through (True == 1 in Python)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from celery_config_sync.codec import ConfigDocument
from celery_config_sync.errors import InvalidConfig
from celery_config_sync.source import load_source
from celery_config_sync.validation import validate
from tests.conftest import SOURCE

GOOD = load_source(str(SOURCE))


def with_routes(routes: dict[str, Any]) -> ConfigDocument:
    return ConfigDocument(GOOD.queues, routes, GOOD.base, GOOD.app)


def verdict(document: ConfigDocument) -> tuple[str, str] | None:
    try:
        validate(document)
    except InvalidConfig as exc:
        return exc.key, exc.problem
    return None


@pytest.mark.parametrize(("good", "bad", "key"), [
    (1, True, "priority"), (0, False, "priority"), (1, 1.0, "priority")])
def test_a_bad_value_equal_to_a_good_one_is_still_refused(good: Any, bad: Any,
                                                          key: str) -> None:
    """``b`` sorts after ``a``: its value is checked after an equal one was found valid."""
    good_route = {"queue": "scan", "priority": 5} | {key: good}
    bad_route = {"queue": "scan", "priority": 5} | {key: bad}
    assert verdict(with_routes({"a.task": good_route})) is None
    refused = verdict(with_routes({"a.task": good_route, "b.task": bad_route}))
    assert refused is not None and refused[0] == f"routes['b.task'].{key}"


ROUTE_VALUES = st.fixed_dictionaries(
    {"queue": st.sampled_from(["scan", "batch", "nowhere"])},
    optional={"priority": st.sampled_from([0, 1, 5, 255, 256, -1, True, False, 1.0, "5"]),
              "routing_key": st.sampled_from(["scan", 1, None]),
              "exchange_type": st.sampled_from(["direct", "topic", "x-delayed"]),
              "queu": st.just("typo")})
PATTERNS = st.text("abc.", min_size=1, max_size=5)


@settings(max_examples=300, deadline=None)
@given(routes=st.dictionaries(PATTERNS, ROUTE_VALUES, min_size=1, max_size=8))
def test_the_verdict_is_the_first_route_refused_on_its_own(routes: dict[str, Any]) -> None:
    """Validating all routes at once gives the verdict of the first route (in sorted order)
    that validation refuses when it is the only one: memoizing never hides a refusal."""
    alone = {pattern: verdict(with_routes({pattern: route}))
             for pattern, route in routes.items()}
    first = next((alone[p] for p in sorted(routes) if alone[p] is not None), None)
    assert verdict(with_routes(routes)) == first

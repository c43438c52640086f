"""Which routed queues live workers consume (celery_config_sync.queue_coverage): the pure
computation over fleet records and a configuration, and the fleet record's ``consumes`` field
it reads (written by every worker, read by status, the page, /readyz and the metrics)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kombu import Queue

from celery_config_sync.fleet import CONSUMES, FIELD_LIMITS, consumed_queues, encode_consumes
from celery_config_sync.queue_coverage import (
    DEFAULT_QUEUE,
    coverage,
    declared_queues,
    routed_queues,
    unconsumed,
)
from celery_config_sync.source import load_source
from tests.conftest import SOURCE

# The origin project's case: the API and beat send to gmm and vectorization, the worker runs
# with a fixed -Q list that leaves them out.
SETTINGS: dict[str, Any] = {
    "task_queues": tuple(Queue(name) for name in ("celery", "scan", "gmm", "vectorization",
                                                  "spare")),
    "task_routes": {"scan.*": {"queue": "scan"}, "gmm.fit": {"queue": "gmm"}},
    "task_default_queue": "celery",
    "beat_schedule": {"rebuild": {"task": "vectors.rebuild", "schedule": 60.0,
                                  "options": {"queue": "vectorization"}},
                      "rescan": {"task": "scan.full", "schedule": 300.0},
                      "ping": {"task": "ping", "schedule": 10.0}},
}


def worker(instance: str, *queues: str) -> dict[str, str]:
    return {"service": "worker", "instance": instance, CONSUMES: json.dumps(list(queues))}


def by_name(rows: list[Any]) -> dict[str, Any]:
    return {row.name: row for row in rows}


def test_what_sends_to_each_queue() -> None:
    assert routed_queues(SETTINGS) == {
        "scan": ["route 'scan.*'", "beat 'rescan'"],  # the beat entry routed by Celery's MapRoute
        "gmm": ["route 'gmm.fit'"],
        "vectorization": ["beat 'rebuild'"],  # its own options.queue
        "celery": ["beat 'ping'", DEFAULT_QUEUE],  # no route matches: the default queue
    }


def test_a_worker_with_a_fixed_q_leaves_routed_queues_unconsumed() -> None:
    records = [worker("w1@a:1", "celery", "scan"), {"service": "api", "instance": "api:1"},
               {"service": "beat", "instance": "beat:1"}]
    rows = by_name(coverage(SETTINGS, records, depths={"gmm": 12}))
    assert list(rows) == ["celery", "scan", "gmm", "vectorization", "spare"]  # declared order
    assert unconsumed(rows.values()) == ["gmm", "vectorization"]
    assert rows["gmm"].as_dict() == {
        "name": "gmm", "routed": True, "senders": ["route 'gmm.fit'"], "consumers": 0,
        "unknown": 0, "depth": 12, "state": "no consumer", "consumed_by": []}
    assert (rows["scan"].consumers, rows["scan"].state) == (1, "consumed")
    assert rows["scan"].consumer_names == ("w1@a:1",)
    # Declared, sent to by nothing, consumed by nobody: not a problem.
    assert (rows["spare"].unconsumed, rows["spare"].state) == (False, "not routed")


def test_a_second_worker_consuming_the_rest_makes_it_clean() -> None:
    records = [worker("w1", "celery", "scan"), worker("w2", "gmm", "vectorization", "scan")]
    rows = by_name(coverage(SETTINGS, records))
    assert unconsumed(rows.values()) == []
    assert rows["scan"].consumers == 2 and rows["gmm"].consumers == 1


def test_no_worker_at_all_leaves_every_routed_queue_unconsumed() -> None:
    assert unconsumed(coverage(SETTINGS, [])) == ["celery", "scan", "gmm", "vectorization"]


@pytest.mark.parametrize("record", [
    {"service": "worker", "instance": "old:1"},  # a worker of an older release: no field
    {"service": "worker", "instance": "odd:1", CONSUMES: "scan,gmm"},  # not JSON
    {"service": "worker", "instance": "odd:2", CONSUMES: '{"scan": 1}'},  # not an array
    {"service": "worker", "instance": "odd:3", CONSUMES: '["scan", 3]'},  # not names
], ids=["absent", "not-json", "not-array", "not-names"])
def test_a_worker_that_does_not_say_is_unknown_not_consuming_nothing(
        record: dict[str, str]) -> None:
    rows = by_name(coverage(SETTINGS, [worker("new", "scan"), record]))
    assert unconsumed(rows.values()) == []
    assert (rows["gmm"].consumers, rows["gmm"].unknown, rows["gmm"].state) == (0, 1, "unknown")
    assert rows["scan"].state == "consumed"


def test_records_left_unread_count_as_unknown() -> None:
    rows = coverage(SETTINGS, [worker("w1", "celery")], hidden=3)
    assert unconsumed(rows) == [] and {row.unknown for row in rows} == {3}


def test_an_empty_consumes_list_is_a_worker_consuming_nothing() -> None:
    """Every queue cancelled (cancel_consumer): known, and nothing is consumed."""
    assert unconsumed(coverage(SETTINGS, [worker("idle")])) == [
        "celery", "scan", "gmm", "vectorization"]


def test_celery_route_forms_name_their_queue() -> None:
    """A route as a queue name string, task_routes as a sequence of dicts, a regex pattern, a
    Queue object as the route's queue: each sends to its queue, as Celery routes it."""
    settings = {"task_queues": (Queue("a"), Queue("b"), Queue("c"), Queue("d")),
                "task_default_queue": "a",
                "task_routes": ({"x.one": "b"},
                                {re.compile(r"^y\."): {"queue": Queue("c")}},
                                "proj.routers.route_task"),  # a router by name: no queue
                "beat_schedule": {"y": {"task": "y.tick", "schedule": 5.0}}}
    assert routed_queues(settings) == {"b": ["route 'x.one'"],
                                       "c": ["route '^y\\\\.'", "beat 'y'"],
                                       "a": [DEFAULT_QUEUE]}
    assert unconsumed(coverage(settings, [worker("w", "a", "b")])) == ["c"]


def test_no_declared_queue_means_celery_declares_the_default_one() -> None:
    assert declared_queues({"task_default_queue": "jobs"}) == ["jobs"]
    assert declared_queues({}) == ["celery"]
    assert unconsumed(coverage({}, [])) == ["celery"]


def test_the_demo_configuration_is_clean_with_a_worker_consuming_everything() -> None:
    settings = load_source(str(SOURCE)).to_celery_settings()
    names = declared_queues(settings)
    assert unconsumed(coverage(settings, [worker("all", *names)])) == []
    left_out = coverage(settings, [worker("q", *(n for n in names if n != "vectorization"))])
    assert unconsumed(left_out) == ["vectorization"]


# -------------------------------------------------------------------- the record's field
QUEUE_NAMES = st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=200)


@given(st.lists(QUEUE_NAMES, max_size=30))
def test_consumes_round_trips(names: list[str]) -> None:
    encoded = encode_consumes(names)
    assert encoded is not None
    assert consumed_queues({CONSUMES: encoded}) == frozenset(names)


@given(st.text())
def test_any_text_in_the_field_reads_as_names_or_unknown(text: str) -> None:
    found = consumed_queues({CONSUMES: text})
    assert found is None or all(isinstance(name, str) for name in found)


def test_the_largest_declarable_set_fits_and_a_larger_one_is_left_out() -> None:
    """validation.LIMITS: 256 queues of at most 200 characters fit the readers' limit; beyond
    it the field is left out (unknown), never cut short (a false "no consumer")."""
    largest = [f"{index:03d}" + "q" * 197 for index in range(256)]
    encoded = encode_consumes(largest)
    assert encoded is not None and len(encoded) <= FIELD_LIMITS[CONSUMES]
    assert encode_consumes([*largest, *("x" * 200 + str(i) for i in range(100))]) is None


NAMES = ("celery", "scan", "gmm", "vectorization", "spare")


@given(st.lists(st.one_of(st.none(), st.sets(st.sampled_from(NAMES))), max_size=6))
def test_unconsumed_is_routed_minus_every_consumed_unless_a_worker_is_unknown(
        fleet: list[set[str] | None]) -> None:
    """Any fleet of workers (None: a record that does not say): the unconsumed queues are the
    routed ones no record lists, or none at all while an unknown worker lives; the counts are
    the records listing each queue."""
    records = [worker(f"w{i}", *sorted(q)) if q is not None
               else {"service": "worker", "instance": f"old{i}"} for i, q in enumerate(fleet)]
    rows = by_name(coverage(SETTINGS, records))
    known = [q for q in fleet if q is not None]
    routed = set(routed_queues(SETTINGS))
    expected = [] if None in fleet else [
        name for name in NAMES if name in routed and not any(name in q for q in known)]
    assert unconsumed(rows.values()) == expected
    assert {name: row.consumers for name, row in rows.items()} == {
        name: sum(name in q for q in known) for name in NAMES}

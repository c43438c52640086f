"""Any settings module built from Celery's option table with generated data values is either
carried exactly (a Celery app configured from what we carry equals one configured by
``config_from_object`` from the module, setting by setting, types included) or refused with
the documented lines (one :class:`InvalidConfig` per problem, each one line naming its key),
never another exception. Old upper-case names are drawn too, alone or mixed with new ones."""

from __future__ import annotations

import string
from datetime import timedelta
from types import ModuleType
from typing import Any

from celery.app.defaults import _TO_NEW_KEY, _TO_OLD_KEY
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from celery import Celery
from celery_config_sync.celery_forms import DEPLOYMENT_SETTINGS
from celery_config_sync.codec import STRUCTURED_SETTINGS
from celery_config_sync.errors import InvalidConfig, SourceProblems
from celery_config_sync.source import read_settings
from celery_config_sync.validation import celery_options, option_type
from tests.integration.test_fidelity_corpus import assert_same

OPTIONS = sorted(set(celery_options()) - set(STRUCTURED_SETTINGS))
WORDS = st.text(string.ascii_lowercase + "_.-:/*", min_size=0, max_size=12)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                    st.floats(allow_nan=True, allow_infinity=True), WORDS)
JSONISH = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.tuples(inner, inner),
    st.dictionaries(WORDS, inner, max_size=3)), max_leaves=6)
BY_TYPE: dict[str, st.SearchStrategy[Any]] = {
    "string": st.one_of(st.none(), WORDS),
    "str": st.one_of(st.none(), WORDS),
    "bool": st.booleans(),
    "int": st.one_of(st.integers(0, 10**6), st.builds(timedelta, seconds=st.integers(0, 999))),
    "float": st.one_of(st.floats(0, 1e6), st.integers(0, 10**6)),
    "dict": st.dictionaries(WORDS, JSONISH, max_size=3),
    "list": st.lists(WORDS, max_size=3),
    "tuple": st.lists(WORDS, max_size=3).map(tuple),
}


@st.composite
def settings_modules(draw: st.DrawFn) -> dict[str, Any]:
    """Names of Celery's table (new or old spelling) -> a value of the option's type, or any
    data at all (the type's own refusal is then the documented outcome)."""
    names = draw(st.lists(st.sampled_from(OPTIONS), min_size=1, max_size=6, unique=True))
    spelling = draw(st.sampled_from(["new", "old", "mixed"]))
    module = {}
    for name in names:
        typed = BY_TYPE.get(option_type(name) or "", JSONISH)
        value = draw(st.one_of(typed, JSONISH) if draw(st.booleans()) else typed)
        old = _TO_OLD_KEY.get(name)
        use_old = old is not None and (spelling == "old" or (spelling == "mixed"
                                                             and draw(st.booleans())))
        module[old if use_old else name] = value
    return module


def reference(module: dict[str, Any]) -> Celery:
    app = Celery("reference", set_as_current=False)
    holder = ModuleType("celeryconfig")
    holder.__dict__.update(module)
    app.config_from_object(holder)
    return app


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(module=settings_modules())
def test_any_settings_module_is_carried_exactly_or_refused_in_documented_lines(
        module: dict[str, Any]) -> None:
    try:
        read = read_settings(module)
    except SourceProblems as refused:
        event("refused")
        assert refused.problems
        for problem in refused.problems:
            assert isinstance(problem, InvalidConfig)
            assert "\n" not in str(problem) and str(problem).startswith(f"{problem.key}: ")
        return
    event("carried")
    loaded = Celery("loaded", set_as_current=False)
    loaded.conf.update(read.document.to_celery_settings())
    expected = reference(module)
    carried = {celery_name(name) for name in module} - set(DEPLOYMENT_SETTINGS)
    for name in sorted(carried):
        assert_same(expected.conf[name], loaded.conf[name], name)
    for name in set(DEPLOYMENT_SETTINGS) & {celery_name(name) for name in module}:
        assert name not in read.document.base, name  # set aside, never carried


def celery_name(name: str) -> str:
    return _TO_NEW_KEY.get(name, name)

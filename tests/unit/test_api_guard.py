"""The API guard's parsers and checks (celery_config_sync.api_guard, terminal_text,
secret_files), with Hypothesis where they take arbitrary input."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from celery_config_sync.api_guard import (
    DEFAULT_HOSTS,
    ApiSecurity,
    FailedAttempts,
    _digest,
    _host_and_length,
    excerpt,
    host_name,
)
from celery_config_sync.environment import Environment
from celery_config_sync.errors import CeleryConfigError
from celery_config_sync.secret_files import MAX_SECRET_BYTES, read_secret
from celery_config_sync.terminal_text import shown

LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
HOSTNAME = st.lists(LABEL, min_size=1, max_size=4).map(".".join)


HEADER_NAME = st.sampled_from([b"host", b"Host", b"content-length", b"Content-Length",
                                b"authorization", b"content-type", b"x-host"])
HEADERS = st.lists(st.tuples(HEADER_NAME, st.binary(max_size=30)), max_size=8)


@given(HEADERS)
def test_the_guard_reads_host_and_length_as_a_dict_of_every_header_would(
        headers: list[tuple[bytes, bytes]]) -> None:
    """The guard decodes two headers only (issue 20), and finds what decoding them all into a
    dict (names lowercased, the last one of a name kept) found."""
    every = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in headers}
    assert _host_and_length(headers) == (every.get("host"), every.get("content-length"))


@given(st.text())
def test_shown_is_always_printable_and_keeps_printable_text(text: str) -> None:
    out = shown(text)
    assert out.isprintable()
    if text.isprintable():
        assert out == text


@given(st.text(), st.integers(min_value=1, max_value=200))
def test_an_excerpt_is_short_and_printable(text: str, limit: int) -> None:
    out = excerpt(text, limit)
    assert out.isascii() and out.isprintable()
    # Each character escapes to at most 10; the note on the length is short.
    assert len(out) <= 10 * limit + 40


@given(HOSTNAME, st.integers(min_value=0, max_value=65535))
def test_a_host_header_names_its_host_without_the_port(host: str, port: int) -> None:
    assert host_name(host) == host == host_name(host.upper())
    assert host_name(f"{host}:{port}") == host
    assert host_name(f"[fd00::{port:x}]:{port}") == f"fd00::{port:x}"


@given(st.lists(HOSTNAME, max_size=5))
def test_allowed_hosts_parse_as_a_set_added_to_the_defaults(names: list[str]) -> None:
    env = Environment.from_environ({"CELERY_CONFIG_API_ALLOWED_HOSTS": " , ".join(names)})
    assert env.api_allowed_hosts == frozenset(names)
    security = ApiSecurity.from_environment(env)
    assert security.allowed_hosts == DEFAULT_HOSTS | frozenset(names)
    assert all(security.host_allowed(f"{name}:8000") for name in names)
    assert not security.host_allowed("evil.invalid") or "evil.invalid" in names
    # An address is never a rebinding (that needs the attacker's name): always served.
    assert security.host_allowed("192.168.1.20:8000") and security.host_allowed("[fd00::5]")


@given(st.text(max_size=40))
def test_the_allowed_hosts_parser_accepts_names_or_says_why_not(text: str) -> None:
    try:
        env = Environment.from_environ({"CELERY_CONFIG_API_ALLOWED_HOSTS": text})
    except CeleryConfigError as exc:
        assert str(exc).startswith("CELERY_CONFIG_API_ALLOWED_HOSTS=")
        assert "\n" not in str(exc).replace(repr(text), "")
        return
    for name in env.api_allowed_hosts:
        assert name == "*" or not any(char.isspace() or char in "/@" for char in name)


@pytest.mark.parametrize("value", ["host:8000", "http://host", "user@host", "a b", "::1"])
def test_the_allowed_hosts_refuse_ports_urls_and_bare_ipv6(value: str) -> None:
    with pytest.raises(CeleryConfigError, match="not a host name"):
        Environment.from_environ({"CELERY_CONFIG_API_ALLOWED_HOSTS": value})


@given(st.lists(st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126),
                        min_size=1, max_size=50), min_size=1, max_size=4, unique=True),
       st.text(max_size=60))
def test_exactly_the_tokens_of_the_file_are_accepted(tokens: list[str], other: str) -> None:
    security = ApiSecurity(tuple(_digest(token) for token in tokens))
    for token in tokens:
        assert security.token_accepted(f"Bearer {token}")
        assert security.token_accepted(f"bearer {token}")
        assert not security.token_accepted(token)
        assert not security.token_accepted(f"Basic {token}")
    assert security.token_accepted(f"Bearer {other}") == (other.strip() in tokens)
    assert not security.token_accepted(None)


def test_failed_attempts_are_logged_once_per_address_per_interval(
        caplog: pytest.LogCaptureFixture) -> None:
    failures = FailedAttempts(interval=3600, addresses=2)
    with caplog.at_level(logging.WARNING, "celery_config_sync.api"):
        for _ in range(50):
            failures.refused("10.0.0.1", "/tasks/x", "a wrong bearer token")
        failures.refused("10.0.0.2", "/tasks/x", "a wrong bearer token")
        failures.refused("10.0.0.3", "/tasks/x", "a wrong bearer token")  # forgets 10.0.0.1
        failures.refused("10.0.0.1", "/tasks/x\x1b[2J", "a wrong bearer token")
    assert failures.logged == 4 and len(caplog.records) == 4
    assert all("\x1b" not in record.getMessage() for record in caplog.records)


@given(st.binary(min_size=0, max_size=MAX_SECRET_BYTES + 20))
def test_a_secret_file_is_text_of_bounded_size_or_one_clear_error(
        tmp_path_factory: pytest.TempPathFactory,
        data: bytes) -> None:
    path = tmp_path_factory.mktemp("secret") / "file"
    path.write_bytes(data)
    try:
        text = read_secret(str(path), "token file")
    except CeleryConfigError as exc:
        message = str(exc)
        assert message.startswith(f"token file {path}: ")
        assert ("larger than" in message) == (len(data) > MAX_SECRET_BYTES)
        return
    assert 0 < len(data) <= MAX_SECRET_BYTES
    assert text == data.decode().rstrip("\r\n") and text


def test_protected_views_without_a_token_file_are_refused() -> None:
    env = Environment.from_environ({"CELERY_CONFIG_API_PROTECT_VIEWS": "true"})
    with pytest.raises(CeleryConfigError, match="needs CELERY_CONFIG_API_TOKEN_FILE"):
        ApiSecurity.from_environment(env)

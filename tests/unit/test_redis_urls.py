"""The password of a Redis URL: added from a file, never shown (property-based)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from celery_config_sync.connection import read_password, redacted, with_password
from celery_config_sync.environment import Environment
from celery_config_sync.errors import CeleryConfigError

PASSWORDS = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"),
                    min_size=1, max_size=40)
USERS = st.sampled_from(["", "worker", "api", "seeder"])


@given(user=USERS, password=PASSWORDS)
def test_a_password_added_to_a_url_reads_back_and_is_never_shown(user: str,
                                                                  password: str) -> None:
    url = f"redis://{user + '@' if user else ''}redis:6379/1?ssl_cert_reqs=required"
    carried = with_password(url, password)
    parts = urlsplit(carried)
    assert unquote(parts.password or "") == password
    assert (parts.username or "") == user and parts.hostname == "redis" and parts.port == 6379
    assert parts.path == "/1" and parts.query == "ssl_cert_reqs=required"
    shown = redacted(carried)
    assert shown == f"redis://{user}:***@redis:6379/1?ssl_cert_reqs=required"
    if len(password) > 3:
        assert password not in shown


def test_a_url_with_a_password_and_a_file_is_refused() -> None:
    with pytest.raises(CeleryConfigError, match="keep the password in the file only"):
        with_password("redis://worker:x@redis:6379/0", "y")


@given(content=st.text(max_size=30))
def test_a_password_file_gives_its_first_line_or_one_error(content: str) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "secret"
        path.write_text(content, encoding="utf-8", newline="")
        stripped = content.rstrip("\r\n")
        if stripped:
            assert read_password(str(path)) == stripped
        else:
            with pytest.raises(CeleryConfigError, match="empty"):
                read_password(str(path))


def test_the_environment_reads_the_password_file_once_and_hides_it(tmp_path: Path) -> None:
    secret = tmp_path / "redis-password"
    secret.write_text("s3cr3t-pw\n")
    env = Environment.from_environ({"CELERY_CONFIG_REDIS_URL": "redis://api@redis:6379/0",
                                    "CELERY_CONFIG_REDIS_PASSWORD_FILE": str(secret)})
    assert env.redis_password == "s3cr3t-pw"
    assert urlsplit(env.redis_url).password == "s3cr3t-pw"
    assert "s3cr3t-pw" not in repr(env) and "api:***@redis" in repr(env)
    with pytest.raises(CeleryConfigError, match="cannot read it"):
        Environment.from_environ({"CELERY_CONFIG_REDIS_PASSWORD_FILE": str(tmp_path / "no")})

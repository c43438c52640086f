"""A redis-server process of our own on a free loopback port, for the tests and the benchmarks;
and one started by the redis image's own entrypoint, with its ACL users (and TLS)."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis


def redis_server_binary() -> str | None:
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A redis-server process of our own: started, stopped and restarted by the tests."""

    def __init__(self, workdir: Path, extra_args: tuple[str, ...] = ()) -> None:
        self.workdir = workdir
        self.extra_args = extra_args  # more redis-server options (--requirepass secret...)
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = redis_server_binary() or "redis-server"
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir), *self.extra_args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.AuthenticationError:
                return  # it answers, and wants a password (extra_args: --requirepass)
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.02)
            finally:
                client.close()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)


# ------------------------------------------------------------- behind the image's entrypoint
ROOT = Path(__file__).resolve().parent.parent
IMAGE = ROOT / "images" / "redis"
ROLES = ("health", "seeder", "worker", "api", "admin")


@dataclass
class AclRedis:
    """redis-server exec'd by the image's entrypoint, with the passwords in ``secrets``."""

    port: int
    secrets: Path
    process: subprocess.Popen[bytes]
    tls: bool = False

    def url(self, role: str, db: int = 0) -> str:
        if self.tls:  # as compose/tls.yaml writes them
            return (f"rediss://{role}@127.0.0.1:{self.port}/{db}?ssl_cert_reqs=required"
                    f"&ssl_ca_certs={self.secrets / 'redis-tls-ca'}")
        return f"redis://{role}@127.0.0.1:{self.port}/{db}"

    def password_file(self, role: str) -> str:
        return str(self.secrets / f"redis-{role}")

    def password(self, role: str) -> str:
        return (self.secrets / f"redis-{role}").read_text().strip()

    def client(self, role: str) -> redis.Redis:
        return redis.Redis.from_url(self.url(role),
                                    password=self.password(role))

    def acl_log(self) -> list[dict[str, object]]:
        entries = self.client("admin").execute_command("ACL", "LOG")
        return [{k.decode() if isinstance(k, bytes) else k: v for k, v in e.items()}
                for e in entries]

    def as_role(self, role: str) -> dict[str, str]:
        """The environment of a process of ``role``: user in the URL, password in a file,
        Celery's keys under the prefix the ACL gives them."""
        return {"CELERY_CONFIG_REDIS_PASSWORD_FILE": self.password_file(role),
                "CELERY_CONFIG_CELERY_KEYPREFIX": "celery:"}


def start_acl_redis(workdir: Path, *, tls: bool = False, aof: bool = False) -> AclRedis:
    """With ``tls``: the material of compose/make-tls.sh, mounted under the names compose's
    tls.yaml gives it, so the entrypoint serves TLS only."""
    secret_dir = workdir / "secrets"
    secret_dir.mkdir(exist_ok=True)  # a restart in the same directory keeps the passwords
    for role in ROLES:
        if not (secret_dir / f"redis-{role}").exists():
            (secret_dir / f"redis-{role}").write_text(secrets.token_urlsafe(24) + "\n")
    if tls and not (secret_dir / "redis-tls-ca").exists():
        subprocess.run(["sh", str(ROOT / "compose" / "make-tls.sh"), str(workdir)], check=True,
                       capture_output=True)
        for name, made in (("cert", "redis.crt"), ("key", "redis.key"), ("ca", "ca.crt")):
            shutil.copy(workdir / "tls" / made, secret_dir / f"redis-tls-{name}")
    port = free_port()
    conf = workdir / "redis.conf"
    conf.write_text(f"port {port}\nbind 127.0.0.1\nprotected-mode yes\nsave \"\"\n"
                    f"appendonly {'yes' if aof else 'no'}\ndir {workdir}\n")
    env = {**os.environ, "REDIS_CONF": str(conf), "REDIS_ROLES_FILE": str(IMAGE / "roles.acl"),
           "REDIS_SECRETS_DIR": str(secret_dir), "REDIS_ACL_FILE": str(workdir / "users.acl"),
           "REDIS_PORT": str(port), "REDIS_DATA": str(workdir)}
    process = subprocess.Popen(["sh", str(IMAGE / "redis-entrypoint")], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = AclRedis(port, secret_dir, process, tls)

    deadline = time.monotonic() + 10
    while True:
        if process.poll() is not None:
            raise RuntimeError("redis-server exited behind the entrypoint")
        try:
            server.client("health").ping()
            return server
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start behind the entrypoint") from None
            time.sleep(0.05)

"""The private redis-server: a password made once and kept 0600, refused clients without it, no secret on
its command line; and a Redis that cannot run (its port taken) is given up on with its own reason."""

from __future__ import annotations

import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from comfyjobs.backoff import Backoff
from comfyjobs.errors import ConfigError
from comfyjobs.redis_server import PASSWORD_FILE, RedisServer, load_or_create_password, redact_url
from comfyjobs.supervisor import Supervisor
from tests.support import free_port


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(port=free_port(), data_dir=tmp_path / "redis")
    server.start()
    server.wait_ready()
    yield server
    server.stop()


def refused_without_password(port: int) -> str:
    """What Redis answers a command from a client that has not authenticated (RESP, raw)."""
    client = redis.Redis(host="127.0.0.1", port=port)
    try:
        with pytest.raises((redis.AuthenticationError, redis.ResponseError)):
            client.set("k", "v")
    finally:
        client.close()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET k\r\n")
        return sock.recv(200).decode()


def test_a_client_needs_the_password(server: RedisServer) -> None:
    assert refused_without_password(server.port).startswith("-NOAUTH")
    wrong = redis.Redis(host="127.0.0.1", port=server.port, password="not-the-password")
    with pytest.raises((redis.AuthenticationError, redis.ResponseError)):
        wrong.ping()
    wrong.close()
    client = redis.Redis.from_url(server.url)
    assert client.set("k", "v") and client.get("k") == b"v"
    client.close()


def test_the_password_is_kept_0600_and_reused_across_restarts(server: RedisServer, tmp_path: Path) -> None:
    path = tmp_path / "redis" / PASSWORD_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert server.password and path.read_text().strip() == server.password
    assert stat.S_IMODE((tmp_path / "redis").stat().st_mode) == 0o700
    url = server.url
    assert url == f"redis://:{server.password}@127.0.0.1:{server.port}/0"

    server.stop()
    again = RedisServer(port=server.port, data_dir=tmp_path / "redis")  # as after `up` restarts
    assert again.password == server.password
    again.start()
    try:
        again.wait_ready()
        client = redis.Redis.from_url(url)  # the old URL still works
        assert client.ping()
        client.close()
        assert refused_without_password(again.port).startswith("-NOAUTH")
    finally:
        again.stop()


def test_the_password_is_not_on_the_command_line(server: RedisServer) -> None:
    assert server.pid is not None and server.password
    assert server.password not in " ".join(server.argv())
    cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes()
    assert b"redis-server" in cmdline and server.password.encode() not in cmdline


def test_the_password_file_is_made_once_whoever_asks(tmp_path: Path) -> None:
    path = tmp_path / PASSWORD_FILE
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(load_or_create_password(path))) for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1 and path.read_text().strip() == results[0]
    assert [p.name for p in tmp_path.iterdir()] == [PASSWORD_FILE]  # no temporary files left


def test_a_loose_or_bad_password_file(tmp_path: Path) -> None:
    path = tmp_path / PASSWORD_FILE
    path.write_text("A" * 32 + "\n")
    path.chmod(0o644)
    assert load_or_create_password(path) == "A" * 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # tightened
    path.write_text("has spaces and @ in it")
    with pytest.raises(ConfigError, match="delete it"):
        load_or_create_password(path)


def test_redact_url() -> None:
    assert redact_url("redis://:s3cret@127.0.0.1:6399/0") == "redis://:***@127.0.0.1:6399/0"
    assert redact_url("rediss://user:s3cret@redis.example:6380/1") == "rediss://user:***@redis.example:6380/1"
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert redact_url("redis://:p%40ss@h:1/0") == "redis://:***@h:1/0"


def test_a_redis_that_cannot_run_is_given_up_on_saying_why(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = RedisServer(port=port, data_dir=tmp_path / "redis")
        sup = Supervisor()
        try:
            sup.add_process(
                "redis",
                server.spawn,
                server.stop_timeout_s,
                Backoff((0.01,), give_up_after=3),
                "Nothing works without Redis",
                last_words=server.last_words,
            )
            assert sup.wait() is False
        finally:
            sup.stop_all()
    assert sup.exited is not None and sup.exited.name == "redis"
    assert "failed 3 times in a row" in sup.exited.gave_up_because
    assert "Address already in use" in sup.exited.gave_up_because

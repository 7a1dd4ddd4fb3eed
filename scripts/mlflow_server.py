"""`mlflow server` or `mlflow ui` on a free port of 127.0.0.1, for what needs one running: the
benchmark, the README's pictures and the tests. Not part of moonprop: a user starts their own.

One worker and no job runner: with MLflow's defaults it starts ~15 processes and takes ~3 GiB. It
runs in a process group of its own and is stopped by it, so nothing it started outlives its user;
it may be stopped and started again on the same port (a restart).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

MLFLOW = Path(sys.executable).with_name("mlflow")
POSTGRES = Path(__file__).with_name("postgres")


def postgres_database(prefix: str) -> str | None:
    """A new, empty database `PREFIX_xxxxxxxx` on the loopback PostgreSQL of scripts/postgres, as a
    `--backend-store-uri`; None without one (or without psycopg)."""
    try:
        import psycopg
    except ImportError:
        return None
    url = subprocess.run([str(POSTGRES), "url", "postgres"], capture_output=True, text=True).stdout.strip()
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    try:
        connection = psycopg.connect(url, connect_timeout=5, autocommit=True)  # CREATE DATABASE: no transaction
    except psycopg.Error:
        return None
    with connection:
        connection.execute(f"CREATE DATABASE {name}")
    return url.rsplit("/", 1)[0] + f"/{name}"


def basic_auth(folder: Path, database: str, admin_password: str) -> dict[str, str]:
    """What `mlflow server --app-name basic-auth` needs: its config (users in `database`, nobody
    allowed anything not granted), readable by its owner only as it holds the database's password,
    and its admin's password and CSRF key; the environment to start the server with."""
    config = folder / "auth.ini"
    config.touch(mode=0o600)
    config.write_text("[mlflow]\ndefault_permission = NO_PERMISSIONS\n"
                      f"database_uri = {database}\nadmin_username = admin\n"
                      "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
                      "auth_cache_ttl_seconds = 60\n")  # a password checked once a minute, not every request
    return {"MLFLOW_AUTH_CONFIG_PATH": str(config), "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": uuid.uuid4().hex}


class MlflowServer:
    def __init__(self, *args: str, log: Path | None = None, env: dict[str, str] | None = None) -> None:
        """`args`: the command and its options (`"ui", "--backend-store-uri", uri`); the output goes
        to `log` (appended), or nowhere; `env`: added to this process's environment (basic_auth's)."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.command = [str(MLFLOW), *args, "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        self.log, self.url, self.env = log, f"http://127.0.0.1:{self.port}", env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 90) -> None:
        """Start it and return once /health answers; RuntimeError (with the log's end) if it exits
        or does not answer in time."""
        output = open(self.log, "a") if self.log else subprocess.DEVNULL
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **self.env}
        self.proc = subprocess.Popen(self.command, env=env, start_new_session=True, stdout=output,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                urllib.request.urlopen(self.url + "/health", timeout=2)
                return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    said = self.log.read_text()[-2000:] if self.log else ""
                    raise RuntimeError(f"mlflow {self.command[1]} did not start: {said}") from None
                time.sleep(0.5)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)


@contextlib.contextmanager
def serving(*args: str, log: Path | None = None) -> Iterator[str]:
    """MlflowServer(*args) started: its URL, until the block ends."""
    server = MlflowServer(*args, log=log)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()

"""Real servers on loopback for the scale-out tests: PostgreSQL (Debian's package, a fresh cluster in a temporary
directory, run as the unprivileged `postgres` user when the tests run as root), Redis, and Celery workers. Each
is started here and stopped by its process id (its process group for the workers)."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg2

from tmiv_assets_tests.conftest import PROJECT_ROOT, free_port

MISSING = ("PostgreSQL and Redis servers are needed (Debian packages postgresql and redis-server: `make servers`); "
           "run pytest with --without-servers to leave these tests out")


def postgres_bin(program: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{program}"))
    if not found:
        raise FileNotFoundError(f"{program} not found. {MISSING}")
    return found[-1]


def _as_postgres_user() -> dict:
    """initdb and postgres refuse to run as root: drop to the package's `postgres` user."""
    return {"user": "postgres", "group": "postgres"} if os.geteuid() == 0 else {}


def wait_for(ready, what: str, process: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout:.0f}s:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def stop(process: subprocess.Popen, group: bool = False, timeout: float = 30, how=signal.SIGTERM) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, how) if group else process.send_signal(how)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL) if group else process.kill()
        process.wait(timeout)


class Postgres:
    """A PostgreSQL cluster of its own: `url` names database `tmiv` owned by the trusted user `tmiv`."""

    def __init__(self):
        self.directory = Path(tempfile.mkdtemp(prefix="tmiv-postgres-"))
        self.port = free_port()
        self.log = self.directory / "server.log"
        self.process: subprocess.Popen | None = None
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://tmiv@127.0.0.1:{self.port}/tmiv"

    def start(self) -> Postgres:
        data = self.directory / "data"
        if not data.exists():
            subprocess.run([postgres_bin("initdb"), "-D", str(data), "-U", "tmiv", "--auth=trust", "-E", "UTF8",
                            "--no-sync"], check=True, capture_output=True, **_as_postgres_user())
        with open(self.log, "a") as log:
            self.process = subprocess.Popen(
                [postgres_bin("postgres"), "-D", str(data), "-p", str(self.port), "-h", "127.0.0.1",
                 "-k", str(self.directory), "-c", "fsync=off", "-c", "max_connections=200"],
                stdout=log, stderr=subprocess.STDOUT, **_as_postgres_user())
        wait_for(self._accepts, "PostgreSQL", self.process, self.log)
        connection = psycopg2.connect(host="127.0.0.1", port=self.port, user="tmiv", dbname="postgres")
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = 'tmiv'")
            if cursor.fetchone() is None:
                cursor.execute("CREATE DATABASE tmiv")
        connection.close()
        return self

    def _accepts(self) -> bool:
        try:
            psycopg2.connect(host="127.0.0.1", port=self.port, user="tmiv", dbname="postgres",
                             connect_timeout=2).close()
            return True
        except psycopg2.OperationalError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process, how=signal.SIGINT)  # fast shutdown: clients' pooled connections are cut, not awaited

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


@contextmanager
def redis_server() -> Iterator[str]:
    """A Redis server without persistence; yields its URL."""
    if shutil.which("redis-server") is None:
        raise FileNotFoundError(f"redis-server not found. {MISSING}")
    port, directory = free_port(), Path(tempfile.mkdtemp(prefix="tmiv-redis-"))
    log = directory / "server.log"
    with open(log, "w") as handle:
        process = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                    "--appendonly", "no", "--dir", str(directory)], stdout=handle,
                                   stderr=subprocess.STDOUT)
    wait_for(lambda: "Ready to accept connections" in log.read_text(), "Redis", process, log)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop(process)
        shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def celery_workers(environment: dict[str, str], count: int, directory: Path) -> Iterator[list[subprocess.Popen]]:
    """`count` Dagster Celery workers of one process each, started as the README says."""
    bin_dir = Path(sys.executable).parent
    environment = environment | {"PATH": f"{bin_dir}{os.pathsep}{environment.get('PATH', '')}"}  # it runs `celery`
    workers = []
    try:
        for number in range(count):
            log = directory / f"worker{number}.log"
            with open(log, "w") as handle:
                workers.append(subprocess.Popen(
                    [str(bin_dir / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app",
                     "-y", "deploy/celery/worker.yaml", "-n", f"worker{number}", "--", "--concurrency", "1"],
                    cwd=PROJECT_ROOT, env=environment, stdout=handle, stderr=subprocess.STDOUT,
                    start_new_session=True))  # its own process group: celery forks a pool child
            wait_for(lambda log=log: " ready." in log.read_text(), f"Celery worker {number}", workers[-1], log,
                     timeout=120)
        yield workers
    finally:
        for worker in workers:
            stop(worker, group=True)

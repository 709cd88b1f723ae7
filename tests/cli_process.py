"""Drive the installed ``chatbatch`` binary as a user or other tooling would: commands, workers."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

BINARY = shutil.which(
    "chatbatch",
    path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
)
REPO = Path(__file__).resolve().parents[1]


def chatbatch(
    *args: str,
    env: dict[str, str],
    cwd: Path | None = None,
    check: bool = True,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    assert BINARY, "the chatbatch binary must be installed (pip install .)"
    proc = subprocess.run(
        [BINARY, *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"chatbatch {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def base_env(data_home: Path | None = None) -> dict[str, str]:
    """The environment less chatbatch's settings, with XDG_DATA_HOME at ``data_home`` (else a
    fresh temporary directory), so the default database is never the real user's: commands
    run with the same ``data_home`` share that database."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CHATBATCH_") and k != "GEEKAI_API_KEY"
    }
    env["XDG_DATA_HOME"] = str(data_home or _temporary_data_home())
    return env


def _temporary_data_home() -> Path:
    """A data directory of its own, removed when the test run ends."""
    path = Path(tempfile.mkdtemp(prefix="chatbatch-data-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def write_prompts(path: Path, n: int) -> list[dict[str, object]]:
    bodies = []
    with path.open("w") as fh:
        for i in range(n):
            body = {
                "model": "gpt-4o-mini",
                "enable_search": i % 3 == 0,
                "messages": [
                    {"role": "system", "content": "Label it."},
                    {"role": "user", "content": f"prompt {i}: {'x' * (i % 17)}"},
                ],
            }
            bodies.append(body)
            fh.write(
                orjson.dumps(
                    {
                        "custom_id": f"id-{i}",
                        "method": "POST",
                        "url": "/v1/chat/completions",
                        "body": body,
                    }
                ).decode()
                + "\n"
            )
    return bodies


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    assert BINARY
    with log.open("wb") as out:
        return subprocess.Popen(
            [BINARY, "worker", "--concurrency", "8", "--loglevel", "WARNING"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_finished(env: dict[str, str], name: str, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = orjson.loads(chatbatch("status", name, "--json", env=env).stdout)
        if status["status"] != "running":
            return status
        time.sleep(0.5)
    raise AssertionError(f"not finished in {timeout}s: {status}")


def work_with_workers(
    env: dict[str, str], name: str, log_dir: Path, *, count: int = 2, timeout: float = 180
) -> tuple[dict, str]:
    """Start ``count`` workers, wait for batch ``name`` to finish, stop them; the final status
    and the workers' logs."""
    logs = [log_dir / f"w{i}.log" for i in range(count)]
    workers = [start_worker(env, log) for log in logs]
    try:
        status = wait_finished(env, name, timeout=timeout)
    finally:
        for proc in workers:
            stop(proc)
    return status, "".join(log.read_text() for log in logs)


def query_rows(url: str, sql: str) -> list[tuple]:
    """The rows of one read-only SQL statement on the database at ``url``."""
    from sqlalchemy import text

    from chatbatch.store.db import make_engine

    engine = make_engine(url, pool_size=1)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(sql))]
    finally:
        engine.dispose()


def database_dump(url: str) -> str:
    """Every row of every table as text, to look for what must never be stored."""
    from sqlalchemy import text

    from chatbatch.store.db import make_engine

    engine = make_engine(url, pool_size=1)
    with engine.connect() as conn:
        dumped = [
            conn.execute(
                text(f"SELECT coalesce(string_agg(t::text, ' '), '') FROM {table} t")
            ).scalar_one()
            for table in ("batches", "requests", "alembic_version")
        ]
    engine.dispose()
    return " ".join(dumped)

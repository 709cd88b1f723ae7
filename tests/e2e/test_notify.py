"""``run --notify URL``: a cron job's webhook gets one JSON summary when the batch finishes."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator

import orjson
import pytest
from cli_process import BINARY, REPO, base_env, chatbatch

NOTIFY_DEADLINE_SECONDS = 30  # cli.notify's: the tests run the installed binary

pytestmark = pytest.mark.skipif(
    BINARY is None and not os.environ.get("CI"), reason="chatbatch is not installed"
)


def test_run_posts_a_summary_with_the_exit_code(sim, tmp_path, hook) -> None:
    url = f"http://127.0.0.1:{hook.server_port}/hooks/nightly?token=s3cret"
    env = base_env(tmp_path) | {
        "CHATBATCH_API_BASE": sim.base_url,
        "CHATBATCH_API_KEY": "sk-simulator",
        "CHATBATCH_POLL_FIRST_SECONDS": "0.05",
    }
    examples = str(REPO / "examples" / "prompts.jsonl")
    proc = chatbatch("run", examples, "-o", "out.jsonl", "--notify", url, env=env, cwd=tmp_path)
    assert len(hook.received) == 1
    path, body = hook.received[0]
    assert path == "/hooks/nightly?token=s3cret"
    summary = orjson.loads(body)
    assert summary["event"] == "batch.finished" and summary["exit_code"] == 0
    assert summary["status"] == "completed" and summary["counts"]["succeeded"] == summary["total"]
    assert summary["output"] == "out.jsonl"
    assert "sk-simulator" not in body.decode()

    sim.reconfigure(fail_rate=1.0)
    hook.status = 500
    failed = chatbatch(
        "run", examples, "-o", "out2.jsonl", "--notify", url, env=env, cwd=tmp_path, check=False
    )
    assert failed.returncode == 3, failed.stderr  # the batch's outcome, not the hook's
    sent = [orjson.loads(b) for _, b in hook.received[1:]]
    assert len(sent) == 3 and all(s["exit_code"] == 3 for s in sent)  # 5xx is retried
    assert "could not notify http://127.0.0.1" in failed.stderr
    assert "s3cret" not in failed.stdout + failed.stderr + proc.stdout + proc.stderr


def test_notify_refuses_a_non_http_url(tmp_path) -> None:
    proc = chatbatch(
        "run",
        str(REPO / "examples" / "prompts.jsonl"),
        "-o",
        "o.jsonl",
        "--notify",
        "file:///x",
        env=base_env(tmp_path),
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 2 and "http:// or https:// URL" in proc.stderr


@pytest.fixture
def trickler() -> Iterator[dict[str, object]]:
    """A receiver that reads the request, then sends one byte a second and never finishes: no
    single read ever times out. Records when the request arrived."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()
    state: dict[str, object] = {"port": listener.getsockname()[1], "arrived": []}

    def trickle(conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            state["arrived"].append(time.monotonic())
            try:
                conn.sendall(b"HTTP/1.1 200 OK\r\nx-slow: ")
                while not stop.wait(1.0):
                    conn.sendall(b"a")
            except OSError:
                pass  # the client went away

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=trickle, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield state
    stop.set()
    listener.close()


def test_a_receiver_that_never_finishes_does_not_hold_up_the_exit(sim, tmp_path, trickler) -> None:
    url = f"http://user:pw@127.0.0.1:{trickler['port']}/hook?token=s3cret"
    env = base_env(tmp_path) | {
        "CHATBATCH_API_BASE": sim.base_url,
        "CHATBATCH_API_KEY": "sk-simulator",
        "CHATBATCH_POLL_FIRST_SECONDS": "0.05",
    }
    examples = str(REPO / "examples" / "prompts.jsonl")
    proc = chatbatch(
        "run", examples, "-o", "out.jsonl", "--notify", url,
        env=env, cwd=tmp_path, check=False, timeout=NOTIFY_DEADLINE_SECONDS + 30,
    )  # fmt: skip
    exited = time.monotonic()
    assert proc.returncode == 0, proc.stderr  # the batch's code, not the hook's
    (arrived,) = trickler["arrived"]  # type: ignore[misc]
    assert exited - arrived < NOTIFY_DEADLINE_SECONDS + 5
    assert f"could not notify http://127.0.0.1:{trickler['port']}/hook" in proc.stderr
    assert f"no answer within {NOTIFY_DEADLINE_SECONDS} s" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "s3cret" not in proc.stderr + proc.stdout and "pw@" not in proc.stderr


def test_notify_refuses_a_port_out_of_range_before_loading(tmp_path) -> None:
    proc = chatbatch(
        "run",
        str(REPO / "examples" / "prompts.jsonl"),
        "-o",
        "o.jsonl",
        "--notify",
        "http://127.0.0.1:99999/x",
        env=base_env(tmp_path),
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "'--notify': the port must be a number from 1 to 65535, not 99999" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []  # nothing loaded: no database, no output

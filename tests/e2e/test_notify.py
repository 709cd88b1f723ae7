"""``run --notify URL``: a cron job's webhook gets one JSON summary when the batch finishes."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
import pytest
from cli_process import BINARY, REPO, base_env, chatbatch

pytestmark = pytest.mark.skipif(
    BINARY is None and not os.environ.get("CI"), reason="chatbatch is not installed"
)


class _Hook(BaseHTTPRequestHandler):
    received: list[tuple[str, bytes]]
    answer_status = 204

    def do_POST(self) -> None:
        length = int(self.headers["content-length"])
        self.server.received.append((self.path, self.rfile.read(length)))  # type: ignore[attr-defined]
        self.send_response(self.server.answer_status)  # type: ignore[attr-defined]
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hook() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    server.received = []  # type: ignore[attr-defined]
    server.answer_status = 204  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_run_posts_a_summary_with_the_exit_code(sim, tmp_path, hook) -> None:
    url = f"http://127.0.0.1:{hook.server_port}/hooks/nightly?token=s3cret"
    env = base_env() | {
        "CHATBATCH_API_BASE": sim.base_url,
        "CHATBATCH_API_KEY": "sk-simulator",
        "CHATBATCH_POLL_FIRST_SECONDS": "0.05",
    }
    examples = str(REPO / "examples" / "prompts.jsonl")
    proc = chatbatch("run", examples, "-o", "out.jsonl", "--notify", url, env=env, cwd=tmp_path)
    assert len(hook.received) == 1  # type: ignore[attr-defined]
    path, body = hook.received[0]  # type: ignore[attr-defined]
    assert path == "/hooks/nightly?token=s3cret"
    summary = orjson.loads(body)
    assert summary["event"] == "batch.finished" and summary["exit_code"] == 0
    assert summary["status"] == "completed" and summary["counts"]["succeeded"] == summary["total"]
    assert summary["output"] == "out.jsonl"
    assert "sk-simulator" not in body.decode()

    sim.reconfigure(fail_rate=1.0)
    hook.answer_status = 500  # type: ignore[attr-defined]
    failed = chatbatch(
        "run", examples, "-o", "out2.jsonl", "--notify", url, env=env, cwd=tmp_path, check=False
    )
    assert failed.returncode == 3, failed.stderr  # the batch's outcome, not the hook's
    sent = [orjson.loads(b) for _, b in hook.received[1:]]  # type: ignore[attr-defined]
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
        env=base_env(),
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 2 and "http:// or https:// URL" in proc.stderr

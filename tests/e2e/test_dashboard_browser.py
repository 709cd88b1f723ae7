"""The dashboard in a real browser: the installed ``chatbatch serve`` beside real workers,
driven by Playwright in Debian's Chromium. Progress advances without a reload, a request
opens with its prompt and answer, a hostile prompt stays text, the buttons cancel and retry,
and a POST without the page's CSRF token is refused; on PostgreSQL with a worker and on the
embedded default. Screenshots of the main pages go to ``$CHATBATCH_SCREENSHOTS`` (else the
test's temporary directory).

Skipped when Chromium or Playwright is missing, except in CI, where that is a failure."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from cli_process import BINARY, base_env, chatbatch, start_worker, stop

CHROMIUM = shutil.which("chromium") or (
    "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
)
HOSTILE = "<script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\">"
HOSTILE_ID = "<b id=injected>r005</b>"  # a custom_id is input-file text too
pytestmark = pytest.mark.timeout(300)


def needed(what: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{what} is not installed (scripts/test installs it in CI)")
    pytest.skip(f"{what} is not installed")


@pytest.fixture
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        needed("playwright")
    if CHROMIUM is None:
        needed("chromium")
    if BINARY is None:
        needed("the chatbatch binary")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("CHATBATCH_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def serve() -> Iterator[Any]:
    """Start ``chatbatch serve`` with an environment; its base URL once it answers."""
    started: list[subprocess.Popen[bytes]] = []

    def start(env: dict[str, str], log: Path) -> str:
        port = free_port()
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [str(BINARY), "serve", "--port", str(port)],
                env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        started.append(proc)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/api/batches", timeout=2).status_code == 200:
                    return base
            except httpx.HTTPError:
                time.sleep(0.2)
        raise AssertionError(f"chatbatch serve did not answer:\n{log.read_text()}")

    yield start
    for proc in started:
        stop(proc)


def write_batch(path: Path, n: int, *, hostile_at: int | None = None) -> None:
    with path.open("w") as fh:
        for i in range(n):
            text = HOSTILE if i == hostile_at else f"review number {i}"
            custom_id = HOSTILE_ID if i == hostile_at else f"r{i:03d}"
            body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}
            fh.write(orjson.dumps({"custom_id": custom_id, "body": body}).decode() + "\n")


def wait_until(check: Any, timeout: float = 30) -> None:
    """Poll ``check`` from here: the page's CSP (script-src 'self') forbids Playwright's
    in-page ``wait_for_function``, which evaluates strings."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s: {check}")
        time.sleep(0.1)


def text_of(page: Any, selector: str) -> str:
    return str(page.inner_text(selector))


def finished_text(page: Any) -> int:
    """The finished count the batch page shows now (``12 / 200`` → 12)."""
    text = page.inner_text("#live-finished")
    return int(text.split("/")[0].replace(",", "").strip()) if "/" in text else -1


def test_a_running_batch_live_in_the_browser_on_postgres(
    distributed_env, sim, tmp_path, browser, serve, shots
) -> None:
    sim.reconfigure(latency="uniform:0.5,2.5", seed=3)
    source = tmp_path / "nightly.jsonl"
    write_batch(source, 240, hostile_at=5)
    chatbatch("load", str(source), "--name", "nightly", env=distributed_env)
    base = serve(distributed_env, tmp_path / "serve.log")
    worker = start_worker(distributed_env, tmp_path / "worker.log")
    dialogs: list[str] = []
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("dialog", lambda d: (dialogs.append(d.message), d.accept()))
        page.goto(f"{base}/")
        page.wait_for_selector("tr[data-batch] a")
        page.evaluate("window.__sameDocument = 42")
        page.goto(f"{base}/batches/nightly")
        page.evaluate("window.__sameDocument = 42")
        wait_until(lambda: finished_text(page) >= 0)
        first = finished_text(page)
        wait_until(lambda: finished_text(page) > first, timeout=60)
        assert page.evaluate("window.__sameDocument") == 42  # updated in place, no reload
        assert page.inner_text("#live-status") == "running"
        page.screenshot(path=str(shots / "batch-running.png"), full_page=True)
        first_row = "#request-rows tr:first-child .badge"
        wait_until(lambda: text_of(page, first_row) == "succeeded", timeout=60)  # table too
        assert page.evaluate("window.__sameDocument") == 42
        page.goto(f"{base}/")
        page.wait_for_selector("tr[data-batch] .progress-cell")
        page.screenshot(path=str(shots / "batches.png"), full_page=True)

        page.goto(f"{base}/batches/nightly")
        wait_until(lambda: text_of(page, "#live-status") == "completed", timeout=120)
        page.click("#request-rows tr:first-child a")
        page.wait_for_selector("#answer-content")
        assert page.inner_text("#custom-id").startswith("r000")
        assert "review number 0" in page.inner_text("#sent")
        assert page.inner_text("#answer-content").strip()
        page.screenshot(path=str(shots / "request.png"), full_page=True)

        page.goto(f"{base}/batches/nightly")
        page.fill("#request-filter input[name=q]", "<b id=")
        page.wait_for_selector("#request-rows tr:only-child")
        assert text_of(page, "#request-rows a") == HOSTILE_ID  # the script set it as text
        assert page.query_selector("#injected") is None
        page.click("#request-rows tr a")
        page.wait_for_selector("#sent pre")
        assert HOSTILE in page.inner_text("#sent")  # shown as text, whole
        assert text_of(page, "#custom-id").startswith(HOSTILE_ID)
        assert page.query_selector("#injected") is None
        assert page.title() != "pwned" and not dialogs
        assert page.evaluate("document.querySelectorAll('#sent script, #sent img').length") == 0

        refused = page.evaluate(
            "fetch('/batches/nightly/cancel', {method: 'POST'}).then(r => r.status)"
        )
        assert refused == 403  # the session cookie alone is not enough: no CSRF token

        sim.reconfigure(latency="30")  # a second batch that stays in flight: cancel it
        chatbatch("load", str(source), "--name", "slow", env=distributed_env)
        page.goto(f"{base}/batches/slow")
        wait_until(lambda: finished_text(page) >= 0)
        page.click("#cancel-button")
        wait_until(lambda: text_of(page, "#action-result"))
        assert dialogs and dialogs[-1].startswith("Cancel this batch?")
        assert "slow:" in page.inner_text("#action-result")
        wait_until(lambda: text_of(page, "#live-status") in ("cancelling", "cancelled"))
        cancelled = "#report-sections [data-metric='count.cancelled']"
        wait_until(lambda: int(page.get_attribute(cancelled, "data-value")) > 0)  # swapped in
        page.screenshot(path=str(shots / "batch-cancelled.png"), full_page=True)
    finally:
        stop(worker)
    status = orjson.loads(chatbatch("status", "slow", "--json", env=distributed_env).stdout)
    assert status["status"] in ("cancelling", "cancelled")
    assert status["counts"]["cancelled"] > 0


def test_retry_from_the_page_on_the_embedded_default(sim, tmp_path, browser, serve, shots) -> None:
    env = base_env(tmp_path / "data") | {
        "CHATBATCH_API_BASE": sim.base_url,
        "GEEKAI_API_KEY": "sk-simulator",
        "CHATBATCH_POLL_FIRST_SECONDS": "0.1",
        "CHATBATCH_RETRY_BASE_SECONDS": "0.05",
        "CHATBATCH_MAX_ATTEMPTS": "1",
    }
    refused = chatbatch("serve", "--host", "0.0.0.0", env=env, check=False)
    assert refused.returncode == 2 and "without a token" in refused.stderr
    weak = env | {"CHATBATCH_DASHBOARD_TOKEN": "hunter2"}
    refused = chatbatch("serve", "--host", "0.0.0.0", env=weak, check=False)
    assert refused.returncode == 2 and "too short" in refused.stderr
    sim.reconfigure(fail_rate=0.3, seed=11)
    source = tmp_path / "small.jsonl"
    write_batch(source, 40)
    run = chatbatch("run", str(source), "-o", str(tmp_path / "out.jsonl"), "--name", "small",
                    env=env, check=False)  # fmt: skip
    assert run.returncode == 3, run.stderr  # some failed
    failed = orjson.loads(chatbatch("status", "small", "--json", env=env).stdout)["counts"][
        "failed"
    ]
    assert failed > 0
    base = serve(env, tmp_path / "serve.log")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.on("dialog", lambda d: d.accept())
    page.goto(f"{base}/batches/small")
    page.select_option("#request-filter select[name=status]", "failed")
    wait_until(lambda: len(page.query_selector_all("#request-rows tr")) == failed)
    page.click("#retry-button")
    wait_until(lambda: text_of(page, "#action-result"))
    result = page.inner_text("#action-result")
    assert f"requeued {failed} request(s)" in result and "chatbatch process small" in result
    sim.reconfigure(fail_rate=0.0)
    chatbatch("process", "small", env=env)
    wait_until(lambda: text_of(page, "#live-status") == "completed")
    assert "failed" not in page.inner_text("#live-counts")
    page.screenshot(path=str(shots / "batch-retried.png"), full_page=True)

"""The HTML report in a real browser: the installed ``chatbatch report`` writes it from a SQLite
batch, headless Chromium renders it (screenshot and DOM), and the DOM holds the counts.

Skipped when Chromium is missing, except in CI (``CI`` set), where that is a failure:
``scripts/test`` installs Debian's ``chromium``.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import struct
import subprocess
import zlib
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from cli_process import BINARY, base_env, chatbatch
from sqlalchemy import insert

from chatbatch.rules.pricing import ModelPrice, PriceTable
from chatbatch.store.db import make_engine
from chatbatch.store.migrate import upgrade
from chatbatch.store.models import batches_table, requests_table

CHROMIUM = shutil.which("chromium") or (
    "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
)
WINDOW = (1200, 2000)
T0 = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)
XSS_ID = "<img src=x onerror=\"document.title='pwned'\">"
PRICES = PriceTable(
    models={
        "gpt-4o-mini": ModelPrice(input=Decimal("0.15"), output=Decimal("0.6")),
        "deepseek-r1": ModelPrice(input=Decimal("0.55"), output=Decimal("2.19")),
    }
)


@pytest.fixture
def chromium() -> str:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (scripts/test installs it in CI)")
        pytest.skip("chromium is not installed")
    if BINARY is None:
        if os.environ.get("CI"):
            pytest.fail("the chatbatch binary is not installed")
        pytest.skip("chatbatch is not installed")
    return CHROMIUM


def nightly_rows(batch_id: str) -> list[dict[str, Any]]:
    """600 requests over about 20 minutes: log-normal latencies, a few failures of three kinds,
    some reused answers, a few still running."""
    rng = random.Random(7)
    rows: list[dict[str, Any]] = []
    for i in range(600):
        submitted = T0 + timedelta(seconds=i * 2)
        latency = rng.lognormvariate(2.3, 0.6)
        row: dict[str, Any] = {
            "batch_id": batch_id,
            "line_no": i + 1,
            "custom_id": f"review-{i:04d}",
            "model": "deepseek-r1" if i % 5 == 0 else "gpt-4o-mini",
            "body": "{}",
            "status": "succeeded",
            "due_at": T0,
            "submitted_at": submitted,
            "completed_at": submitted + timedelta(seconds=latency),
            "prompt_tokens": 120 + i % 40,
            "completion_tokens": 30 + i % 25,
            "total_tokens": 150 + i % 40 + i % 25,
            "schema_valid": i % 23 != 0,
            "error_code": None,
            "error_message": None,
            "reused_from": None,
        }
        if i % 41 == 7:
            row |= {"status": "failed", "error_code": "task_failed", "schema_valid": None}
            row["error_message"] = "the provider reported the task as failed: content filter"
        elif i % 97 == 13:
            row |= {"status": "expired", "error_code": "expired", "schema_valid": None}
            row["error_message"] = "result was not fetched before the retention window closed"
        elif i % 150 == 3:
            row |= {"status": "failed", "error_code": "bad_request", "schema_valid": None}
            row["error_message"] = "400: max_tokens is too large"
        elif i < 40 and i % 4 == 1:
            row |= {"status": "reused", "completed_at": T0, "reused_from": 1}
            row |= dict.fromkeys(("prompt_tokens", "completion_tokens", "total_tokens"))
        elif i >= 590:
            row |= {"status": "submitted", "completed_at": None, "schema_valid": None}
            row |= dict.fromkeys(("prompt_tokens", "completion_tokens", "total_tokens"))
        rows.append(row)
    rows[7]["custom_id"] = XSS_ID
    return rows


def write_batch(url: str) -> list[dict[str, Any]]:
    """The batch "reviews-nightly" in a fresh database at ``url``; its rows."""
    engine = make_engine(url, pool_size=1)
    try:
        upgrade(engine)
        rows = nightly_rows("batch_browser")
        with engine.begin() as conn:
            conn.execute(
                insert(batches_table).values(
                    id="batch_browser",
                    name="reviews-nightly",
                    status="running",
                    total=len(rows),
                    created_at=T0,
                    source="reviews.csv",
                    response_schema='{"type": "object"}',
                    prices=PRICES.model_dump_json(),
                )
            )
            conn.execute(insert(requests_table), rows)
    finally:
        engine.dispose()
    return rows


def browser(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            chromium,
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            f"--user-data-dir={profile}",
            f"--window-size={WINDOW[0]},{WINDOW[1]}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )


def png_pixels(path: Path) -> tuple[int, int, bytes]:
    """Width, height and the decompressed (still filtered) pixel rows of a PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    offset, idat, size = 8, b"", (0, 0)
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        offset += 12 + length
    return size[0], size[1], zlib.decompress(idat)


def test_report_renders_in_chromium(chromium: str, tmp_path: Path) -> None:
    rows = write_batch(f"sqlite:///{tmp_path / 'chatbatch.db'}")
    counts = Counter(row["status"] for row in rows)
    codes = Counter(row["error_code"] for row in rows if row["status"] in ("failed", "expired"))
    env = base_env() | {"CHATBATCH_DATABASE_URL": f"sqlite:///{tmp_path / 'chatbatch.db'}"}
    report = tmp_path / "report.html"
    chatbatch("report", "reviews-nightly", "-o", str(report), env=env, cwd=tmp_path)

    shot = tmp_path / "report.png"
    browser(chromium, tmp_path / "profile", f"--screenshot={shot}", report.as_uri())
    width, height, pixels = png_pixels(shot)
    assert (width, height) == WINDOW
    assert shot.stat().st_size > 30_000  # text, charts and colours, not a blank page
    assert len(set(pixels)) > 100

    dom = browser(chromium, tmp_path / "profile", "--dump-dom", report.as_uri()).stdout
    values = dict(re.findall(r'data-metric="([^"]+)" data-value="([^"]*)"', dom))
    for state in ("succeeded", "failed", "expired", "reused", "submitted"):
        assert values[f"count.{state}"] == str(counts[state]), state
    assert values["total"] == "600"
    for code, n in codes.items():
        assert values[f"error.{code}"] == str(n), code
    assert f">{counts['succeeded']:,}<" in dom  # shown, not only in attributes
    assert dom.count("<rect") > 40  # both charts drawn
    assert "p99" in dom
    # the hostile custom_id stayed text: no element was made of it, no handler ran
    assert "<title>reviews-nightly · chatbatch report</title>" in dom
    assert "&lt;img src=x onerror=" in dom
    assert '<img src="x"' not in dom and "<img src=x" not in dom

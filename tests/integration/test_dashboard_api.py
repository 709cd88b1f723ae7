"""The dashboard over real HTTP (uvicorn on a loopback socket) against PostgreSQL: the read
API's objects are the commands' objects, pages of requests cover a batch once in line order,
the buttons act only with the page's CSRF token, and the token, Host and read-only guards hold.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from engine_helpers import load, run_to_end, write_requests
from sqlalchemy import Engine

from chatbatch.reporting.export import export_batch
from chatbatch.reporting.request_detail import request_detail
from chatbatch.reporting.summary import status_object
from chatbatch.settings import get_settings
from chatbatch.store import reads
from web.app import Dashboard, create_app
from web.security import CSRF_HEADER
from web.server import serving

TOKEN = "dash-token-0123456789"


@pytest.fixture
def dashboard(pg: Engine) -> Dashboard:
    return Dashboard(pg, get_settings())


@pytest.fixture
def base(dashboard: Dashboard) -> Iterator[str]:
    with serving(create_app(dashboard)) as url:
        yield url


@pytest.fixture
def finished_batch(pg: Engine, engine: Any, sim: Any, tmp_path: Path) -> str:
    """120 requests, a fifth of them failed by the provider, worked to the end."""
    sim.reconfigure(fail_rate=0.2, seed=7)
    path = tmp_path / "in.jsonl"
    write_requests(path, 120)
    batch_id = load(pg, path)
    run_to_end(engine, pg, batch_id)
    return batch_id


def csrf_of(client: httpx.Client, base: str, batch: str) -> str:
    """The CSRF token a batch page hands its browser (the client keeps the session cookie)."""
    page = client.get(f"{base}/batches/{batch}")
    assert page.status_code == 200
    found = re.search(r'data-csrf="([0-9a-f]+)"', page.text)
    assert found
    return found.group(1)


def test_the_api_serves_the_commands_objects(base: str, pg: Engine, finished_batch: str) -> None:
    listed = httpx.get(f"{base}/api/batches").json()
    one = httpx.get(f"{base}/api/batches/{finished_batch}").json()
    with pg.connect() as conn:
        row = reads.resolve_batch(conn, finished_batch)
        expected = orjson.loads(orjson.dumps(status_object(conn, row, config=get_settings(),
                                                           prices=None)))  # fmt: skip
    assert [s["id"] for s in listed] == [finished_batch]
    for got in (listed[0], one):
        progress = got.pop("progress")
        assert progress["finished"] == 120 and progress["remaining"] == 0
        assert progress["eta_seconds"] is None  # a finished batch has nothing left to time
        assert {k: v for k, v in got.items() if k in expected} == expected
    assert one["counts"]["failed"] == sum(g["count"] for g in one["errors"]) > 0
    assert all(len(g["examples"]) <= 3 for g in one["errors"])
    assert one["workers"] == []  # nobody holds its requests now
    assert httpx.get(f"{base}/api/batches", params={"status": "paused"}).json() == []
    assert httpx.get(f"{base}/api/batches", params={"name": "nothing-like"}).json() == []
    assert httpx.get(f"{base}/api/batches", params={"status": "bogus"}).status_code == 400
    assert httpx.get(f"{base}/api/batches/no-such").status_code == 404


def test_pages_of_requests_cover_the_batch_once_in_line_order(
    base: str, finished_batch: str
) -> None:
    url = f"{base}/api/batches/{finished_batch}/requests"
    seen, after = [], 0
    while after is not None:
        page = httpx.get(url, params={"after": after, "limit": 50}).json()
        seen += page["requests"]
        after = page["next_after"]
    assert [r["custom_id"] for r in seen] == [f"c{i}" for i in range(120)]
    assert [r["line"] for r in seen] == list(range(1, 121))
    failed = httpx.get(url, params={"status": "failed", "limit": 200}).json()["requests"]
    assert failed and {r["status"] for r in failed} == {"failed"}
    assert [r["line"] for r in failed] == sorted(r["line"] for r in failed)
    assert len(failed) == sum(r["status"] == "failed" for r in seen)
    prefix = httpx.get(url, params={"q": "c11", "limit": 200}).json()["requests"]
    assert [r["custom_id"] for r in prefix] == ["c11", *(f"c11{i}" for i in range(10))]
    assert httpx.get(url, params={"q": "c_"}).json()["requests"] == []  # _ is no wildcard
    for bad in ({"limit": 0}, {"limit": 201}, {"after": -1}, {"after": "x"}, {"status": "odd"}):
        assert httpx.get(url, params=bad).status_code == 400, bad


def test_one_request_in_full(base: str, pg: Engine, finished_batch: str) -> None:
    first = httpx.get(f"{base}/api/batches/{finished_batch}/requests?limit=1").json()
    request_id = first["requests"][0]["id"]
    got = httpx.get(f"{base}/api/requests/{request_id}").json()
    with pg.connect() as conn:
        row = reads.resolve_batch(conn, finished_batch)
        expected = orjson.loads(orjson.dumps(request_detail(conn, row, "c0", prices=None)))
    assert got == {**expected, "id": request_id}
    assert got["request"]["messages"][0]["content"] == "request number 0"
    assert httpx.get(f"{base}/api/requests/999999999").status_code == 404
    page = httpx.get(f"{base}/requests/{request_id}")
    assert page.status_code == 200 and "request number 0" in page.text


def test_buttons_need_the_pages_csrf_token(base: str, pg: Engine, tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    write_requests(path, 10)
    batch_id = load(pg, path)  # loaded, nobody works it
    with httpx.Client() as browser:
        token = csrf_of(browser, base, batch_id)
        bare = browser.post(f"{base}/batches/{batch_id}/cancel")
        forged = browser.post(f"{base}/batches/{batch_id}/cancel", data={"csrf": "0" * 64})
        assert bare.status_code == forged.status_code == 403
        with httpx.Client() as stranger:  # the right token from another session is no good
            assert (
                stranger.post(
                    f"{base}/batches/{batch_id}/cancel", headers={CSRF_HEADER: token}
                ).status_code
                == 403
            )
        done = browser.post(f"{base}/batches/{batch_id}/cancel", headers={CSRF_HEADER: token})
        assert done.status_code == 200, done.text
        assert done.json()["status"] == "cancelled" and done.json()["changed"] == 10
        retried = browser.post(
            f"{base}/batches/{batch_id}/retry", data={"csrf": token, "status": "cancelled"}
        )
        assert retried.json()["changed"] == 10 and retried.json()["status"] == "running"
        bad = browser.post(
            f"{base}/batches/{batch_id}/retry", data={"csrf": token, "status": "everything"}
        )
        assert bad.status_code == 400 and "choose from" in bad.json()["error"]
        resumed = browser.post(f"{base}/batches/{batch_id}/resume",
                               data={"csrf": token, "max_cost": "-1"})  # fmt: skip
        assert resumed.status_code == 400
    with pg.connect() as conn:
        assert reads.status_counts(conn, batch_id)["queued"] == 10


def test_read_only_hides_the_buttons_and_refuses_posts(
    dashboard: Dashboard, finished_batch: str
) -> None:
    with serving(create_app(replace(dashboard, read_only=True))) as url, httpx.Client() as browser:
        token = csrf_of(browser, url, finished_batch)
        page = browser.get(f"{url}/batches/{finished_batch}").text
        assert 'id="actions"' not in page and 'id="read-only"' in page
        refused = browser.post(
            f"{url}/batches/{finished_batch}/retry", data={"csrf": token, "status": "failed"}
        )
        assert refused.status_code == 403 and "read-only" in refused.json()["error"]


def test_a_token_guards_everything_but_the_login(dashboard: Dashboard, finished_batch: str) -> None:
    with serving(create_app(replace(dashboard, token=TOKEN))) as url:
        assert httpx.get(f"{url}/api/batches").status_code == 401
        assert httpx.get(f"{url}/").status_code == 303  # to the login form
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        assert httpx.get(f"{url}/api/batches", headers=bearer).status_code == 200
        odd = {"Cookie": b"chatbatch_auth=" + "é".encode()}
        assert httpx.get(f"{url}/api/batches", headers=odd).status_code == 401
        with httpx.Client() as browser:
            assert browser.post(f"{url}/login", data={"token": "wrong"}).status_code == 401
            logged = browser.post(f"{url}/login", data={"token": TOKEN})
            assert logged.status_code == 303
            cookie = logged.headers["set-cookie"].lower()
            assert "httponly" in cookie and "samesite=strict" in cookie
            assert TOKEN.lower() not in cookie  # the cookie is not the token
            assert browser.get(f"{url}/batches/{finished_batch}").status_code == 200


def test_without_a_token_only_loopback_host_names_are_answered(
    base: str, finished_batch: str
) -> None:
    assert httpx.get(f"{base}/api/batches", headers={"Host": "localhost:8800"}).status_code == 200
    rebound = httpx.get(f"{base}/api/batches", headers={"Host": "evil.example"})
    assert rebound.status_code == 421
    headers = httpx.get(f"{base}/").headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"


def test_downloads_are_the_exports_and_the_report(
    base: str, pg: Engine, finished_batch: str
) -> None:
    for fmt in ("jsonl", "csv"):
        expected = BytesIO()
        with pg.connect() as conn:
            export_batch(conn, finished_batch, expected, fmt)
        got = httpx.get(f"{base}/batches/{finished_batch}/export.{fmt}")
        assert got.status_code == 200
        assert "attachment" in got.headers["content-disposition"]
        assert got.content == expected.getvalue()
    assert httpx.get(f"{base}/batches/{finished_batch}/export.xml").status_code == 404
    report = httpx.get(f"{base}/batches/{finished_batch}/report.html")
    assert report.status_code == 200 and 'id="errors"' in report.text


def test_no_page_or_answer_shows_the_api_key(base: str, finished_batch: str) -> None:
    first = httpx.get(f"{base}/api/batches/{finished_batch}/requests?limit=1").json()
    paths = [
        "/", "/api/batches", "/api/workers", f"/batches/{finished_batch}",
        f"/api/batches/{finished_batch}", f"/api/batches/{finished_batch}/requests",
        f"/batches/{finished_batch}/sections", f"/requests/{first['requests'][0]['id']}",
        f"/api/requests/{first['requests'][0]['id']}", f"/batches/{finished_batch}/report.html",
        f"/batches/{finished_batch}/export.jsonl", f"/batches/{finished_batch}/export.csv",
    ]  # fmt: skip
    key = get_settings().api_key_value()
    assert key
    for path in paths:
        answer = httpx.get(f"{base}{path}")
        assert answer.status_code == 200, path
        assert key not in answer.text, path


def test_odd_input_is_refused_not_a_crash(base: str, finished_batch: str) -> None:
    url = f"{base}/api/batches/{finished_batch}/requests"
    assert httpx.get(url, params={"after": 10**20}).status_code == 400
    assert httpx.get(url, params={"q": "c1\x00"}).status_code == 400
    assert httpx.get(f"{base}/api/requests/{10**20}").status_code == 404
    assert httpx.get(f"{base}/api/batches/a%00b").status_code == 404
    with httpx.Client() as browser:
        token = csrf_of(browser, base, finished_batch)
        missing = browser.post(f"{base}/batches/no-such/cancel", headers={CSRF_HEADER: token})
        assert missing.status_code == 404
        odd = "é".encode()  # what a browser could send: UTF-8 bytes in a header
        refused = browser.post(
            f"{base}/batches/{finished_batch}/cancel", headers={CSRF_HEADER: odd}
        )
        assert refused.status_code == 403
    empty = httpx.get(f"{base}/", headers={"Cookie": "chatbatch_session="})
    assert empty.cookies.get("chatbatch_session")  # a usable session is handed out again


def test_another_site_may_link_but_not_load(base: str, finished_batch: str) -> None:
    export = f"{base}/batches/{finished_batch}/export.csv"
    as_image = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"}
    assert httpx.get(export, headers=as_image).status_code == 403
    link = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}
    assert httpx.get(f"{base}/batches/{finished_batch}", headers=link).status_code == 200
    head = httpx.head(export)
    assert head.status_code == 200 and head.content == b""  # described, not run

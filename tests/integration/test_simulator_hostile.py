"""The simulator's hostile provider mode over real HTTP: every KIND answers as described."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import orjson
import pytest
from click.testing import CliRunner

from simulator.answers import expected_content, expected_usage, request_fingerprint
from simulator.cli import simulate
from simulator.config import SimConfig
from simulator.embedded import SimulatorHandle, running_simulator
from simulator.hostile import FIRST_POST_ONLY, KINDS, POLL_KINDS, POST_KINDS, Reply

KEY = "sk-simulator"
AUTH = {"Authorization": f"Bearer {KEY}"}
HUGE = 2 * 1024 * 1024
HOSTILE = {"hostile": True, "hostile_body_bytes": HUGE, "latency": "0"}
WEEK = 7 * 24 * 3600


@pytest.fixture(scope="module")
def server() -> Iterator[SimulatorHandle]:
    with running_simulator(SimConfig(seed=7, **HOSTILE)) as handle:  # type: ignore[arg-type]
        yield handle


@pytest.fixture
def sim(server: SimulatorHandle) -> SimulatorHandle:
    """The module's simulator in hostile mode, otherwise default, with empty counters."""
    server.reset()
    defaults = {k: getattr(SimConfig(), k) for k in SimConfig.field_names()}
    server.reconfigure(**{**defaults, "seed": 7, **HOSTILE})
    return server


@pytest.fixture
def client(sim: SimulatorHandle) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.base_url + "/", headers=AUTH, timeout=10) as c:
        yield c


def body_for(text: str) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}


def marked(kind: str, text: str = "hello") -> dict[str, Any]:
    """A request poisoned with ``kind``; the system message before it does not count."""
    body = body_for(f"{text} [[hostile:{kind}]]")
    body["messages"].insert(0, {"role": "system", "content": "[[hostile:no_such_kind]]"})
    return body


def submit(client: httpx.Client, body: dict[str, Any]) -> httpx.Response:
    return client.post("chat/completions", json={**body, "background": True})


def real_task_id(sim: SimulatorHandle) -> str:
    """The one task the simulator holds (the POST's answer may not tell it)."""
    (task_id,) = sim._simulator.state.tasks._tasks  # white box: the test double's own memory
    return task_id


def ready_poll(client: httpx.Client, task_id: str) -> httpx.Response:
    """The first poll that is not a pending/running JSON answer."""
    for _ in range(200):
        response = client.get(f"chat/{task_id}")
        try:
            status = orjson.loads(response.content).get("status")
        except (orjson.JSONDecodeError, AttributeError):
            return response
        if status not in ("pending", "running"):
            return response
        time.sleep(0.02)
    raise AssertionError("task never finished")


def assert_accepted_once(sim: SimulatorHandle, kind: str, body: dict[str, Any]) -> None:
    stats = sim.stats()
    fingerprint = request_fingerprint(body)
    assert stats["accepted"] == 1 and stats["tasks"] == 1
    assert stats["accepted_by_fingerprint"] == {fingerprint: 1}
    assert stats["poisoned_by_fingerprint"] == {fingerprint: kind}


def assert_refused(sim: SimulatorHandle, status: int) -> None:
    stats = sim.stats()
    assert stats["accepted"] == 0 and stats["tasks"] == 0
    assert stats["rejected"][str(status)] == 1


# --- POST kinds that accept ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("expires_ms", lambda now: (now + WEEK) * 1000),
        ("expires_past", lambda now: now - 3600),
        ("expires_far", lambda now: datetime(9000, 1, 1, tzinfo=UTC).timestamp()),
    ],
)
def test_expires_kinds_accept_with_odd_expiry(sim, client, kind, expected) -> None:
    body = marked(kind)
    response = submit(client, body)
    answer = response.json()
    assert response.status_code == 200 and answer["status"] == "pending"
    assert isinstance(answer["expires_at"], int)
    assert abs(answer["expires_at"] - expected(time.time())) < 60_000
    assert_accepted_once(sim, kind, body)
    assert ready_poll(client, answer["id"]).json()["status"] == "succeed"  # the id is real


def test_id_nul_and_id_huge_accept_and_bill_under_the_real_id(sim, client) -> None:
    nul = submit(client, marked("id_nul")).json()
    task_id = real_task_id(sim)
    assert "\x00" in nul["id"] and nul["id"].replace("\x00", "") == task_id
    assert_accepted_once(sim, "id_nul", marked("id_nul"))
    sim.reset()
    huge = submit(client, marked("id_huge")).json()
    assert len(huge["id"]) == 5000 and huge["id"].startswith(real_task_id(sim))
    assert_accepted_once(sim, "id_huge", marked("id_huge"))
    assert client.get(f"chat/{huge['id']}").status_code == 404  # the padded id names no task


@pytest.mark.parametrize(
    ("kind", "status"),
    [("status_nul", "pending\x00"), ("status_escape", "\x1b[31mpending\x1b[0m")],
)
def test_status_kinds(sim, client, kind, status) -> None:
    response = submit(client, marked(kind))
    assert response.status_code == 200 and response.json()["status"] == status
    assert response.json()["id"] == real_task_id(sim)
    assert_accepted_once(sim, kind, marked(kind))


def test_echo_key_header_accepts_and_echoes_the_key(sim, client) -> None:
    response = submit(client, marked("echo_key_header"))
    assert response.status_code == 200 and response.headers["X-Echo"] == f"Bearer {KEY}"
    assert response.json()["debug"] == f"Bearer {KEY}"
    assert response.json()["id"] == real_task_id(sim)
    assert_accepted_once(sim, "echo_key_header", marked("echo_key_header"))


def test_post_not_json_creates_the_task(sim, client) -> None:
    response = submit(client, marked("post_not_json"))
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert response.content.startswith(b"<html>")
    assert_accepted_once(sim, "post_not_json", marked("post_not_json"))


def test_post_huge_streams_a_huge_acceptance_with_the_real_id(sim, client) -> None:
    response = submit(client, marked("post_huge"))
    assert response.status_code == 200 and len(response.content) == HUGE
    assert "content-length" not in response.headers  # chunked: no size announced up front
    answer = orjson.loads(response.content)
    assert answer["id"] == real_task_id(sim) and answer["status"] == "pending"
    assert set(answer["padding"]) == {"x"}
    assert_accepted_once(sim, "post_huge", marked("post_huge"))


# --- POST kinds that refuse ---------------------------------------------------------------------


def test_echo_key_400_echoes_the_authorization_header(sim, client) -> None:
    response = submit(client, marked("echo_key_400"))
    error = response.json()["error"]
    assert response.status_code == 400
    assert f"Bearer {KEY}" in error["message"] and error["code"] == KEY
    assert_refused(sim, 400)
    assert sim.stats()["poisoned_by_fingerprint"] == {
        request_fingerprint(marked("echo_key_400")): "echo_key_400"
    }


def test_echo_key_json_hides_the_key_in_unicode_escapes(sim, client) -> None:
    response = submit(client, marked("echo_key_json"))
    assert response.status_code == 400
    assert KEY.encode() not in response.content
    assert "".join(f"\\u{ord(c):04x}" for c in KEY).encode() in response.content
    assert KEY in response.json()["error"]["message"]
    assert_refused(sim, 400)


def test_echo_key_url_percent_encodes_every_character(sim, client) -> None:
    response = submit(client, marked("echo_key_url"))
    assert response.status_code == 400
    assert response.headers["Content-Type"].startswith("text/plain")
    assert response.content == ("auth=" + "".join(f"%{ord(c):02X}" for c in KEY)).encode()
    assert unquote(response.text) == f"auth={KEY}"
    assert_refused(sim, 400)


def test_escape_message_carries_terminal_escapes(sim, client) -> None:
    response = submit(client, marked("escape_message"))
    assert response.status_code == 400
    assert "\x1b]0;pwned\x07\x1b[2J" in response.json()["error"]["message"]
    assert_refused(sim, 400)


@pytest.mark.parametrize(
    ("kind", "check"),
    [
        ("retry_after_inf", lambda value: value == "inf"),
        ("retry_after_huge", lambda value: value == "1000000000"),
        ("retry_after_date", lambda value: parsedate_to_datetime(value).year == 2999),
    ],
)
def test_retry_after_kinds_poison_only_the_first_post(sim, client, kind, check) -> None:
    body = marked(kind)
    first = submit(client, body)
    assert first.status_code == 429 and check(first.headers["Retry-After"])
    assert_refused(sim, 429)
    assert [submit(client, body).status_code for _ in range(2)] == [200, 200]
    stats = sim.stats()
    assert stats["accepted"] == 2 and stats["rejected"]["429"] == 1
    assert stats["poisoned_by_fingerprint"] == {request_fingerprint(body): kind}
    sim.reset()  # a reset forgets which requests already met their 429
    assert submit(client, body).status_code == 429


# --- poll kinds ---------------------------------------------------------------------------------


def poisoned_poll(sim: SimulatorHandle, client: httpx.Client, kind: str) -> httpx.Response:
    """Submit a request poisoned with a poll KIND; its finished answer, checked to repeat."""
    accepted = submit(client, marked(kind))
    assert accepted.status_code == 200 and accepted.json()["status"] == "pending"
    task_id = accepted.json()["id"]
    first = ready_poll(client, task_id)
    again = client.get(f"chat/{task_id}")
    assert (again.status_code, again.content) == (first.status_code, first.content)
    assert_accepted_once(sim, kind, marked(kind))
    return first


def test_poll_kinds_answer_normally_until_the_task_is_ready(sim, client) -> None:
    sim.reconfigure(latency="0.4")
    task_id = submit(client, marked("poll_not_json")).json()["id"]
    assert client.get(f"chat/{task_id}").json()["status"] == "pending"
    time.sleep(0.45)
    assert client.get(f"chat/{task_id}").content == b"<html>oops</html>"


def test_usage_huge(sim, client) -> None:
    response = poisoned_poll(sim, client, "usage_huge")
    assert b'"completion_tokens":1180591620717411303424' in response.content
    usage = json.loads(response.content)["usage"]
    assert usage["prompt_tokens"] == 1e300 and usage["completion_tokens"] == 2**70
    assert usage["total_tokens"] == 12
    stats = sim.stats()
    assert stats["usage_served_tasks"] == 1 and stats["usage_served_totals"] == {}
    assert sim.usage_served() == {response.json()["id"]: usage}


def test_usage_negative(sim, client) -> None:
    usage = poisoned_poll(sim, client, "usage_negative").json()["usage"]
    assert usage["prompt_tokens"] == -50 and usage["completion_tokens"] == -7
    assert sim.stats()["usage_served_totals"] == {}


def test_content_controls(sim, client) -> None:
    answer = poisoned_poll(sim, client, "content_controls").json()
    content = answer["choices"][0]["message"]["content"]
    assert "\x00" in content and "\x1b[31m" in content and "\r" in content
    assert answer["choices"][0]["finish_reason"] == "stop\x00"
    assert answer["model"] == "gpt\x00x"
    assert answer["usage"] == expected_usage(marked("content_controls"))  # honest: counted
    assert sim.stats()["usage_served_totals"]["prompt_tokens"] == answer["usage"]["prompt_tokens"]


def test_failed_echo_key(sim, client) -> None:
    answer = poisoned_poll(sim, client, "failed_echo_key").json()
    assert answer["status"] == "failed"
    assert f"Bearer {KEY}" in answer["error"]["message"]
    assert answer["error"]["code"] == f"Bearer {KEY}"
    stats = sim.stats()
    assert stats["statuses_served"]["failed"] == 2 and stats["usage_served_tasks"] == 0


def test_poll_huge_streams_a_huge_finished_answer(sim, client) -> None:
    response = poisoned_poll(sim, client, "poll_huge")
    assert response.status_code == 200 and len(response.content) == HUGE
    answer = orjson.loads(response.content)
    assert answer["status"] == "succeed"
    assert answer["choices"][0]["message"]["content"] == expected_content(marked("poll_huge"))
    stats = sim.stats()
    assert stats["usage_served_tasks"] == 1 and stats["usage_served_totals"] == {}


def test_poll_not_json_and_poll_deep(sim, client) -> None:
    response = poisoned_poll(sim, client, "poll_not_json")
    assert response.status_code == 200 and response.content == b"<html>oops</html>"
    sim.reset()
    deep = poisoned_poll(sim, client, "poll_deep")
    assert deep.status_code == 200 and len(deep.content) == 200_000
    assert deep.content == b"[" * 100_000 + b"]" * 100_000
    assert sim.stats()["usage_served_tasks"] == 0


def test_poll_status_nul(sim, client) -> None:
    answer = poisoned_poll(sim, client, "poll_status_nul").json()
    assert answer["status"] == "succeed\x00"
    assert answer["choices"][0]["message"]["content"] == expected_content(marked("poll_status_nul"))
    assert sim.stats()["statuses_served"]["succeed\x00"] == 2


def test_poll_wrong_types(sim, client) -> None:
    answer = poisoned_poll(sim, client, "poll_wrong_types").json()
    assert answer == {
        "id": 5,
        "status": "succeed",
        "choices": "x",
        "usage": "lots",
        "model": {"a": 1},
    }
    assert sim.usage_served() == {real_task_id(sim): "lots"}


# --- choosing, counting, scripting --------------------------------------------------------------


def test_every_kind_is_tested_here() -> None:
    assert set(KINDS) == set(POST_KINDS) | set(POLL_KINDS) and len(KINDS) == 26
    assert set(POST_KINDS) >= FIRST_POST_ONLY
    source = Path(__file__).read_text()
    assert [kind for kind in KINDS if f'"{kind}"' not in source] == []


def test_a_client_hanging_up_on_a_huge_body_leaves_the_server_well(sim, client) -> None:
    sim.reconfigure(hostile_body_bytes=64 * 1024 * 1024)
    task_id = submit(client, marked("poll_huge", "hang up")).json()["id"]
    with client.stream("GET", f"chat/{task_id}") as response:
        assert next(response.iter_bytes()).startswith(b'{"id":')
    assert ready_poll(client, submit(client, body_for("after")).json()["id"]).status_code == 200


def test_unknown_kind_is_refused_naming_the_known_ones(sim, client) -> None:
    response = submit(client, body_for("[[hostile:nonsense]]"))
    message = response.json()["error"]["message"]
    assert response.status_code == 400 and "nonsense" in message
    assert all(kind in message for kind in KINDS)
    unscripted = submit(client, body_for("[[script:never-registered]]"))
    assert unscripted.status_code == 400 and "never-registered" in unscripted.text
    assert sim.stats()["rejected"]["400"] == 2 and sim.stats()["accepted"] == 0


def test_markers_are_plain_text_when_hostile_is_off(sim, client) -> None:
    sim.reconfigure(hostile=False)
    for kind in ("echo_key_400", "nonsense"):
        response = submit(client, marked(kind))
        assert response.status_code == 200 and response.json()["status"] == "pending"
    assert sim.stats()["poisoned_by_fingerprint"] == {}


def test_synchronous_requests_are_never_poisoned(sim, client) -> None:
    response = client.post("chat/completions", json=marked("echo_key_400"))
    assert response.status_code == 200 and "choices" in response.json()
    assert sim.stats()["usage_served_tasks"] == 1


def rate_chosen(sim: SimulatorHandle, client: httpx.Client) -> dict[str, str]:
    sim.reset()
    sim.reconfigure(hostile=False, hostile_rate=0.5, seed=11)  # a reseed, the same seed
    for i in range(40):
        submit(client, body_for(f"question {i} [[hostile:echo_key_400]]"))
    poisoned: dict[str, str] = sim.stats()["poisoned_by_fingerprint"]
    return poisoned


def test_the_rate_chosen_subset_is_stable_across_a_reseed(sim, client) -> None:
    first = rate_chosen(sim, client)
    assert 8 <= len(first) <= 32 and set(first.values()) <= set(KINDS)
    assert len(set(first.values())) > 3  # kinds picked by the hash, not fixed
    assert rate_chosen(sim, client) == first
    sim.reset()
    sim.reconfigure(seed=12)
    for i in range(40):
        submit(client, body_for(f"question {i} [[hostile:echo_key_400]]"))
    assert sim.stats()["poisoned_by_fingerprint"] != first


def test_script_with_callable_replies(sim, client) -> None:
    def post(task_id: str, key: str) -> Reply:
        return Reply(202, {"X-Task": task_id}, orjson.dumps({"job": task_id, "echo": key}))

    def poll(task_id: str, key: str) -> Reply:
        return Reply(200, {"Content-Type": "text/plain"}, f"done {task_id}".encode())

    sim.script("callable", post=post, poll=poll)
    body = body_for("hi [[script:callable]]")
    response = submit(client, body)
    task_id = real_task_id(sim)
    assert response.status_code == 202 and response.headers["X-Task"] == task_id
    assert response.json() == {"job": task_id, "echo": KEY}
    assert_accepted_once(sim, "script:callable", body)
    assert ready_poll(client, task_id).content == f"done {task_id}".encode()
    assert sim.stats()["usage_served_tasks"] == 0  # scripted results are the script's to count


def test_script_refusing_post_creates_nothing_and_poll_only_scripts(sim, client) -> None:
    sim.script("refuse", post=Reply(451, {}, b"no"))
    refused = submit(client, body_for("[[script:refuse]]"))
    assert (refused.status_code, refused.content) == (451, b"no")
    assert_refused(sim, 451)
    sim.script("poll-only", poll=Reply(200, {"Content-Type": "application/json"}, b"{}"))
    accepted = submit(client, body_for("x [[script:poll-only]]"))
    assert accepted.status_code == 200 and accepted.json()["status"] == "pending"
    assert ready_poll(client, accepted.json()["id"]).content == b"{}"
    sim.unscript("refuse")
    assert submit(client, body_for("[[script:refuse]]")).status_code == 400
    with pytest.raises(ValueError):
        sim.script("bad]marker", poll=Reply(200))
    with pytest.raises(ValueError):
        sim.script("nothing")


def test_stats_count_usage_once_per_task_and_only_when_honest(sim, client) -> None:
    plain = [body_for(f"plain {i}") for i in range(3)]
    for body in plain:
        ready_poll(client, submit(client, body).json()["id"])
    for kind in ("usage_huge", "usage_negative", "poll_status_nul"):
        task_id = submit(client, marked(kind)).json()["id"]
        ready_poll(client, task_id)
        ready_poll(client, task_id)  # polled again: counted once
    stats = sim.stats()
    honest = [expected_usage(b) for b in [*plain, marked("poll_status_nul")]]
    assert stats["usage_served_tasks"] == 6
    totals = stats["usage_served_totals"]
    for field in ("prompt_tokens", "completion_tokens", "total_tokens"):
        assert totals[field] == sum(u[field] for u in honest)
    cached = sum(u["prompt_tokens_details"]["cached_tokens"] for u in honest)
    assert totals["prompt_tokens_details.cached_tokens"] == cached > 0  # the marked one's system
    assert set(stats["poisoned_by_fingerprint"].values()) == {
        "usage_huge",
        "usage_negative",
        "poll_status_nul",
    }
    assert all(isinstance(v, int) for v in totals.values())


def test_hostile_settings_are_live_and_validated(sim) -> None:
    with httpx.Client(base_url=sim.root_url) as control:
        changed = control.post("/_sim/config", json={"hostile_rate": 0.25, "hostile": False})
        assert changed.status_code == 200 and changed.json()["hostile_rate"] == 0.25
        assert control.post("/_sim/config", json={"hostile": "yes"}).status_code == 400
        assert control.post("/_sim/config", json={"hostile_rate": 2}).status_code == 400
        assert control.post("/_sim/config", json={"hostile_body_bytes": -1}).status_code == 400
    assert sim.config.hostile is False and sim.config.hostile_rate == 0.25


def test_cli_has_the_hostile_options() -> None:
    runner = CliRunner()
    help_text = runner.invoke(simulate, ["--help"]).output
    for option in ("--hostile", "--hostile-rate", "--hostile-body-bytes"):
        assert option in help_text
    assert runner.invoke(simulate, ["--hostile-rate", "1.5"]).exit_code == 2
    assert runner.invoke(simulate, ["--hostile-body-bytes", "-1"]).exit_code == 2

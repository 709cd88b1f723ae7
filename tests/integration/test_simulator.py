"""The simulator over real HTTP: it must behave like GeekAI, faults included."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import orjson
import pytest

from simulator.answers import expected_content, expected_usage, request_fingerprint
from simulator.config import SimConfig, parse_latency
from simulator.testing import SimulatorHandle, running_simulator

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}]}
AUTH = {"Authorization": "Bearer sk-sim"}


@pytest.fixture(scope="module")
def server() -> Iterator[SimulatorHandle]:
    with running_simulator(SimConfig(seed=7)) as handle:
        yield handle


@pytest.fixture
def sim(server: SimulatorHandle) -> SimulatorHandle:
    server.reset()
    server.reconfigure(**{k: getattr(SimConfig(), k) for k in SimConfig.field_names()})
    return server


@pytest.fixture
def client(sim: SimulatorHandle) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.base_url + "/", headers=AUTH, timeout=5) as c:
        yield c


def submit(client: httpx.Client, body: dict[str, object] | None = None) -> httpx.Response:
    return client.post("chat/completions", json={**(body or BODY), "background": True})


def wait_done(client: httpx.Client, task_id: str) -> dict[str, object]:
    for _ in range(100):
        answer = client.get(f"chat/{task_id}").json()
        if answer["status"] not in ("pending", "running"):
            return answer
        time.sleep(0.02)
    raise AssertionError("task never finished")


def test_background_task_goes_pending_running_succeed(sim, client) -> None:
    sim.reconfigure(latency="0.3")
    accepted = submit(client).json()
    assert accepted["status"] == "pending" and accepted["model"] == "gpt-4o-mini"
    seen = []
    for _ in range(60):
        answer = client.get(f"chat/{accepted['id']}").json()
        seen.append(answer["status"])
        if answer["status"] == "succeed":
            break
        time.sleep(0.02)
    assert seen[0] == "pending" and "running" in seen and seen[-1] == "succeed"
    assert answer["choices"][0]["message"]["content"] == expected_content(BODY)
    assert answer["usage"] == expected_usage(BODY)
    stats = sim.stats()
    assert stats["accepted"] == 1
    assert stats["accepted_by_fingerprint"] == {request_fingerprint(BODY): 1}


def test_synchronous_mode_answers_the_completion(sim, client) -> None:
    answer = client.post("chat/completions", json=BODY).json()
    assert answer["choices"][0]["message"]["content"] == expected_content(BODY)
    assert sim.stats()["sync_completions"] == 1 and sim.stats()["accepted"] == 0


def test_json_mode_answers_json(client) -> None:
    body = {**BODY, "json_mode": True}
    answer = wait_done(client, submit(client, body).json()["id"])
    content = orjson.loads(answer["choices"][0]["message"]["content"])
    assert content["label"] in ("positive", "negative", "neutral")
    assert 0.5 <= content["confidence"] < 1.0


def test_auth_and_balance(sim, client) -> None:
    assert (
        client.post(
            "chat/completions", json=BODY, headers={"Authorization": "Bearer no"}
        ).status_code
        == 401
    )
    assert (
        client.post("chat/completions", json=BODY, headers={"Authorization": ""}).status_code == 401
    )
    sim.reconfigure(payment_required_keys=("sk-poor",))
    poor = client.post("chat/completions", json=BODY, headers={"Authorization": "Bearer sk-poor"})
    assert poor.status_code == 402 and "balance" in poor.json()["error"]["message"].lower()


def test_bad_requests(client) -> None:
    assert submit(client, {"model": "m"}).status_code == 400
    assert submit(client, {"model": "m", "messages": []}).status_code == 400
    both = client.post("chat/completions", json={**BODY, "stream": True, "background": True})
    assert both.status_code == 400
    assert client.get("chat/unknown-id").status_code == 404


def test_failed_tasks(sim, client) -> None:
    sim.reconfigure(fail_rate=1.0)
    answer = wait_done(client, submit(client).json()["id"])
    assert answer["status"] == "failed" and answer["error"]["code"] == "task_failed"


def test_429_with_and_without_retry_after(sim, client) -> None:
    sim.reconfigure(rate_429=1.0, retry_after=3.0)
    limited = submit(client)
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "3"
    sim.reconfigure(retry_after=None)
    assert "Retry-After" not in submit(client).headers
    assert sim.stats()["accepted"] == 0


def test_requests_per_minute_limit(sim, client) -> None:
    sim.reconfigure(rpm=5)
    assert [submit(client).status_code for _ in range(5)] == [200] * 5
    sixth = submit(client)
    assert sixth.status_code == 429 and 1 <= int(sixth.headers["Retry-After"]) <= 60


def test_not_found_for_a_while_then_found(sim, client) -> None:
    sim.reconfigure(not_found_seconds=0.3)
    task_id = submit(client).json()["id"]
    assert client.get(f"chat/{task_id}").status_code == 404
    time.sleep(0.35)
    assert client.get(f"chat/{task_id}").status_code == 200


def test_results_expire(sim, client) -> None:
    sim.reconfigure(retention_seconds=0.2)
    task_id = submit(client).json()["id"]
    time.sleep(0.3)
    assert client.get(f"chat/{task_id}").status_code == 404


def test_blank_lines_and_nul(sim, client) -> None:
    sim.reconfigure(blank_lines=3, nul_rate=1.0)
    response = submit(client)
    assert response.text.startswith("\n\n\n{")
    task_id = orjson.loads(response.text.lstrip())["id"]
    time.sleep(0.1)
    raw = client.get(f"chat/{task_id}").text
    assert "\\u0000" in raw
    assert "\x00" in orjson.loads(raw.lstrip())["choices"][0]["message"]["content"]


def test_dropped_connections_and_lost_answers(sim, client) -> None:
    sim.reconfigure(drop_rate=1.0)
    with pytest.raises(httpx.TransportError):
        submit(client)
    assert sim.stats()["accepted"] == 0
    sim.reconfigure(drop_rate=0.0, lost_response_rate=1.0)
    with pytest.raises(httpx.TransportError):
        submit(client)
    assert sim.stats()["accepted"] == 1


def test_5xx_and_odd_statuses(sim, client) -> None:
    sim.reconfigure(rate_503=1.0)
    assert submit(client).status_code == 503
    sim.reconfigure(rate_503=0.0, unknown_status_rate=1.0, latency="5")
    task_id = submit(client).json()["id"]
    status = client.get(f"chat/{task_id}").json()["status"]
    assert status not in ("pending", "running", "succeed")
    assert sim.stats()["statuses_served"][status] == 1


def test_duplicates_are_visible_in_stats(sim, client) -> None:
    submit(client)
    submit(client)
    assert sim.stats()["duplicate_fingerprints"] == [request_fingerprint(BODY)]


def test_control_plane_over_http(sim) -> None:
    base = sim.base_url.rsplit("/api/v1", 1)[0]
    assert httpx.post(base + "/_sim/config", json={"rate_500": 1.0}).status_code == 200
    with httpx.Client(base_url=sim.base_url + "/", headers=AUTH) as c:
        assert submit(c).status_code == 500
    assert httpx.post(base + "/_sim/config", json={"nope": 1}).status_code == 400
    assert httpx.get(base + "/_sim/stats").json()["rejected"]["500"] == 1
    assert httpx.post(base + "/_sim/reset").status_code == 200
    assert httpx.get(base + "/_sim/stats").json()["posts"] == 0


@pytest.mark.parametrize("spec", ["0", "2.5", "uniform:1,3", "exp:2", "lognormal:5,1"])
def test_latency_specs(spec: str) -> None:
    import random

    sample = parse_latency(spec)(random.Random(1))
    assert sample >= 0


@pytest.mark.parametrize("spec", ["", "-1", "uniform:3,1", "exp:0", "lognormal:5", "gauss:1,2"])
def test_bad_latency_specs(spec: str) -> None:
    with pytest.raises(ValueError, match="bad latency spec"):
        parse_latency(spec)

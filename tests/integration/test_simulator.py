"""The simulator over real HTTP: it must behave like GeekAI, faults included."""

from __future__ import annotations

import random
import select
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from click.testing import CliRunner

from chatbatch.rules.structured import answer_problem, schema_text
from simulator.answers import (
    completion_for,
    expected_content,
    expected_usage,
    request_fingerprint,
    spoiled_content,
    value_for,
)
from simulator.cli import simulate
from simulator.config import SimConfig, parse_latency
from simulator.embedded import SimulatorHandle, running_simulator

ROOT = Path(__file__).resolve().parents[2]
BODY: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "hello there"}],
}
AUTH = {"Authorization": "Bearer sk-simulator"}
STATS_KEYS = {
    "posts",
    "gets",
    "accepted",
    "sync_completions",
    "accepted_by_fingerprint",
    "duplicate_fingerprints",
    "served_by_fingerprint",
    "sync_held_seconds",
    "sync_span_seconds",
    "rejected",
    "statuses_served",
    "completed_results_served",
    "tasks",
    "expired",
    "fetched",
    "median_completion_seconds",
    "median_fetch_delay_seconds",
    "poisoned_by_fingerprint",
    "usage_served_totals",
    "usage_served_tasks",
}


@pytest.fixture(scope="module")
def server() -> Iterator[SimulatorHandle]:
    with running_simulator(SimConfig(seed=7)) as handle:
        yield handle


@pytest.fixture
def sim(server: SimulatorHandle) -> SimulatorHandle:
    """The module's simulator with default behaviour and empty counters."""
    server.reset()
    server.reconfigure(**{k: getattr(SimConfig(), k) for k in SimConfig.field_names()})
    return server


@pytest.fixture
def client(sim: SimulatorHandle) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.base_url + "/", headers=AUTH, timeout=5) as c:
        yield c


def submit(client: httpx.Client, body: dict[str, Any] | None = None) -> httpx.Response:
    return client.post("chat/completions", json={**(body or BODY), "background": True})


def poll(client: httpx.Client, task_id: str) -> dict[str, Any]:
    answer: dict[str, Any] = orjson.loads(client.get(f"chat/{task_id}").text)
    return answer


def wait_done(client: httpx.Client, task_id: str) -> dict[str, Any]:
    for _ in range(200):
        answer = poll(client, task_id)
        if answer["status"] not in ("pending", "running"):
            return answer
        time.sleep(0.02)
    raise AssertionError("task never finished")


# --- the happy paths ---------------------------------------------------------------------------


def test_background_task_goes_pending_running_succeed(sim, client) -> None:
    sim.reconfigure(latency="0.6")
    response = submit(client)
    accepted = response.json()
    assert response.status_code == 200
    assert accepted["status"] == "pending" and accepted["model"] == "gpt-4o-mini"
    assert accepted["object"] == "chat.completion" and isinstance(accepted["created"], int)
    seen = []
    for _ in range(100):
        answer = poll(client, accepted["id"])
        seen.append(answer["status"])
        if answer["status"] == "succeed":
            break
        time.sleep(0.03)
    assert seen[0] == "pending" and "running" in seen and seen[-1] == "succeed"
    assert seen == sorted(seen, key=["pending", "running", "succeed"].index)  # never goes back
    assert answer["id"] == accepted["id"] and answer["created"] == accepted["created"]
    assert answer["choices"][0]["message"]["content"] == expected_content(BODY)
    assert answer["choices"][0]["finish_reason"] == "stop"
    assert answer["usage"] == expected_usage(BODY)
    assert answer["system_fingerprint"] == "fp_sim"
    stats = sim.stats()
    assert stats["accepted"] == 1 and stats["posts"] == 1 and stats["gets"] == len(seen)
    assert stats["accepted_by_fingerprint"] == {request_fingerprint(BODY): 1}
    assert stats["completed_results_served"] == 1 and stats["statuses_served"]["succeed"] == 1


def test_each_result_is_derived_from_its_own_request(sim, client) -> None:
    bodies = [
        {"model": "m", "messages": [{"role": "user", "content": f"question {i}"}]}
        for i in range(20)
    ]
    ids = [submit(client, body).json()["id"] for body in bodies]
    assert len(set(ids)) == 20
    for body, task_id in zip(bodies, ids, strict=True):
        answer = wait_done(client, task_id)
        assert answer == {
            **completion_for(body, task_id=task_id, created=answer["created"]),
            "status": "succeed",
        }
    assert sim.stats()["duplicate_fingerprints"] == []


def test_synchronous_mode_waits_and_answers_the_completion(sim, client) -> None:
    sim.reconfigure(latency="0.3")
    started = time.monotonic()
    response = client.post("chat/completions", json=BODY)
    assert time.monotonic() - started >= 0.3
    answer = response.json()
    assert response.status_code == 200 and "status" not in answer
    assert answer["choices"][0]["message"]["content"] == expected_content(BODY)
    assert answer["usage"] == expected_usage(BODY)
    stats = sim.stats()
    assert stats["sync_completions"] == 1 and stats["accepted"] == 0 and stats["tasks"] == 0
    assert list(stats["served_by_fingerprint"].values()) == [1]


def test_json_mode_and_thinking(client) -> None:
    body = {**BODY, "json_mode": True, "thinking": {"type": "enabled"}}
    answer = wait_done(client, submit(client, body).json()["id"])
    message = answer["choices"][0]["message"]
    content = orjson.loads(message["content"])
    assert message["content"] == expected_content(body)
    assert content["fingerprint"] == request_fingerprint(body)[:16]
    assert content["label"] in ("positive", "negative", "neutral")
    assert 0.5 <= content["confidence"] < 1.0
    assert message["reasoning_content"]
    assert answer["usage"]["completion_tokens_details"]["reasoning_tokens"] >= 8


LABEL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "label": {"type": "string", "enum": ["positive", "negative", "neutral"]},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "topics": {"type": "array", "items": {"type": "string"}},
        "source": {
            "type": "object",
            "properties": {"page": {"type": "integer", "minimum": 1, "maximum": 9}},
            "required": ["page"],
            "additionalProperties": False,
        },
    },
    "required": ["label", "confidence", "topics", "source"],
    "additionalProperties": False,
}


def with_schema(body: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    response_format = {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}
    return {**body, "response_format": response_format}


def test_json_schema_requests_get_answers_that_follow_the_schema(sim, client) -> None:
    bodies = [
        with_schema(
            {**BODY, "messages": [{"role": "user", "content": f"review {i}"}]}, LABEL_SCHEMA
        )
        for i in range(12)
    ]
    answers = [wait_done(client, submit(client, body).json()["id"]) for body in bodies]
    answers.append(client.post("chat/completions", json=bodies[0]).json())  # synchronous
    for body, answer in zip([*bodies, bodies[0]], answers, strict=True):
        content = answer["choices"][0]["message"]["content"]
        assert content == expected_content(body)
        assert answer_problem(content, schema_text(LABEL_SCHEMA)) is None
        value = orjson.loads(content)
        assert set(value) == {"label", "confidence", "topics", "source"}
        assert len(value["topics"]) == 1 and 1 <= value["source"]["page"] <= 9
    labels = {orjson.loads(a["choices"][0]["message"]["content"])["label"] for a in answers}
    assert len(labels) > 1  # picked by the request, not fixed


def test_invalid_json_rate_breaks_json_answers_alike_on_every_poll(sim, client) -> None:
    sim.reconfigure(invalid_json_rate=1.0)
    body = with_schema(BODY, LABEL_SCHEMA)
    task_id = submit(client, body).json()["id"]
    first = wait_done(client, task_id)["choices"][0]["message"]["content"]
    assert poll(client, task_id)["choices"][0]["message"]["content"] == first
    assert answer_problem(first, schema_text(LABEL_SCHEMA)) is not None
    assert first in {spoiled_content(body, draw=0), spoiled_content(body, draw=1)}
    json_mode = {**BODY, "json_mode": True}
    broken = wait_done(client, submit(client, json_mode).json()["id"])
    assert broken["choices"][0]["message"]["content"] != expected_content(json_mode)
    plain = wait_done(client, submit(client).json()["id"])  # not a JSON request: untouched
    assert plain["choices"][0]["message"]["content"] == expected_content(BODY)


def test_invalid_json_rate_is_drawn_per_task_so_asking_again_can_succeed(sim, client) -> None:
    sim.reconfigure(invalid_json_rate=0.5)
    body = with_schema(BODY, LABEL_SCHEMA)
    contents = [
        wait_done(client, submit(client, body).json()["id"])["choices"][0]["message"]["content"]
        for _ in range(30)
    ]
    valid = sum(content == expected_content(body) for content in contents)
    assert 5 <= valid <= 25
    problems = {answer_problem(c, schema_text(LABEL_SCHEMA)) for c in contents}
    assert any(p and p.startswith("not JSON") for p in problems)
    assert any(p and "is not of type" in p for p in problems)


def uncapped(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` without its token caps (its answer is then whole)."""
    return {k: v for k, v in body.items() if k not in ("max_tokens", "max_completion_tokens")}


def test_max_tokens_cuts_the_answer_short(sim, client) -> None:
    capped = {**BODY, "max_tokens": 3}
    cases = [
        (capped, 3),
        ({**BODY, "max_tokens": 40, "max_completion_tokens": 2}, 2),  # the smaller cap
        ({**capped, "thinking": {"type": "enabled"}}, 3),
        (with_schema({**BODY, "max_completion_tokens": 4}, LABEL_SCHEMA), 4),
    ]
    for body, cap in cases:
        answer = wait_done(client, submit(client, body).json()["id"])
        content, usage = answer["choices"][0]["message"]["content"], answer["usage"]
        assert answer["choices"][0]["finish_reason"] == "length"
        assert content == expected_content(body) and usage == expected_usage(body)
        details = usage["completion_tokens_details"]
        assert usage["completion_tokens"] == details["text_tokens"] == cap
        assert usage["total_tokens"] == usage["prompt_tokens"] + cap
        assert details["reasoning_tokens"] <= cap
        whole = expected_content(uncapped(body), fingerprint=request_fingerprint(body))
        assert whole.startswith(content) and len(content) == 4 * cap < len(whole)
    synchronous = client.post("chat/completions", json=capped).json()
    assert synchronous["choices"][0]["finish_reason"] == "length"
    assert synchronous["usage"] == expected_usage(capped)
    spoiled = spoiled_content(cases[-1][0], draw=1)  # broken answers are cut alike
    assert len(spoiled) == 16 and spoiled != expected_content(cases[-1][0])


def test_a_cap_above_the_answer_changes_nothing(sim, client) -> None:
    for roomy in ({**BODY, "max_tokens": 55}, {**BODY, "max_completion_tokens": 10_000}):
        answer = wait_done(client, submit(client, roomy).json()["id"])
        fingerprint = request_fingerprint(roomy)
        assert answer["choices"][0]["finish_reason"] == "stop"
        assert answer["usage"] == expected_usage(uncapped(roomy), fingerprint=fingerprint)
        content = answer["choices"][0]["message"]["content"]
        assert content == expected_content(uncapped(roomy), fingerprint=fingerprint)


def test_models_list_carries_the_rpm_limit(sim, client) -> None:
    sim.reconfigure(rpm=30)
    models = client.get("models").json()["data"]
    assert models and all(m["limitations"]["max_requests_per_min"] == 30 for m in models)


# --- refusals ----------------------------------------------------------------------------------


def test_auth_and_balance(sim, client) -> None:
    bad = client.post("chat/completions", json=BODY, headers={"Authorization": "Bearer no"})
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "invalid_api_key"
    assert client.post(
        "chat/completions", json=BODY, headers={"Authorization": ""}
    ).status_code == (401)
    assert client.get("chat/anything", headers={"Authorization": "Bearer no"}).status_code == 401
    sim.reconfigure(payment_required_keys=("sk-poor",))
    poor = client.post("chat/completions", json=BODY, headers={"Authorization": "Bearer sk-poor"})
    assert poor.status_code == 402 and "balance" in poor.json()["error"]["message"].lower()
    sim.reconfigure(api_keys=())  # no auth check at all
    assert submit(client, BODY).status_code == 200
    stats = sim.stats()
    assert stats["rejected"]["401"] == 3 and stats["rejected"]["402"] == 1
    assert stats["accepted"] == 1


def test_bad_requests(sim, client) -> None:
    assert submit(client, {"model": "m"}).status_code == 400
    assert submit(client, {"model": "m", "messages": []}).status_code == 400
    assert submit(client, {"model": "", "messages": [{"role": "user"}]}).status_code == 400
    not_json = client.post("chat/completions", content=b"{nope")
    assert not_json.status_code == 400 and "JSON" in not_json.json()["error"]["message"]
    both = client.post("chat/completions", json={**BODY, "stream": True, "background": True})
    assert both.status_code == 400 and both.json()["error"]["message"]
    big = {**BODY, "messages": [{"role": "user", "content": "x" * (10 * 1024 * 1024)}]}
    assert client.post("chat/completions", json=big).status_code == 413
    assert client.get("chat/unknown-id").status_code == 404
    stats = sim.stats()
    assert stats["rejected"]["400"] == 5 and stats["rejected"]["413"] == 1
    assert stats["accepted"] == 0


def test_failed_tasks(sim, client) -> None:
    sim.reconfigure(fail_rate=1.0)
    answer = wait_done(client, submit(client).json()["id"])
    assert answer["status"] == "failed" and answer["error"]["code"] == "task_failed"
    assert "choices" not in answer
    synchronous = client.post("chat/completions", json=BODY)
    assert synchronous.status_code == 500
    assert sim.stats()["statuses_served"]["failed"] == 1


def test_429_with_and_without_retry_after(sim, client) -> None:
    sim.reconfigure(rate_429=1.0, retry_after=3.0)
    limited = submit(client)
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "3"
    sim.reconfigure(retry_after=0.25)
    assert submit(client).headers["Retry-After"] == "0.25"
    sim.reconfigure(retry_after=None)
    assert "Retry-After" not in submit(client).headers
    stats = sim.stats()
    assert stats["accepted"] == 0 and stats["rejected"]["429"] == 3


def test_requests_per_minute_limit(sim, client) -> None:
    sim.reconfigure(rpm=5)
    assert [submit(client).status_code for _ in range(5)] == [200] * 5
    sixth = submit(client)
    assert sixth.status_code == 429 and 1 <= int(sixth.headers["Retry-After"]) <= 60
    sim.reconfigure(api_keys=("sk-simulator", "sk-other"))
    other_key = client.post(
        "chat/completions",
        json={**BODY, "background": True},
        headers={"Authorization": "Bearer sk-other"},
    )
    assert other_key.status_code == 200  # the window is per key
    assert sim.stats()["accepted"] == 6


# --- polling quirks ----------------------------------------------------------------------------


def test_not_found_for_a_while_then_found(sim, client) -> None:
    sim.reconfigure(not_found_seconds=0.3)
    task_id = submit(client).json()["id"]
    assert client.get(f"chat/{task_id}").status_code == 404
    time.sleep(0.35)
    assert client.get(f"chat/{task_id}").status_code == 200


def test_results_expire(sim, client) -> None:
    sim.reconfigure(retention_seconds=0.5)
    task_id = submit(client).json()["id"]
    assert wait_done(client, task_id)["status"] == "succeed"
    time.sleep(0.55)
    gone = client.get(f"chat/{task_id}")
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "not_found"
    stats = sim.stats()
    assert stats["tasks"] == 0 and stats["expired"] == 1


def test_blank_lines_and_nul(sim, client) -> None:
    sim.reconfigure(blank_lines=3, nul_rate=1.0)
    response = submit(client)
    assert response.text.startswith("\n\n\n{")
    task_id = orjson.loads(response.text)["id"]
    time.sleep(0.1)
    raw = client.get(f"chat/{task_id}").text
    assert raw.startswith("\n\n\n{") and "\\u0000" in raw
    content = orjson.loads(raw)["choices"][0]["message"]["content"]
    assert "\x00" in content and content.replace("\x00", "") == expected_content(BODY)
    assert client.get("chat/unknown").text.startswith("\n\n\n{")  # errors are padded too


def test_odd_statuses_while_unfinished(sim, client) -> None:
    sim.reconfigure(unknown_status_rate=1.0, latency="5")
    task_id = submit(client).json()["id"]
    status = poll(client, task_id)["status"]
    assert status not in ("pending", "running", "succeed", "failed")
    assert sim.stats()["statuses_served"][status] == 1


# --- transport faults --------------------------------------------------------------------------


def test_dropped_connections_and_lost_answers(sim, client) -> None:
    sim.reconfigure(drop_rate=1.0)
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        submit(client)
    assert sim.stats()["accepted"] == 0 and sim.stats()["tasks"] == 0
    sim.reconfigure(drop_rate=0.0, lost_response_rate=1.0)
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        submit(client)
    stats = sim.stats()
    assert stats["accepted"] == 1 and stats["tasks"] == 1
    assert stats["rejected"]["dropped"] == 1 and stats["rejected"]["lost_response"] == 1


def test_5xx_on_posts_and_gets(sim, client) -> None:
    task_id = submit(client).json()["id"]
    sim.reconfigure(rate_503=1.0)
    assert submit(client).status_code == 503
    assert client.get(f"chat/{task_id}").status_code == 503
    sim.reconfigure(rate_503=0.0, rate_500=1.0)
    assert submit(client).status_code == 500
    assert client.get(f"chat/{task_id}").status_code == 500
    stats = sim.stats()
    assert stats["accepted"] == 1
    assert stats["rejected"]["503"] == 2 and stats["rejected"]["500"] == 2


def test_slow_answers_trip_client_timeouts(sim) -> None:
    sim.reconfigure(slow_rate=1.0, slow_seconds=5.0)
    with (
        httpx.Client(base_url=sim.base_url + "/", headers=AUTH, timeout=0.2) as impatient,
        pytest.raises(httpx.ReadTimeout),
    ):
        submit(impatient)
    assert sim.stats()["accepted"] == 0


def test_the_seed_repeats_the_faults(sim, client) -> None:
    def pattern() -> list[int]:
        sim.reconfigure(seed=42, rate_500=0.5)
        return [client.get("chat/none").status_code for _ in range(30)]

    first = pattern()
    assert set(first) == {404, 500}
    assert pattern() == first


# --- stats and control plane -------------------------------------------------------------------


def test_stats_shape_and_duplicates(sim, client) -> None:
    submit(client)
    submit(client)
    submit(client, {**BODY, "stream": False})  # transport keys do not change the fingerprint
    stats = sim.stats()
    assert set(stats) == STATS_KEYS
    assert set(stats["rejected"]) >= {"401", "402", "429", "500", "503", "400", "dropped"}
    assert set(stats["statuses_served"]) >= {"pending", "running", "succeed", "failed"}
    assert stats["duplicate_fingerprints"] == [request_fingerprint(BODY)]
    assert stats["accepted_by_fingerprint"] == {request_fingerprint(BODY): 3}


def test_stats_time_how_late_each_outcome_was_first_fetched(sim, client) -> None:
    sim.reconfigure(latency="0.3")
    task_id = submit(client).json()["id"]
    assert poll(client, task_id)["status"] != "succeed"
    assert sim.stats()["fetched"] == 0
    time.sleep(0.6)
    assert poll(client, task_id)["status"] == "succeed"
    assert poll(client, task_id)["status"] == "succeed"  # only the first sighting counts
    stats = sim.stats()
    assert stats["fetched"] == 1
    assert stats["median_completion_seconds"] == pytest.approx(0.3, abs=0.01)
    assert 0.25 <= stats["median_fetch_delay_seconds"] < 2.0


def test_control_plane_over_http(sim) -> None:
    with httpx.Client(base_url=sim.root_url) as control:
        assert control.post("/_sim/config", json={"rate_500": 1.0}).status_code == 200
        assert control.get("/_sim/config").json()["rate_500"] == 1.0
        with httpx.Client(base_url=sim.base_url + "/", headers=AUTH) as c:
            assert submit(c).status_code == 500
        assert control.post("/_sim/config", json={"nope": 1}).status_code == 400
        assert control.post("/_sim/config", json={"fail_rate": 2}).status_code == 400
        assert control.post("/_sim/config", json={"latency": "soon"}).status_code == 400
        assert control.post("/_sim/config", json=[1]).status_code == 400
        assert sim.config.rate_500 == 1.0  # refused changes left it alone
        stats = control.get("/_sim/stats").json()
        assert stats == sim.stats() and stats["rejected"]["500"] == 1
        assert control.post("/_sim/reset").status_code == 200
        assert control.get("/_sim/stats").json()["posts"] == 0


def test_reconfigure_refuses_unknown_or_bad_settings(sim) -> None:
    with pytest.raises(ValueError, match="unknown"):
        sim.reconfigure(no_such_setting=1)
    with pytest.raises(ValueError, match="rpm"):
        sim.reconfigure(rpm=0)


# --- starting it -------------------------------------------------------------------------------


def test_python_m_simulator_announces_its_port_and_serves() -> None:
    command = [sys.executable, "-m", "simulator", "--port", "0", "--latency", "0", "--rpm", "7"]
    with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert select.select([process.stdout], [], [], 15)[0], "no announcement"
            assert process.stdout is not None
            line = process.stdout.readline().strip()
            prefix = "chatbatch simulator listening on http://127.0.0.1:"
            assert line.startswith(prefix) and line.endswith("/api/v1")
            base_url = line.rsplit(" ", 1)[1]
            with httpx.Client(base_url=base_url + "/", headers=AUTH, timeout=5) as c:
                assert c.get("models").json()["data"][0]["limitations"] == {
                    "max_requests_per_min": 7
                }
        finally:
            process.terminate()
        assert process.wait(timeout=10) == 0


def test_cli_validates_its_options() -> None:
    runner = CliRunner()
    help_text = runner.invoke(simulate, ["--help"]).output
    for option in ("--latency", "--lost-response-rate", "--retry-after", "--no-auth", "--rpm"):
        assert option in help_text
    assert "--invalid-json-rate" in help_text
    assert runner.invoke(simulate, ["--invalid-json-rate", "2"]).exit_code == 2
    assert runner.invoke(simulate, ["--latency", "bogus"]).exit_code == 2
    assert runner.invoke(simulate, ["--fail-rate", "1.5"]).exit_code == 2
    assert runner.invoke(simulate, ["--retry-after", "soon"]).exit_code == 2


# --- pure checks -------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["0", "2.5", "uniform:1,3", "exp:2", "lognormal:5,1"])
def test_latency_specs(spec: str) -> None:
    assert parse_latency(spec)(random.Random(1)) >= 0


def test_latency_distributions() -> None:
    rng = random.Random(3)
    assert parse_latency("2.5")(rng) == 2.5
    assert all(1 <= parse_latency("uniform:1,3")(rng) <= 3 for _ in range(200))
    exp = parse_latency("exp:2")
    assert 1.6 < statistics.mean(exp(rng) for _ in range(4000)) < 2.4
    lognormal = parse_latency("lognormal:5,0.5")
    assert 4.5 < statistics.median(lognormal(rng) for _ in range(4000)) < 5.5


@pytest.mark.parametrize(
    "spec",
    ["", "-1", "inf", "soon", "uniform:3,1", "uniform:1", "exp:0", "lognormal:5", "gauss:1,2"],
)
def test_bad_latency_specs(spec: str) -> None:
    with pytest.raises(ValueError, match="bad latency spec"):
        parse_latency(spec)


def test_answers_handle_every_content_shape() -> None:
    body = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "assistant", "content": None},
            {"role": "user", "content": [{"type": "text", "text": "abcd"}, {"type": "image_url"}]},
        ],
        "enable_search": True,
    }
    assert expected_content(body) == f"sim:{request_fingerprint(body)[:16]}: abcd"
    usage = expected_usage(body)
    assert usage["prompt_tokens"] == 1 + len("be brief" + "abcd") // 4
    assert usage["prompt_tokens_details"]["cached_tokens"] == usage["prompt_tokens"] // 2
    assert usage["billed_units"] == 1
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert request_fingerprint({**body, "background": True, "stream": False}) == (
        request_fingerprint(body)
    )
    schema = {**body, "response_format": {"type": "json_schema"}}
    assert orjson.loads(expected_content(schema))["fingerprint"] == request_fingerprint(schema)[:16]


SCHEMAS: list[dict[str, Any]] = [
    {"type": "object"},
    {"type": "object", "properties": {"n": {"type": "integer", "exclusiveMinimum": 0}}},
    {
        "type": "object",
        "properties": {
            "score": {"type": "number", "minimum": -5, "exclusiveMaximum": -4},
            "count": {"type": "integer", "maximum": 3},
            "flag": {"type": "boolean"},
            "note": {"type": ["string", "null"], "minLength": 30, "maxLength": 40},
            "when": {"type": "string", "format": "date"},
            "kind": {"const": "review"},
            "tags": {"type": "array", "items": {"enum": [1, 2, 3]}, "minItems": 2},
            "ref": {"$ref": "#/$defs/part"},
            "either": {
                "anyOf": [{"type": "integer", "minimum": 5, "maximum": 5}, {"type": "null"}]
            },
        },
        "required": ["score", "count", "flag", "note", "when", "kind", "tags", "ref", "either"],
        "additionalProperties": False,
        "$defs": {
            "part": {
                "type": "object",
                "properties": {"deep": {"type": "array", "items": {"type": "object"}}},
                "required": ["deep"],
                "additionalProperties": False,
            }
        },
    },
]


@pytest.mark.parametrize("schema", SCHEMAS)
def test_generated_values_follow_their_schema(schema: dict[str, Any]) -> None:
    for i in range(40):
        fingerprint = request_fingerprint({"model": "m", "n": i})
        value = value_for(schema, fingerprint)
        assert answer_problem(orjson.dumps(value).decode(), schema_text(schema)) is None, value
        assert value_for(schema, fingerprint) == value  # the same request, the same answer


def test_spoiled_answers_are_broken_either_way() -> None:
    body = with_schema(BODY, LABEL_SCHEMA)
    truncated = answer_problem(spoiled_content(body, draw=4), schema_text(LABEL_SCHEMA))
    mistyped = answer_problem(spoiled_content(body, draw=7), schema_text(LABEL_SCHEMA))
    assert truncated is not None and truncated.startswith("not JSON")
    assert mistyped is not None and "is not of type" in mistyped
    untyped = with_schema(BODY, {"type": "object", "properties": {"x": {}}})
    whole = expected_content(untyped)
    assert spoiled_content(untyped, draw=7) == whole[: len(whole) // 2]


def test_config_rejects_impossible_values() -> None:
    for bad in ({"fail_rate": 1.5}, {"blank_lines": -1}, {"rpm": 0}, {"latency": "x"}):
        with pytest.raises(ValueError):
            SimConfig(**bad)  # type: ignore[arg-type]
    assert SimConfig(api_keys=["a", "b"]).api_keys == ("a", "b")  # type: ignore[arg-type]

"""Sync mode (``CHATBATCH_API_MODE=sync``) through the installed binary: a plain chat-completions
POST whose answer is the result, on the embedded default and with two workers against a
provider that misbehaves. Nothing is polled, and nothing is sent twice that is not counted."""

from __future__ import annotations

import os
import time

import orjson
import pytest
from cli_process import (
    BINARY,
    REPO,
    base_env,
    chatbatch,
    database_dump,
    query_rows,
    work_with_workers,
    write_prompts,
)

from simulator.answers import expected_content, expected_usage

pytestmark = pytest.mark.skipif(
    BINARY is None and not os.environ.get("CI"), reason="chatbatch is not installed"
)

USAGE_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens", "billed_units")


def test_an_embedded_run_in_sync_mode_stores_each_answer_in_one_step(tmp_path) -> None:
    env = base_env(tmp_path) | {"CHATBATCH_API_MODE": "sync"}
    prompts = REPO / "examples" / "prompts.jsonl"
    proc = chatbatch("run", str(prompts), "-o", "out.jsonl", "--simulate", env=env, cwd=tmp_path)
    assert "Traceback" not in proc.stderr
    lines = [orjson.loads(x) for x in (tmp_path / "out.jsonl").read_bytes().splitlines()]
    assert len(lines) == 14 and all(line["error"] is None for line in lines)
    ids = [line["response"]["request_id"] for line in lines]
    assert all(ids) and len(set(ids)) == 14, ids  # the answers' own ids
    assert all(line["response"]["body"]["choices"][0]["message"]["content"] for line in lines)


def test_sync_mode_with_two_workers_against_a_provider_that_misbehaves(
    distributed_env, sim, tmp_path
) -> None:
    sim.reconfigure(
        latency="lognormal:0.2,0.6",
        rate_429=0.05,
        retry_after=0.5,
        rate_500=0.03,
        rate_503=0.03,
        drop_rate=0.03,
        lost_response_rate=0.04,
        slow_rate=0.03,
        slow_seconds=4.0,
    )
    env = distributed_env | {
        "CHATBATCH_API_MODE": "sync",
        "CHATBATCH_MAX_ATTEMPTS": "12",
        "CHATBATCH_RETRY_BASE_SECONDS": "0.05",
        "CHATBATCH_RETRY_MAX_SECONDS": "0.5",
        "CHATBATCH_CONNECT_TIMEOUT": "1",
        "CHATBATCH_READ_TIMEOUT": "2",
        "CHATBATCH_SYNC_READ_TIMEOUT": "3",  # the slow answers (4 s) time out after the POST
        "CHATBATCH_LEASE_SECONDS": "15",
    }
    n = 200
    bodies = write_prompts(tmp_path / "prompts.jsonl", n)
    chatbatch("db", "upgrade", env=env)
    chatbatch("load", str(tmp_path / "prompts.jsonl"), "--name", "sync", env=env)
    status, worker_logs = work_with_workers(env, "sync", tmp_path)
    assert status["status"] == "completed", worker_logs[-3000:]
    assert status["counts"]["succeeded"] == n, status["counts"]

    chatbatch("export", "sync", "-o", str(tmp_path / "out.jsonl"), env=env)
    lines = [orjson.loads(x) for x in (tmp_path / "out.jsonl").read_bytes().splitlines()]
    for body, line in zip(bodies, lines, strict=True):
        content = line["response"]["body"]["choices"][0]["message"]["content"]
        assert content == expected_content(body)
        assert line["response"]["request_id"]
    expected = {k: sum(expected_usage(b)[k] for b in bodies) for k in USAGE_KEYS}
    assert {k: status["usage"][k] for k in USAGE_KEYS} == expected

    stats = sim.stats()
    served = stats["served_by_fingerprint"]
    assert len(served) == n and stats["accepted"] == 0 and stats["gets"] == 0
    assert stats["rejected"]["lost_response"] > 0 and stats["rejected"]["429"] > 0
    resent = sum(count - 1 for count in served.values())
    assert 0 < resent <= status["possible_duplicates"]

    secret = env["GEEKAI_API_KEY"]
    assert secret not in worker_logs
    assert secret not in database_dump(env["CHATBATCH_DATABASE_URL"])


def test_a_sync_answer_slower_than_the_read_timeout_is_waited_for(sim, tmp_path) -> None:
    sim.reconfigure(latency="1.5")  # longer than the ordinary read timeout
    env = base_env(tmp_path) | {
        "CHATBATCH_API_MODE": "sync",
        "CHATBATCH_API_BASE": sim.base_url,
        "CHATBATCH_API_KEY": "sk-simulator",
        "CHATBATCH_READ_TIMEOUT": "1",
    }
    prompts = str(REPO / "examples" / "prompts.jsonl")
    started = time.monotonic()
    chatbatch("run", prompts, "--name", "slow", "-o", str(tmp_path / "out.jsonl"), env=env)
    assert time.monotonic() - started >= 1.5
    status = orjson.loads(chatbatch("status", "slow", "--json", env=env).stdout)
    assert status["counts"]["succeeded"] == 14 and status["possible_duplicates"] == 0
    assert sum(sim.stats()["served_by_fingerprint"].values()) == 14


def test_sync_mode_keeps_every_connection_busy_however_answer_times_spread(sim, tmp_path) -> None:
    """A submission's slot is reused as soon as its answer is written, not when the slowest
    answer of its chunk has landed: waiting for that left most connections idle (200 answers
    at a median of 1 s took 57 s at 16 in flight, 20 s once slots were reused)."""
    sim.reconfigure(latency="lognormal:0.5,1.0")
    concurrency = 8
    env = base_env(tmp_path) | {
        "CHATBATCH_API_MODE": "sync",
        "CHATBATCH_API_BASE": sim.base_url,
        "CHATBATCH_API_KEY": "sk-simulator",
        "CHATBATCH_CONCURRENCY": str(concurrency),
    }
    write_prompts(tmp_path / "prompts.jsonl", 120)
    out = str(tmp_path / "out.jsonl")
    chatbatch("run", str(tmp_path / "prompts.jsonl"), "--name", "spread", "-o", out, env=env)
    stats = sim.stats()
    in_flight = stats["sync_held_seconds"] / stats["sync_span_seconds"]
    print(f"on average {in_flight:.1f} of {concurrency} connections busy")
    assert in_flight >= 0.7 * concurrency


def test_a_sync_answer_asked_again_keeps_its_id_and_provider_in_the_history(
    distributed_env, sim, tmp_path
) -> None:
    """An answer that breaks the schema is archived before the request is asked again; in sync
    mode the row never held the answer's id, so the archive is given it with the write."""
    sim.reconfigure(invalid_json_rate=1.0)  # every answer breaks the schema
    env = distributed_env | {"CHATBATCH_API_MODE": "sync"}
    args = ["run", str(REPO / "examples" / "reviews.csv"), "--name", "again", "-o", "-"]
    args += ["--model", "gpt-4o-mini", "--template", "Review: {{ text }}"]
    args += ["--schema", str(REPO / "examples" / "review_schema.json"), "--retry-invalid", "1"]
    chatbatch(*args, env=env, check=False)
    url = env["CHATBATCH_DATABASE_URL"]
    archived = query_rows(url, "SELECT remote_id, provider FROM past_results")
    rows = query_rows(url, "SELECT remote_id, provider FROM requests")
    assert archived and len(archived) == len(rows)  # each asked once more
    assert all(remote_id and provider == "default" for remote_id, provider in archived)
    assert all(remote_id and provider == "default" for remote_id, provider in rows)
    assert {r for r, _ in archived}.isdisjoint(r for r, _ in rows)


def test_run_with_a_providers_file_given_as_an_option(sim, tmp_path) -> None:
    """``--providers FILE`` does what CHATBATCH_PROVIDERS does: routing, keys from the named
    variable, and a model no provider serves refused at load, naming the line."""
    providers = tmp_path / "providers.toml"
    providers.write_text(
        "[[provider]]\n"
        'name = "local-sim"\n'
        f'base_url = "{sim.base_url}"\n'
        'key_env = "TEST_LOCAL_SIM_KEY"\n'
        'mode = "sync"\n'
        'models = ["gpt-4o*"]\n'
    )
    env = base_env(tmp_path) | {"TEST_LOCAL_SIM_KEY": "sk-simulator"}
    prompts = tmp_path / "prompts.jsonl"
    write_prompts(prompts, 12)
    out = str(tmp_path / "out.jsonl")
    args = ["run", str(prompts), "--name", "opt", "-o", out, "--providers", str(providers)]
    chatbatch(*args, env=env)
    status = orjson.loads(chatbatch("status", "opt", "--json", env=env).stdout)
    assert status["counts"]["succeeded"] == 12 and status["providers"] == {"local-sim": 12}
    assert sum(sim.stats()["served_by_fingerprint"].values()) == 12

    other = tmp_path / "other.jsonl"
    other.write_text(prompts.read_text().replace("gpt-4o-mini", "claude-3", 1))
    refused = chatbatch(
        "run", str(other), "-o", out, "--providers", str(providers), env=env, check=False
    )
    assert refused.returncode == 2
    assert f"{other}:1: no provider in {providers} serves model 'claude-3'" in refused.stderr


def test_sync_mode_pauses_on_an_account_error_and_keeps_within_a_cost_cap(sim, tmp_path) -> None:
    """The batch-level guards act on sync answers as on background ones: a 402 pauses the batch
    (exit 4) with nothing failed, and --max-cost stops submitting before the cap is passed."""
    prices = tmp_path / "prices.toml"
    prices.write_text(
        'currency = "USD"\n[models."gpt-4o-mini"]\ninput = 1000\noutput = 1000\nper_unit = 0.01\n'
    )  # dear enough that a few answers pass the cap
    env = base_env(tmp_path) | {
        "CHATBATCH_API_MODE": "sync",
        "CHATBATCH_API_BASE": sim.base_url,
        "CHATBATCH_API_KEY": "sk-no-money-left",
    }
    sim.reconfigure(api_keys=("sk-no-money-left", "sk-simulator"))
    sim.reconfigure(payment_required_keys=("sk-no-money-left",))
    write_prompts(tmp_path / "prompts.jsonl", 30)
    out = str(tmp_path / "out.jsonl")
    paused = chatbatch(
        "run", str(tmp_path / "prompts.jsonl"), "--name", "broke", "-o", out, env=env, check=False
    )
    assert paused.returncode == 4, paused.stderr
    status = orjson.loads(chatbatch("status", "broke", "--json", env=env).stdout)
    assert status["status"] == "paused" and status["counts"]["failed"] == 0
    assert "402" in status["pause_reason"]

    env["CHATBATCH_API_KEY"] = "sk-simulator"
    args = ["run", str(tmp_path / "prompts.jsonl"), "--name", "capped", "-o", out]
    args += ["--prices", str(prices), "--max-cost", "0.5"]
    chatbatch(*args, env=env, check=False)
    status = orjson.loads(chatbatch("status", "capped", "--json", env=env).stdout)
    assert status["status"] == "paused" and "cost" in status["pause_reason"]
    assert 0 < status["counts"]["succeeded"] < 30
    spent = status["cost"]["so_far"]
    assert spent is not None and float(spent) <= 0.5

"""The provider client over real HTTP: which transport failures may have let a POST through."""

from __future__ import annotations

import socket

import orjson
import pytest

from chatbatch.rules.outcomes import Accepted, Completed, Retryable
from simulator.answers import expected_content
from worker.protocols import protocol_for
from worker.provider import Provider

BODY = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})


@pytest.fixture
def provider(sim):
    client = Provider(
        base_url=sim.base_url, api_key="sk-simulator", read_timeout=2, max_connections=4
    )
    yield client
    client.close()


def test_a_connection_dropped_after_the_post_counts_as_possibly_accepted(sim, provider) -> None:
    sim.reconfigure(lost_response_rate=1.0)  # the task is created, then the socket closes
    outcome = provider.submit(BODY.decode())
    assert isinstance(outcome, Retryable) and outcome.maybe_accepted, outcome
    assert sim.stats()["accepted"] == 1


def test_a_refused_connection_was_never_sent() -> None:
    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = Provider(base_url=f"http://127.0.0.1:{port}/api/v1", api_key="k", connect_timeout=1)
    try:
        outcome = client.submit(BODY.decode())
    finally:
        client.close()
    assert isinstance(outcome, Retryable) and not outcome.maybe_accepted, outcome


def test_a_chunk_of_calls_comes_back_in_order(sim, provider) -> None:
    sim.reconfigure(request_latency=0.1, latency="0")
    bodies = [{"model": "m", "messages": [{"role": "user", "content": f"n{i}"}]} for i in range(8)]
    submitted, _ = provider.exchange([orjson.dumps(body).decode() for body in bodies], [])
    assert all(isinstance(outcome, Accepted) for outcome in submitted)
    _, polled = provider.exchange([], [outcome.remote_id for outcome in submitted])  # type: ignore[union-attr]
    contents = [outcome.body["choices"][0]["message"]["content"] for outcome in polled]  # type: ignore[union-attr]
    assert contents == [expected_content(body) for body in bodies]


def sync_provider(sim, **options: float) -> Provider:
    """A client in sync mode against the simulator (which answers at once without background)."""
    return Provider(
        base_url=sim.base_url,
        api_key="sk-simulator",
        read_timeout=2,
        max_connections=4,
        protocol=protocol_for("sync"),
        **options,
    )


def test_sync_mode_gets_the_completion_from_the_post_itself(sim) -> None:
    sim.reconfigure(latency="0.3")
    client = sync_provider(sim)
    try:
        outcome = client.submit(BODY.decode())
    finally:
        client.close()
    assert isinstance(outcome, Completed) and outcome.remote_id, outcome
    assert outcome.body["choices"][0]["message"]["content"] == expected_content(orjson.loads(BODY))
    stats = sim.stats()
    assert stats["sync_completions"] == 1 and stats["accepted"] == 0  # no background task


def test_a_sync_post_that_outlasts_its_read_timeout_was_possibly_served(sim) -> None:
    sim.reconfigure(latency="3")  # generation takes longer than the sync read timeout
    client = sync_provider(sim, sync_read_timeout=1)
    try:
        outcome = client.submit(BODY.decode())
    finally:
        client.close()
    assert isinstance(outcome, Retryable) and outcome.code == "timeout" and outcome.maybe_accepted


def test_sync_mode_waits_past_the_ordinary_read_timeout(sim) -> None:
    sim.reconfigure(latency="2.5")  # longer than read_timeout=2, shorter than the sync one
    client = sync_provider(sim, sync_read_timeout=10)
    try:
        outcome = client.submit(BODY.decode())
    finally:
        client.close()
    assert isinstance(outcome, Completed), outcome


def test_published_limits_of_several_providers_are_each_for_the_models_it_serves() -> None:
    """Both simulators list the same three models with their own RPM limits; each limit read
    is the one of the provider that serves the model."""
    from chatbatch.providers import ProviderConfig, ProviderTable
    from chatbatch.rules.ratelimits import limits_from_models_listing
    from simulator.config import SimConfig
    from simulator.embedded import running_simulator
    from worker.providers import ProviderSet

    def config(name: str, models: list[str]) -> ProviderConfig:
        return ProviderConfig(name=name, base_url="http://x", key_env="UNUSED", models=models)

    table = ProviderTable((config("a", ["gpt-4o*"]), config("b", ["*"])))
    with (
        running_simulator(SimConfig(rpm=100)) as a,
        running_simulator(SimConfig(rpm=900)) as b,
    ):
        clients = {
            "a": Provider(base_url=a.base_url, api_key="sk-simulator"),
            "b": Provider(base_url=b.base_url, api_key="sk-simulator"),
        }
        providers = ProviderSet(clients, table)
        try:
            limits = limits_from_models_listing(providers.models())
        finally:
            providers.close()
    assert {model: limit.rpm for model, limit in limits.items()} == {
        "gpt-4o-mini": 100,
        "gpt-4.1-nano": 900,
        "deepseek-r1": 900,
    }

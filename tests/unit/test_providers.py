"""The providers file: parsed and checked up front, each model routed to the provider that
names it most specifically, keys only ever read from the variables it names."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatbatch.errors import ConfigError
from chatbatch.providers import DEFAULT_NAME, load_providers, provider_table
from chatbatch.rules.ratelimits import ModelLimit, limit_for
from chatbatch.settings import Settings

GOOD = """
[[provider]]
name = "geekai"
base_url = "https://geekai.co/api/v1"
key_env = "TEST_GEEKAI_KEY"
models = ["gpt-4o*", "*"]
rate_limits = "gpt-4o-mini=500/32, *=100"

[[provider]]
name = "local"
base_url = "http://127.0.0.1:8000/v1"
key_env = "TEST_LOCAL_KEY"
mode = "sync"
models = ["llama-*", "gpt-4o-mini"]
poll_path = "tasks/{id}"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "providers.toml"
    path.write_text(text)
    return path


def test_a_model_goes_to_the_provider_naming_it_most_specifically(tmp_path: Path) -> None:
    table = load_providers(write(tmp_path, GOOD))
    routes = {m: table.route(m).name for m in ("gpt-4o-mini", "gpt-4o", "llama-3", "other")}  # type: ignore[union-attr]
    assert routes == {
        "gpt-4o-mini": "local",  # exact name before any glob
        "gpt-4o": "geekai",
        "llama-3": "local",  # "llama-*" is longer than "*"
        "other": "geekai",
    }
    assert table.named("local").mode == "sync" and table.named("local").poll_path == "tasks/{id}"  # type: ignore[union-attr]


def test_a_providers_rate_limits_apply_to_the_models_it_serves(tmp_path: Path) -> None:
    limits = load_providers(write(tmp_path, GOOD)).rate_limits()
    assert limits["gpt-4o-mini"] == ModelLimit(rpm=500, concurrency=32)
    assert limits["gpt-4o*"] == limits["*"] == ModelLimit(rpm=100)  # geekai's "*": its models
    assert limit_for("gpt-4o-2024", limits) == ModelLimit(rpm=100)
    assert limit_for("llama-3", {"llama-*": ModelLimit(rpm=7), "*": ModelLimit(rpm=1)}).rpm == 7


def test_keys_come_from_the_variables_the_file_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = load_providers(write(tmp_path, GOOD))
    monkeypatch.setenv("TEST_GEEKAI_KEY", "sk-geekai-123456")
    monkeypatch.delenv("TEST_LOCAL_KEY", raising=False)
    assert table.keys() == ["sk-geekai-123456"]
    with pytest.raises(ConfigError, match="provider 'local': TEST_LOCAL_KEY is not set"):
        table.check_keys()
    monkeypatch.setenv("TEST_LOCAL_KEY", "short")
    with pytest.raises(ConfigError, match="TEST_LOCAL_KEY"):
        table.check_keys()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[provider]\nname = 1", "not valid TOML"),
        ("[[provider]]\nname = 'a'", "base_url"),
        (GOOD.replace('mode = "sync"', 'mode = "stream"'), "mode"),
        (GOOD.replace('name = "local"', 'name = "geekai"'), "given twice"),
        (GOOD.replace("500/32", "fast"), "rate_limits"),
        (GOOD.replace('key_env = "TEST_LOCAL_KEY"', 'key = "sk-in-the-file"'), "key"),
        (GOOD.replace('"tasks/{id}"', '"tasks"'), "poll_path"),
    ],
)
def test_a_bad_providers_file_is_refused_naming_the_file(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as error:
        load_providers(path)
    assert str(path) in str(error.value)


def test_without_a_file_the_api_variables_describe_the_one_provider(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CHATBATCH_PROVIDERS", raising=False)
    monkeypatch.setenv("CHATBATCH_API_KEY", "sk-only-one-key")
    settings = Settings(api_base="http://127.0.0.1:9/v1", api_mode="sync")
    table = provider_table(settings)
    only = table.route("any-model")
    assert only is not None and only.name == DEFAULT_NAME and only.mode == "sync"
    assert table.keys() == ["sk-only-one-key"] and table.source is None


def test_every_providers_key_is_scrubbed_in_any_spelling() -> None:
    from chatbatch.redaction import REDACTED, Redactor

    redact = Redactor("sk-first-key-1", None, "sk-second-key-2")
    echoed = 'a sk-first-key-1 b {"k": "sk\\u002dsecond-key-2"} c sk%2Dsecond-key-2'
    assert redact(echoed) == f'a {REDACTED} b {{"k": "{REDACTED}"}} c {REDACTED}'

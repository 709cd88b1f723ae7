"""Settings: defaults (the database in the user's data directory), a .env file under the
environment, the GeekAI key alias, secrecy, and timeout orderings checked up front."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy.engine import make_url

from chatbatch.settings import Settings, data_dir, env_file_used, setting_origins, sqlite_url


def test_defaults_are_the_embedded_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("CHATBATCH_DATABASE_URL", "CHATBATCH_BROKER_URL", "CHATBATCH_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    settings = Settings()
    assert settings.is_embedded and settings.broker_url is None
    assert settings.api_base == "https://geekai.co/api/v1"
    assert settings.result_retention_seconds == 7 * 24 * 3600


def test_geekai_key_is_accepted_and_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHATBATCH_API_KEY", raising=False)
    monkeypatch.setenv("GEEKAI_API_KEY", "sk-very-secret")
    settings = Settings()
    assert settings.api_key_value() == "sk-very-secret"
    assert "sk-very-secret" not in repr(settings) and "sk-very-secret" not in str(settings)


def test_a_lease_shorter_than_an_http_call_is_refused() -> None:
    with pytest.raises(ValidationError, match="CHATBATCH_LEASE_SECONDS"):
        Settings(lease_seconds=15, connect_timeout=2, read_timeout=5)
    Settings(lease_seconds=18, connect_timeout=2, read_timeout=5)


def test_sync_mode_stretches_the_default_lease_past_a_generation_but_keeps_a_chosen_one() -> None:
    assert Settings().lease_seconds == 300  # background mode: the calls are short
    sync = Settings(api_mode="sync", sync_read_timeout=600, connect_timeout=10, read_timeout=60)
    assert sync.worst_call_seconds == 670 and sync.lease_seconds > 670 + 5
    with pytest.raises(ValidationError, match="sync read"):
        Settings(api_mode="sync", lease_seconds=300)
    Settings(api_mode="sync", sync_read_timeout=100, lease_seconds=300)


def test_an_unknown_api_mode_is_refused() -> None:
    with pytest.raises(ValidationError, match="api_mode"):
        Settings(api_mode="stream")


@pytest.mark.skipif(sys.platform != "linux", reason="platformdirs reads XDG_DATA_HOME on Linux")
def test_the_default_database_is_in_the_user_data_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("CHATBATCH_DATABASE_URL", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    settings = Settings()
    assert settings.database_url == f"sqlite:///{tmp_path}/data/chatbatch/chatbatch.db"
    assert data_dir() == tmp_path / "data" / "chatbatch"
    assert settings.uses_default_database and settings.is_embedded
    assert not (tmp_path / "data").exists()  # created with the engine, not by reading settings


def test_an_explicit_database_url_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATBATCH_DATABASE_URL", "sqlite:///chatbatch.db")
    settings = Settings()
    assert settings.database_url == "sqlite:///chatbatch.db"
    assert not settings.uses_default_database


def test_an_unusual_data_directory_still_makes_a_url_that_reads_back() -> None:
    path = Path("/tmp/50%41 off/App Support/chatbatch.db")
    assert make_url(sqlite_url(path)).database == str(path)


def test_dotenv_in_the_working_directory_is_read_and_the_environment_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for key in (
        "CHATBATCH_QUEUE",
        "CHATBATCH_DATABASE_URL",
        "CHATBATCH_API_KEY",
        "CHATBATCH_CHUNK_SIZE",
    ):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.delenv("GEEKAI_API_KEY", raising=False)
    (tmp_path / ".env").write_text(
        "CHATBATCH_QUEUE=from-dotenv\nCHATBATCH_CONCURRENCY=3\n"
        "CHATBATCH_DATABASE_URL=sqlite:///dotenv.db\nGEEKAI_API_KEY=sk-from-dotenv-file\n"
        "UNRELATED=1\n"
    )
    monkeypatch.setenv("CHATBATCH_CONCURRENCY", "5")
    monkeypatch.chdir(tmp_path)
    settings = Settings()
    assert (settings.queue, settings.concurrency) == ("from-dotenv", 5)
    assert settings.api_key_value() == "sk-from-dotenv-file"
    assert settings.database_url == "sqlite:///dotenv.db" and not settings.uses_default_database
    assert env_file_used() == tmp_path / ".env"
    origins = setting_origins()
    assert (origins["queue"], origins["api_key"], origins["database_url"]) == (".env",) * 3
    assert (origins["concurrency"], origins["chunk_size"]) == ("environment", "default")


def test_without_dotenv_nothing_is_read_from_a_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("CHATBATCH_QUEUE", raising=False)
    monkeypatch.chdir(tmp_path)
    assert env_file_used() is None
    assert Settings().queue == "chatbatch" and setting_origins()["queue"] == "default"

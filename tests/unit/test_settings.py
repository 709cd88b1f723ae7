"""Settings: defaults, the GeekAI key alias, secrecy, and timeout orderings checked up front."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from chatbatch.settings import Settings


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

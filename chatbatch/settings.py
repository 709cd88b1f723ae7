"""Settings from the environment (``CHATBATCH_*``), read lazily so ``--help`` needs nothing."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from chatbatch.errors import ConfigError
from chatbatch.ratelimits import SETTING as RATE_LIMITS_SETTING
from chatbatch.ratelimits import parse_limits
from chatbatch.redaction import KeyProblem, check_key

DEFAULT_SQLITE_URL = "sqlite:///chatbatch.db"
LEASE_MARGIN_SECONDS = 5.0  # slack between the last start of an HTTP call and the lease's end


class Settings(BaseSettings):
    """Every knob of chatbatch; the README's configuration table mirrors this class."""

    model_config = SettingsConfigDict(env_prefix="CHATBATCH_", extra="ignore")

    database_url: str = DEFAULT_SQLITE_URL
    broker_url: str | None = None
    queue: str = "chatbatch"
    api_base: str = "https://geekai.co/api/v1"
    api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("CHATBATCH_API_KEY", "GEEKAI_API_KEY")
    )
    result_retention_seconds: float = 7 * 24 * 3600

    # How much work one worker process does at once.
    concurrency: int = Field(default=16, ge=1, le=1024)
    chunk_size: int = Field(default=64, ge=1, le=5000)
    lease_seconds: float = Field(default=300.0, gt=0)
    tick_seconds: float = Field(default=1.0, gt=0)
    task_budget_seconds: float = Field(default=20.0, gt=0)
    # Per-model limits shared by all workers, e.g. "gpt-4o-mini=500/32, *=1000" (RPM[/in flight]).
    rate_limits: str = ""

    # Retry and polling policy.
    max_attempts: int = Field(default=6, ge=1)
    retry_base_seconds: float = Field(default=1.0, ge=0)
    retry_max_seconds: float = Field(default=300.0, ge=0)
    poll_first_seconds: float = Field(default=1.0, ge=0)
    poll_factor: float = Field(default=1.5, ge=1.0)
    poll_max_seconds: float = Field(default=60.0, gt=0)
    # Average GETs per result the learned poll schedule may spend; None: keep the fixed one.
    poll_gets_per_result: float | None = Field(default=2.0, ge=1.0)
    expiry_margin_seconds: float = Field(default=60.0, ge=0)
    not_found_grace_seconds: float = Field(default=600.0, ge=0)

    # HTTP timeouts (seconds).
    connect_timeout: float = Field(default=10.0, gt=0)
    read_timeout: float = Field(default=60.0, gt=0)
    # A provider answer longer than this is unusable (bad_response), never read whole.
    max_response_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)

    # Input limits.
    max_line_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)

    # Price table (TOML) that `usage` and `status` turn usage into cost with; `--prices` wins.
    prices: Path | None = None

    @field_validator("rate_limits")
    @classmethod
    def _check_rate_limits(cls, value: str) -> str:
        try:
            parse_limits(value)
        except ValueError as exc:  # the error line already names the setting
            raise ValueError(str(exc).removeprefix(f"{RATE_LIMITS_SETTING}: ")) from None
        return value

    @model_validator(mode="after")
    def _check_orderings(self) -> Settings:
        needed = self.worst_call_seconds + LEASE_MARGIN_SECONDS
        if self.lease_seconds <= needed:
            raise ValueError(
                f"CHATBATCH_LEASE_SECONDS ({self.lease_seconds}) must exceed the longest HTTP call "
                f"(connect + 2 x read timeout) plus {LEASE_MARGIN_SECONDS:g} s = {needed:g}, "
                "or a live request could be taken over by another worker"
            )
        return self

    @property
    def worst_call_seconds(self) -> float:
        """The longest one HTTP call can take before its timeouts fire."""
        return self.connect_timeout + 2 * self.read_timeout

    @property
    def expiry_warning_seconds(self) -> float:
        """``status`` warns about submitted requests this close to their provider deadline: the
        last 2/7 of the retention window (2 of 7 days), so a stopped fleet is noticed in time."""
        return self.result_retention_seconds * 2 / 7

    @property
    def is_embedded(self) -> bool:
        """True when running on the default SQLite file with no broker."""
        return self.database_url.startswith("sqlite")

    def api_key_value(self) -> str | None:
        """The raw key, for the Authorization header only."""
        return self.api_key.get_secret_value() if self.api_key else None

    def usable_api_key(self) -> str:
        """The key, checked before any work starts: ConfigError when it is missing or cannot
        be used or scrubbed safely (empty, short, holding whitespace)."""
        key = self.api_key_value()
        if key is None:
            raise ConfigError("no API key: set CHATBATCH_API_KEY (or GEEKAI_API_KEY)")
        try:
            return check_key(key, name="the API key (CHATBATCH_API_KEY or GEEKAI_API_KEY)")
        except KeyProblem as exc:
            raise ConfigError(str(exc)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once on first use."""
    return Settings()

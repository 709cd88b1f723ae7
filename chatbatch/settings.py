"""Settings from the environment (``CHATBATCH_*``) and a ``.env`` file in the working directory
(the environment wins), read lazily so ``--help`` needs nothing."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    EnvSettingsSource,
    SettingsConfigDict,
)
from sqlalchemy.engine import URL

from chatbatch.errors import ConfigError
from chatbatch.redaction import KeyProblem, check_key
from chatbatch.rules.ratelimits import SETTING as RATE_LIMITS_SETTING
from chatbatch.rules.ratelimits import parse_limits

APP_NAME = "chatbatch"
DATABASE_FILE = "chatbatch.db"  # the embedded database's file name, in the user's data directory
ENV_FILE = ".env"  # read from the working directory; the environment wins over it
LEASE_MARGIN_SECONDS = 5.0  # slack between the last start of an HTTP call and the lease's end
DEFAULT_LEASE_SECONDS = 300.0  # raised past the longest call when a long sync POST needs it


def data_dir() -> Path:
    """The user's data directory for chatbatch (platformdirs; ``$XDG_DATA_HOME/chatbatch`` on
    Linux), so every command finds the same database whatever directory it runs in."""
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def default_database_path() -> Path:
    """The embedded database's file when CHATBATCH_DATABASE_URL is not set."""
    return data_dir() / DATABASE_FILE


def default_database_url() -> str:
    """The SQLite URL of the default database (its directory is created with the engine)."""
    return sqlite_url(default_database_path())


def sqlite_url(path: Path) -> str:
    """A SQLite URL for ``path``, quoted so any file name reads back the same."""
    return URL.create("sqlite", database=path.as_posix()).render_as_string(hide_password=False)


class Settings(BaseSettings):
    """Every knob of chatbatch; the README's configuration table mirrors this class."""

    model_config = SettingsConfigDict(
        env_prefix="CHATBATCH_", extra="ignore", env_file=ENV_FILE, env_file_encoding="utf-8"
    )

    database_url: str = Field(default_factory=default_database_url)
    broker_url: str | None = None
    queue: str = "chatbatch"
    api_base: str = "https://geekai.co/api/v1"
    api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("CHATBATCH_API_KEY", "GEEKAI_API_KEY")
    )
    # background: GeekAI's submit-then-poll; sync: a plain POST whose answer is the result.
    api_mode: Literal["background", "sync"] = "background"
    result_retention_seconds: float = 7 * 24 * 3600

    # How much work one worker process does at once.
    concurrency: int = Field(default=16, ge=1, le=1024)
    chunk_size: int = Field(default=64, ge=1, le=5000)
    lease_seconds: float = Field(default=DEFAULT_LEASE_SECONDS, gt=0)
    tick_seconds: float = Field(default=1.0, gt=0)
    task_budget_seconds: float = Field(default=20.0, gt=0)
    # PostgreSQL connections one process opens at most (its threads share them; writes are short).
    db_connections: int = Field(default=4, ge=2, le=64)
    # A running batch with due work and no task id or answer for this long is stalled.
    stall_seconds: float = Field(default=900.0, gt=0)
    # Each worker process beats this often; 3 missed beats and its claims are taken over.
    heartbeat_seconds: float = Field(default=5.0, gt=0)
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
    # In sync mode a POST waits while the model generates: its read timeout.
    sync_read_timeout: float = Field(default=600.0, gt=0)
    # A provider answer longer than this is unusable (bad_response), never read whole.
    max_response_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)

    # Input limits.
    max_line_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)

    # `chatbatch serve` on an address other than loopback asks for this token (bearer or login).
    dashboard_token: SecretStr | None = None

    # Price table (TOML) that `usage` and `status` turn usage into cost with; `--prices` wins.
    prices: Path | None = None
    # Providers file (TOML): several providers, each serving some models; `--providers` wins.
    providers: Path | None = None

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
        if "lease_seconds" not in self.model_fields_set and self.lease_seconds <= needed:
            self.lease_seconds = needed + DEFAULT_LEASE_SECONDS / 5  # the default, stretched
        if self.lease_seconds <= needed:
            raise ValueError(
                f"CHATBATCH_LEASE_SECONDS ({self.lease_seconds}) must exceed the longest HTTP call "
                f"({self.worst_call_text}) plus {LEASE_MARGIN_SECONDS:g} s = {needed:g}, "
                "or a live request could be taken over by another worker"
            )
        return self

    @property
    def worst_call_seconds(self) -> float:
        """The longest one HTTP call can take before its timeouts fire (``worker.provider``'s
        deadlines): a sync POST waits for the whole generation, then reads the answer."""
        background = self.connect_timeout + 2 * self.read_timeout
        if not self.may_wait_for_answers:
            return background
        return max(background, self.connect_timeout + self.sync_read_timeout + self.read_timeout)

    @property
    def may_wait_for_answers(self) -> bool:
        """Whether some POST may stay open for a whole generation: sync mode, or a providers
        file (which may name sync providers; it is read where it is used)."""
        return self.api_mode == "sync" or self.providers is not None

    @property
    def worst_call_text(self) -> str:
        """How ``worst_call_seconds`` is made up, for an error message."""
        if self.may_wait_for_answers:
            return "connect + sync read + read timeout"
        return "connect + 2 x read timeout"

    @property
    def expiry_warning_seconds(self) -> float:
        """``status`` warns about submitted requests this close to their provider deadline: the
        last 2/7 of the retention window (2 of 7 days), so a stopped fleet is noticed in time."""
        return self.result_retention_seconds * 2 / 7

    @property
    def is_embedded(self) -> bool:
        """True when running on the default SQLite file with no broker."""
        return self.database_url.startswith("sqlite")

    @property
    def uses_default_database(self) -> bool:
        """True when no environment variable or .env line chose the database."""
        return "database_url" not in self.model_fields_set

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


def env_file_used() -> Path | None:
    """The ``.env`` file settings are read from (in the working directory), if there is one."""
    path = Path(ENV_FILE)
    return path.absolute() if path.is_file() else None


def setting_origins() -> dict[str, str]:
    """Where each setting's value comes from: ``environment``, ``.env`` or ``default``, in
    the order pydantic-settings applies them (the environment wins over .env)."""
    from_env = _given_names(EnvSettingsSource(Settings)())
    from_dotenv = _given_names(DotEnvSettingsSource(Settings)())
    origins = {}
    for name in Settings.model_fields:
        names = _accepted_names(name)
        if names & from_env:
            origins[name] = "environment"
        elif names & from_dotenv:
            origins[name] = ".env"
        else:
            origins[name] = "default"
    return origins


def variable_names(name: str) -> list[str]:
    """The environment variables that set the field ``name`` (upper case, as documented)."""
    info = Settings.model_fields[name]
    aliases = info.validation_alias
    if isinstance(aliases, AliasChoices):
        return [choice for choice in aliases.choices if isinstance(choice, str)]
    if isinstance(aliases, str):
        return [aliases]
    return [f"CHATBATCH_{name.upper()}"]


def _accepted_names(name: str) -> set[str]:
    """The keys a settings source may report the field under: its name or an alias."""
    return {name.lower(), *(alias.lower() for alias in variable_names(name))}


def _given_names(values: dict[str, object]) -> set[str]:
    """The keys a settings source found, lower-cased (names are not case-sensitive)."""
    return {key.lower() for key in values}


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once on first use."""
    return Settings()

"""Which provider serves which model: the providers file (``CHATBATCH_PROVIDERS``), or the one
provider today's variables describe.

A providers file is TOML, one ``[[provider]]`` table each::

    [[provider]]
    name = "geekai"
    base_url = "https://geekai.co/api/v1"
    key_env = "GEEKAI_API_KEY"      # the *name* of the variable holding the key
    mode = "background"             # or "sync"
    models = ["gpt-4o*", "deepseek-chat"]
    rate_limits = "gpt-4o-mini=500/32"   # optional, CHATBATCH_RATE_LIMITS' syntax
    poll_path = "chat/{id}"              # optional

A model goes to the provider whose ``models`` entry names it most specifically (an exact name,
else the longest matching glob, as in the price table). Keys never live in the file, nor in
the database: only the name of the variable that holds each.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from chatbatch.errors import ConfigError
from chatbatch.redaction import KeyProblem, check_key
from chatbatch.rules.model_names import most_specific
from chatbatch.rules.pricing import validation_problems
from chatbatch.rules.ratelimits import ModelLimit, parse_limits
from chatbatch.settings import Settings

DEFAULT_NAME = "default"  # the one provider CHATBATCH_API_BASE and CHATBATCH_API_KEY describe
NAME_CHARS = 64  # the width of the requests.provider column


class ProviderConfig(BaseModel):
    """One provider: where it is, how it is spoken to, what it serves."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=NAME_CHARS, pattern=r"^[A-Za-z0-9_.-]+$")
    base_url: str = Field(min_length=1, pattern=r"^https?://")
    key_env: str = Field(min_length=1, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    mode: Literal["background", "sync"] = "background"
    models: list[str] = Field(min_length=1)
    rate_limits: str = ""
    poll_path: str = Field(default="chat/{id}", pattern=r"\{id\}")

    @field_validator("rate_limits")
    @classmethod
    def _check_rate_limits(cls, value: str) -> str:
        parse_limits(value)  # its ValueError names the bad entry
        return value

    def key(self) -> str | None:
        """The key, read from the environment variable the file names."""
        return os.environ.get(self.key_env)

    def usable_key(self) -> str:
        """The key, checked before any work starts (ConfigError naming the variable)."""
        key = self.key()
        if key is None:
            raise ConfigError(f"provider {self.name!r}: {self.key_env} is not set")
        try:
            return check_key(key, name=f"{self.key_env} (provider {self.name!r})")
        except KeyProblem as exc:
            raise ConfigError(str(exc)) from None


class _ProvidersFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: list[ProviderConfig] = Field(min_length=1)


@dataclass(frozen=True)
class ProviderTable:
    """Every provider of this deployment, and which serves which model."""

    providers: tuple[ProviderConfig, ...]
    source: Path | None = None  # the providers file
    settings: Settings | None = None  # without a file: the settings holding the one key

    def key(self, provider: ProviderConfig) -> str | None:
        """``provider``'s key: from the variable the file names, else the configured one."""
        if self.source is None and self.settings is not None:
            return self.settings.api_key_value()
        return provider.key()

    def usable_key(self, provider: ProviderConfig) -> str:
        """``provider``'s key, checked before any work starts (ConfigError saying why not)."""
        if self.source is None and self.settings is not None:
            return self.settings.usable_api_key()
        return provider.usable_key()

    def check_keys(self) -> None:
        """ConfigError unless every provider has a usable key: checked before any work."""
        for provider in self.providers:
            self.usable_key(provider)

    def keys(self) -> list[str]:
        """Every key that is set, to keep out of logs and stored answers."""
        return [key for p in self.providers if (key := self.key(p))]

    def route(self, model: str) -> ProviderConfig | None:
        """The provider that serves ``model`` (None: none does)."""
        owners = {name: p for p in self.providers for name in p.models}
        name = most_specific(model, owners)
        return None if name is None else owners[name]

    def named(self, name: str | None) -> ProviderConfig | None:
        """The provider called ``name`` (None when there is none such)."""
        return next((p for p in self.providers if p.name == name), None)

    def rate_limits(self) -> Mapping[str, ModelLimit]:
        """Every provider's own limits, by model pattern."""
        return {model: limit for p in self.providers for model, limit in _own(p).items()}


def _own(provider: ProviderConfig) -> dict[str, ModelLimit]:
    limits = parse_limits(provider.rate_limits)
    wildcard = limits.pop("*", None)  # "*" in a provider's limits: every model it serves
    if wildcard is not None:
        for pattern in provider.models:
            limits.setdefault(pattern, wildcard)
    return limits


def provider_table(settings: Settings, path: Path | None = None) -> ProviderTable:
    """The providers file at ``path`` (or ``CHATBATCH_PROVIDERS``), else the one provider
    ``CHATBATCH_API_BASE``, ``CHATBATCH_API_KEY`` and ``CHATBATCH_API_MODE`` describe."""
    path = path or settings.providers
    if path is not None:
        return load_providers(path)
    only = default_provider(settings.api_base, settings.api_mode)
    return ProviderTable((only,), settings=settings)


def default_provider(base_url: str = "", mode: str = "background") -> ProviderConfig:
    """The one provider of a deployment without a providers file: every model, its key in the
    settings (``CHATBATCH_API_KEY`` or ``GEEKAI_API_KEY``)."""
    return ProviderConfig.model_construct(
        name=DEFAULT_NAME,
        base_url=base_url,
        key_env="CHATBATCH_API_KEY",
        mode=mode,
        models=["*"],
        rate_limits="",
        poll_path="chat/{id}",
    )


def load_providers(path: Path) -> ProviderTable:
    """Read and check a providers file; a ConfigError names the file and what is wrong."""
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"providers file {path}: cannot read it: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"providers file {path}: not valid TOML: {exc}") from None
    try:
        parsed = _ProvidersFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"providers file {path}: {validation_problems(exc)}") from None
    names = [p.name for p in parsed.provider]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"providers file {path}: provider name(s) given twice: {twice}")
    return ProviderTable(tuple(parsed.provider), path)

"""``--simulate``: run and process against the built-in GeekAI simulator, in this process.

The simulator's tasks are kept in a file beside the database, so a batch started with
``--simulate`` can be continued by a later ``process --simulate`` (or worked by two at once):
any simulator instance answers any earlier one's tasks.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from pathlib import Path

from pydantic import SecretStr
from sqlalchemy.engine import make_url

from chatbatch.settings import Settings, data_dir
from chatbatch.store.db import masked_url, normalise_url
from chatbatch.store.dialect import sqlite_file

SIMULATOR_KEY = "sk-simulator"  # the simulator's default key; not a secret
STORE_SUFFIX = ".simulator"


def simulator_store(settings: Settings) -> Path | None:
    """Where the simulator keeps its tasks for this database: beside a SQLite file, else in the
    data directory under a name taken from the database URL (None for an in-memory SQLite)."""
    url = make_url(normalise_url(settings.database_url))
    if url.get_backend_name() == "sqlite":
        database = sqlite_file(url)
        return None if database is None else Path(database + STORE_SUFFIX)
    name = hashlib.sha256(masked_url(url).encode()).hexdigest()[:16]
    return data_dir() / "simulator" / f"{name}.sqlite3"


@contextlib.contextmanager
def simulated(config: Settings) -> Iterator[Settings]:
    """``config`` aimed at a simulator running in this process while the context lasts."""
    from simulator.config import SimConfig
    from simulator.embedded import running_simulator

    retention = SimConfig(retention_seconds=config.result_retention_seconds)
    with running_simulator(retention, store=simulator_store(config)) as sim:
        yield config.model_copy(
            update={
                "api_base": sim.base_url,
                "api_key": SecretStr(SIMULATOR_KEY),
                "providers": None,
            }
        )

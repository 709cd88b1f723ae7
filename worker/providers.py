"""Every provider of the deployment, one ``Provider`` each (its protocol, key, connections):
a submission goes to the provider serving its model, a poll to the one that accepted the task.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from chatbatch.providers import DEFAULT_NAME, ProviderConfig, ProviderTable, default_provider
from chatbatch.rules.outcomes import Outcome, Rejected
from chatbatch.settings import Settings
from chatbatch.store import liveness
from worker.protocols import protocol_for
from worker.provider import Provider

NO_PROVIDER = "no_provider"
Deliver = Callable[[int, "Outcome"], None]


@dataclass(frozen=True)
class Call:
    """One call of a chunk: the provider it goes to (None: no provider serves its model), and
    the body to POST or the task id to GET."""

    provider: str | None
    payload: str


class ProviderSet:
    """The providers by name; ``start`` sends each call to its own."""

    def __init__(self, providers: dict[str, Provider], table: ProviderTable) -> None:
        self._providers = providers
        self._table = table

    @classmethod
    def from_settings(cls, settings: Settings, table: ProviderTable) -> ProviderSet:
        """One client per provider of ``table``, each with a usable key (ConfigError if not)."""
        keys = table.keys()
        clients = {
            config.name: _client(settings, config, table.usable_key(config), keys)
            for config in table.providers
        }
        return cls(clients, table)

    @classmethod
    def single(cls, provider: Provider) -> ProviderSet:
        """Just ``provider``, serving every model (tests, and engines built around one)."""
        return cls({DEFAULT_NAME: provider}, ProviderTable((default_provider(),)))

    def route(self, model: str) -> str | None:
        """The name of the provider serving ``model`` (None: none does)."""
        config = self._table.route(model)
        return None if config is None else config.name

    def poll_route(self, provider: str | None, model: str) -> str | None:
        """Where a task is polled: the provider that accepted it, else the one serving its
        model now (rows stored before providers were recorded)."""
        return provider if provider in self._providers else self.route(model)

    @property
    def waits_for_answers(self) -> bool:
        """Whether some provider's POSTs stay open while the model generates (sync mode)."""
        return any(p.waits_for_answers for p in self._providers.values())

    def start(
        self,
        submits: Sequence[Call],
        polls: Sequence[Call],
        deliver: Deliver,
        *,
        send_by: float | None = None,
    ) -> Future[None]:
        """Send every call to its provider, all at once; ``deliver(index, outcome)`` as each
        lands (POSTs indexed first, then GETs; one not begun by ``send_by`` is not sent, as
        ``Provider.start``). Done when all are."""
        groups: dict[str, tuple[list[int], list[int]]] = {}
        for index, call in enumerate([*submits, *polls]):
            if call.provider not in self._providers:
                deliver(index, _unserved())
                continue
            posts, gets = groups.setdefault(call.provider, ([], []))
            (posts if index < len(submits) else gets).append(index)
        calls = [*submits, *polls]
        started = [
            self._start_group(name, posts + gets, len(posts), calls, deliver, send_by)
            for name, (posts, gets) in groups.items()
        ]
        return _all_done(started)

    def _start_group(
        self,
        name: str,
        order: list[int],
        posts: int,
        calls: list[Call],
        deliver: Deliver,
        send_by: float | None,
    ) -> Future[None]:
        """Start one provider's share of the calls (``order``: their indexes, POSTs first)."""
        payloads = [calls[i].payload for i in order]
        return self._providers[name].start(
            payloads[:posts],
            payloads[posts:],
            lambda local, outcome: deliver(order[local], outcome),
            send_by=send_by,
        )

    def stop(self, grace: float) -> None:
        """Send nothing more, on every provider (see ``Provider.stop``)."""
        for provider in self._providers.values():
            provider.stop(grace)

    def models(self) -> object | None:
        """Every provider's model listing as one (``{"data": [...]}``), each keeping only the
        models it serves (its published limits are its own); None if none has one."""
        entries: list[object] = []
        for name, provider in self._providers.items():
            listing = provider.models()
            data = listing.get("data") if isinstance(listing, dict) else None
            entries += (
                [e for e in data if self._lists_own(name, e)] if isinstance(data, list) else []
            )
        return {"data": entries} if entries else None

    def _lists_own(self, name: str, entry: object) -> bool:
        """Whether ``entry`` of provider ``name``'s listing is a model that provider serves."""
        model = entry.get("id") if isinstance(entry, dict) else None
        return isinstance(model, str) and self.route(model) == name

    def close(self) -> None:
        """Close every provider's connections."""
        for provider in self._providers.values():
            provider.close()


def _client(settings: Settings, config: ProviderConfig, key: str, keys: list[str]) -> Provider:
    """The HTTP client of one provider."""
    return Provider(
        base_url=config.base_url,
        api_key=key,
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        max_connections=settings.concurrency,
        max_response_bytes=settings.max_response_bytes,
        retry_cap=settings.retry_max_seconds,
        protocol=protocol_for(config.mode),
        sync_read_timeout=settings.sync_read_timeout,
        poll_path=config.poll_path,
        other_keys=[k for k in keys if k != key],
        send_window=send_window(settings),
    )


def send_window(settings: Settings) -> float:
    """How long a claimed POST may take to begin, to connect, and to have its bytes
    acknowledged, each: a third of the time after which another worker may take its request
    over, so that a host cut off from the network never delivers it after that (a partition
    that heals once the commit of a claim, or a POST's bytes, were held up in it)."""
    return liveness.takeover_seconds(settings.heartbeat_seconds, settings.lease_seconds) / 3


def _unserved() -> Outcome:
    """A call for a model no provider serves (the providers file changed since the load)."""
    return Rejected(NO_PROVIDER, "no provider in the providers file serves this model")


def _all_done(futures: list[Future[None]]) -> Future[None]:
    """A future done once every one of ``futures`` is, with the first error if any failed."""
    done: Future[None] = Future()
    remaining = len(futures)
    lock = threading.Lock()

    def one_done(future: Future[None]) -> None:
        nonlocal remaining
        error = future.exception()
        with lock:
            remaining -= 1
            if done.done():
                return
            if error is not None:
                done.set_exception(error)
            elif remaining == 0:
                done.set_result(None)

    if not futures:
        done.set_result(None)
    for future in futures:
        future.add_done_callback(one_done)
    return done

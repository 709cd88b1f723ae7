"""How chatbatch speaks to a provider: one module per request protocol, each one ``Protocol``.

A protocol says what a POST carries and where it goes, how its answer reads, and how a task
it left behind is polled. ``worker.provider`` does the HTTP for every protocol alike (the size
cap, the deadlines, the key scrubbed), so a new protocol is a module of rules and its tests.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from chatbatch.rules.outcomes import Outcome

# classify(status, headers, text, retry_cap=…): never raises; an unusable answer is an outcome.
Classifier = Callable[..., Outcome]


@dataclass(frozen=True)
class Protocol:
    """One way of asking for a chat completion and getting its answer back.

    ``prepare`` turns a stored request body into the JSON sent; ``waits_for_answer`` is True
    when the POST stays open while the model generates (it takes the long, synchronous read
    timeout, and a result comes back in one step); ``poll_path`` formats with ``id``.
    """

    mode: str
    prepare: Callable[[dict[str, Any]], Mapping[str, Any]]
    classify_submit: Classifier
    classify_poll: Classifier
    waits_for_answer: bool
    submit_path: str = "chat/completions"
    poll_path: str = "chat/{id}"


def protocol_for(mode: str) -> Protocol:
    """The protocol of ``mode`` (``background`` or ``sync``, as ``CHATBATCH_API_MODE`` says)."""
    from worker.protocols import background, sync

    protocols = {background.PROTOCOL.mode: background.PROTOCOL, sync.PROTOCOL.mode: sync.PROTOCOL}
    try:
        return protocols[mode]
    except KeyError:
        raise ValueError(f"unknown API mode {mode!r}: use background or sync") from None

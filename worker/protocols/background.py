"""GeekAI's background mode: the POST carries ``"background": true`` and is answered with a
task id at once; ``GET chat/{id}`` is polled until the task has succeeded or failed. A provider
that answers the POST with the completion itself is taken at its word (``Completed``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from worker.classify import classify_poll, classify_submit
from worker.protocols import Protocol


def _in_background(body: dict[str, Any]) -> Mapping[str, Any]:
    return {**body, "background": True}


PROTOCOL = Protocol(
    mode="background",
    prepare=_in_background,
    classify_submit=classify_submit,
    classify_poll=classify_poll,
    waits_for_answer=False,
)

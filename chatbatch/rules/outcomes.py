"""The closed set of things a provider call can come to; ``worker.provider`` produces them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# The code of an answer we could not use (not JSON, a bad id, too large…).
BAD_RESPONSE = "bad_response"


@dataclass(frozen=True)
class Accepted:
    """The provider took the request and gave a task id to poll."""

    remote_id: str
    remote_status: str = "pending"
    expires_at: datetime | None = None


@dataclass(frozen=True)
class Pending:
    """The task is not finished; ``known`` is False for a status string we do not recognise."""

    remote_status: str
    known: bool = True


@dataclass(frozen=True)
class Completed:
    """The finished completion: the raw text as the provider sent it, and its parsed body;
    ``remote_id`` names it when it answered the POST itself (the answer's id or request id)."""

    raw: str
    body: dict[str, Any] = field(repr=False)
    http_status: int = 200
    remote_id: str | None = None


@dataclass(frozen=True)
class TaskFailed:
    """The provider ran the task and reports it failed: terminal."""

    code: str
    message: str
    raw: str | None = None
    http_status: int | None = 200


@dataclass(frozen=True)
class Retryable:
    """Worth trying again later; ``maybe_accepted`` when a POST may have reached the provider."""

    code: str
    message: str
    retry_after: float | None = None
    maybe_accepted: bool = False
    http_status: int | None = None

    @property
    def rate_limited(self) -> bool:
        """A 429 says "slow down", not "this request is bad": it uses up no attempt."""
        return self.http_status == 429

    @property
    def unusable(self) -> bool:
        """The provider answered, but with something we cannot use."""
        return self.code == BAD_RESPONSE


@dataclass(frozen=True)
class Rejected:
    """The provider refused this request (400/404/413…): retrying cannot help."""

    code: str
    message: str
    http_status: int | None = None
    raw: str | None = None


@dataclass(frozen=True)
class AccountBlocked:
    """401/402/403: every request of the batch would fail the same way, so the batch pauses."""

    code: str
    message: str
    http_status: int


@dataclass(frozen=True)
class NotFound:
    """A GET for a task id the provider does not know (yet, or any more)."""

    code: str = "not_found"
    message: str = "task id not found"


@dataclass(frozen=True)
class NotSent:
    """The call never left this process (it was stopping): nothing reached the provider."""

    code: str = "not_sent"
    message: str = "stopped before it was sent"


Outcome = (
    Accepted
    | Pending
    | Completed
    | TaskFailed
    | Retryable
    | Rejected
    | AccountBlocked
    | NotFound
    | NotSent
)

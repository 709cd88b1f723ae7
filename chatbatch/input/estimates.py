"""Estimates before anything is sent: prompt tokens by a documented rule of thumb, and what they
would cost as input. No tokenizer (nothing to download, same answer for every model).

The rule: a token is about 4 characters of English text, so a request's prompt is estimated as
its message text's characters divided by 4, rounded up. Real counts differ by model, language
and message overhead; use the figure to size a job, not to bill it. Output is estimated from
each request's ``max_tokens`` (an upper bound) or, where none is set, from the model's average
completion tokens in earlier batches (``estimated_output``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chatbatch.rules.pricing import Cost, PriceTable, Usage, cost_by_model

CHARS_PER_TOKEN = 4


def message_chars(body: Mapping[str, Any]) -> int:
    """Characters of text in the messages of a chat body: string contents, and the ``text`` of
    content parts (images and other parts count nothing)."""
    chars = 0
    messages = body.get("messages")
    if not isinstance(messages, list):
        return 0
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            chars += sum(
                len(part["text"])
                for part in content
                if isinstance(part, dict) and isinstance(part.get("text"), str)
            )
    return chars


def estimated_prompt_tokens(body: Mapping[str, Any]) -> int:
    """The estimated prompt tokens of one request: message characters / 4, rounded up."""
    return -(-message_chars(body) // CHARS_PER_TOKEN)


def estimated_input_cost(tokens_by_model: Mapping[str, int], prices: PriceTable) -> Cost:
    """What ``tokens_by_model`` prompt tokens would cost at each model's (uncached) input price;
    unknown (``amount`` None) when the table does not price a model."""
    usage = {model: Usage(prompt_tokens=tokens) for model, tokens in tokens_by_model.items()}
    return cost_by_model(usage, prices)


def requested_output_tokens(body: Mapping[str, Any]) -> int | None:
    """The most output tokens a request asks for: ``max_tokens`` (or ``max_completion_tokens``)
    times ``n`` answers; None when it sets no limit."""
    limit = body.get("max_tokens", body.get("max_completion_tokens"))
    if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
        return None
    n = body.get("n", 1)
    return limit * (n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1)


@dataclass
class OutputTally:
    """One model's requests as a dry run counts them for output: the tokens their ``max_tokens``
    allow, and how many set no limit."""

    limited_tokens: int = 0
    unlimited: int = 0

    def add(self, body: Mapping[str, Any]) -> None:
        """Count one request."""
        limit = requested_output_tokens(body)
        if limit is None:
            self.unlimited += 1
        else:
            self.limited_tokens += limit


@dataclass(frozen=True)
class OutputEstimate:
    """A model's estimated output tokens (None: unknown) and what the figure rests on."""

    tokens: int | None
    basis: str


def estimated_output(tally: OutputTally, average: tuple[float, int] | None) -> OutputEstimate:
    """Output tokens for one model: ``max_tokens`` where requests set it (an upper bound), and
    for the rest the model's ``average`` completion tokens over that many earlier answers;
    unknown when some requests set no limit and no earlier answer exists."""
    parts = []
    if tally.limited_tokens:
        parts.append("max_tokens (an upper bound)")
    if not tally.unlimited:
        return OutputEstimate(tally.limited_tokens, "; ".join(parts))
    if average is None:
        unknown = f"{tally.unlimited:,} request(s) set no max_tokens and no earlier answer exists"
        return OutputEstimate(None, unknown)
    mean, answers = average
    parts.append(f"the average of {answers:,} earlier answer(s), {mean:.1f} tokens each")
    tokens = tally.limited_tokens + math.ceil(tally.unlimited * mean)
    return OutputEstimate(tokens, "; ".join(parts))


def estimated_output_cost(tokens_by_model: Mapping[str, int], prices: PriceTable) -> Cost:
    """What ``tokens_by_model`` output tokens would cost at each model's output price."""
    usage = {model: Usage(completion_tokens=tokens) for model, tokens in tokens_by_model.items()}
    return cost_by_model(usage, prices)

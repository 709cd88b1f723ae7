"""Estimates before anything is sent: prompt tokens by a documented rule of thumb, and what they
would cost as input. No tokenizer (nothing to download, same answer for every model).

The rule: a token is about 4 characters of English text, so a request's prompt is estimated as
its message text's characters divided by 4, rounded up. Real counts differ by model, language
and message overhead; use the figure to size a job, not to bill it.
"""

from __future__ import annotations

from collections.abc import Mapping
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

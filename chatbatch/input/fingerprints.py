"""A request's fingerprint: equal for requests the provider would see as the same call (model,
messages and every parameter, key order aside), so an earlier answer can be reused."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson


def fingerprint(body: dict[str, Any]) -> str:
    """sha256 hex of ``body`` as canonical JSON (sorted keys); ``background`` never counts."""
    if "background" in body:
        body = {k: v for k, v in body.items() if k != "background"}
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()

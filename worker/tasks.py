"""Celery tasks: thin wrappers that re-read state from the database and call the engine."""

from __future__ import annotations

import logging

from chatbatch.settings import get_settings
from worker.celery_app import app
from worker.runtime import process_engine

log = logging.getLogger("chatbatch.tasks")


@app.task(name="chatbatch.drain", ignore_result=True)
def drain() -> int:
    """Go look: work whatever is due for up to the task budget. Carries no arguments, so a lost,
    duplicated or redelivered message can only cost latency."""
    handled = process_engine().drain(get_settings().task_budget_seconds)
    log.debug("drain handled %d request(s)", handled)
    return handled

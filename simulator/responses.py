"""The bodies the simulator sends, in GeekAI's shapes, and the padded JSON encoding."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from simulator.answers import completion_for, with_nul
from simulator.state import Task

JSON_TYPE = "application/json"


def json_response(
    payload: Any, *, status: int = 200, blank_lines: int = 0, headers: dict[str, str] | None = None
) -> web.Response:
    """``payload`` as JSON, after ``blank_lines`` newlines as GeekAI pads bodies under load."""
    body = orjson.dumps(payload)
    if blank_lines:
        body = b"\n" * blank_lines + body
    return web.Response(status=status, body=body, content_type=JSON_TYPE, headers=headers)


def error_payload(message: str, code: str, kind: str | None = None) -> dict[str, Any]:
    """An OpenAI-style error body."""
    return {"error": {"message": message, "type": kind or code, "code": code}}


def task_summary(task: Task, status: str) -> dict[str, Any]:
    """What the POST answers in background mode and a poll answers while the task is not done."""
    return {
        "id": task.id,
        "object": "chat.completion",
        "created": task.created_wall,
        "model": task.model,
        "status": status,
    }


def task_completion(task: Task) -> dict[str, Any]:
    """The full chat.completion of a task, with a NUL in the content if it was drawn to have one."""
    completion = completion_for(
        task.body, task_id=task.id, created=task.created_wall, fingerprint=task.fingerprint
    )
    return with_nul(completion) if task.nul else completion


def task_succeeded(task: Task) -> dict[str, Any]:
    """A poll's answer once a task succeeded: the status plus the completion fields."""
    completion = task_completion(task)
    return {**task_summary(task, "succeed"), **completion, "status": "succeed"}


def task_failed(task: Task) -> dict[str, Any]:
    """A poll's answer once a task failed."""
    return {
        **task_summary(task, "failed"),
        "error": {"message": "The model failed to produce an answer", "code": "task_failed"},
    }


def seconds_header(value: float) -> str:
    """Seconds for a Retry-After header: an integer when whole, else a short decimal."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"

"""``chatbatch show BATCH CUSTOM_ID``: one request in full, as sent and as answered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import orjson

from chatbatch.untrusted import printable
from cli.context import handles_errors, ready_database, setup_logging
from cli.prices import prices_for_batch, prices_option
from cli.providers import providers_option

PARAMETERS_SHOWN = ("model", "temperature", "top_p", "max_tokens", "response_format", "tools")


@click.command("show")
@click.argument("batch")
@click.argument("custom_id")
@click.option("--json", "as_json", is_flag=True, help="Print everything as one JSON object.")
@prices_option
@providers_option
@handles_errors
def show_command(batch: str, custom_id: str, as_json: bool, prices_path: Path | None) -> None:
    """One request of BATCH in full: the request as sent, every attempt and outcome (earlier
    rounds that `retry` or a schema re-ask replaced too), the answer, usage and cost, and the
    schema verdict."""
    from chatbatch.reporting.request_detail import request_detail
    from chatbatch.store import reads

    setup_logging()
    with ready_database().connect() as conn:
        row = reads.resolve_batch(conn, batch)
        detail = request_detail(conn, row, custom_id, prices=prices_for_batch(row, prices_path))
    if as_json:
        click.echo(orjson.dumps(detail))
    else:
        for line in detail_lines(detail):
            click.echo(line)


def detail_lines(detail: dict[str, Any]) -> list[str]:
    """``detail`` as readable lines; everything a provider or an input wrote is printable."""
    lines = [
        f"{detail['batch']['name']} / {printable(detail['custom_id'])}  "
        f"(line {detail['line']})  {detail['status']}",
        f"  attempts    {detail['attempts']} · round {detail['rounds']} · polls {detail['polls']}"
        f" · possible duplicates {detail['possible_duplicates']}",
    ]
    lines += _task_lines(detail["task"])
    lines += _request_lines(detail["request"])
    lines += _answer_lines(detail["answer"])
    if detail["error"]:
        lines.append(f"  error       {_error_text(detail['error'])}")
    lines += _usage_lines(detail)
    if detail["schema"]:
        lines.append(f"  schema      {_schema_text(detail['schema'])}")
    if detail["reused_from"]:
        source = detail["reused_from"]
        lines.append(f"  reused from {source['batch']} / {printable(source['custom_id'])}")
    lines += _history_lines(detail["history"])
    return lines


def _task_lines(task: dict[str, Any]) -> list[str]:
    """The provider task's id, status and times; nothing before one was created."""
    if not task["remote_id"]:
        return []
    times = [f"{name} {task[f'{name}_at']}" for name in ("submitted", "completed", "expires")]
    shown = " · ".join(t for t in times if not t.endswith("None"))
    return [f"  task        {printable(task['remote_id'])} ({task['remote_status']}) · {shown}"]


def _request_lines(request: dict[str, Any]) -> list[str]:
    """The main parameters as sent, then each message by role."""
    parameters = [f"{k} {_compact(request[k])}" for k in PARAMETERS_SHOWN if k in request]
    lines = ["  request     " + " · ".join(parameters)]
    for message in request.get("messages", []):
        role = message.get("role", "?")
        lines += _indented(f"{role}: {_content_text(message.get('content'))}")
    return lines


def _answer_lines(answer: dict[str, Any] | None) -> list[str]:
    """Why and by which model the answer ended, then its content indented."""
    if answer is None:
        return ["  answer      (none yet)"]
    about = f"finish_reason {answer['finish_reason']}, model {answer['model']}"
    lines = [f"  answer      ({printable(about)})"]
    return lines + _indented(answer["content"] if answer["content"] is not None else "(empty)")


def _usage_lines(detail: dict[str, Any]) -> list[str]:
    """Tokens by kind with the cost, and whether the provider's usage was clamped."""
    usage = detail["usage"]
    if usage is None:
        return []
    text = " · ".join(f"{name.removesuffix('_tokens')} {value:,}" for name, value in usage.items())
    cost = f" · cost {detail['cost']}" if detail["cost"] is not None else ""
    clamped = " (clamped: the provider reported it out of range)" if detail["usage_clamped"] else ""
    return [f"  usage       {text}{cost}{clamped}"]


def _history_lines(history: list[dict[str, Any]]) -> list[str]:
    """A line per earlier round that ``retry`` or a schema re-ask replaced."""
    if not history:
        return []
    lines = ["  earlier rounds"]
    for entry in history:
        line = f"    round {entry['round']}  {entry['status']}  attempts {entry['attempts']}"
        if entry["error"]:
            line += f"  {_error_text(entry['error'])}"
        if entry["usage"]:
            line += f"  tokens {entry['usage']['total_tokens']:,}"
        if entry["cost"] is not None:
            line += f"  cost {entry['cost']}"
        lines.append(line)
    return lines


def _schema_text(schema: dict[str, Any]) -> str:
    """The answer's schema verdict, with the reason and how often it was asked again."""
    verdict = {True: "valid", False: "invalid", None: "not judged yet"}[schema["valid"]]
    if schema["error"]:
        verdict += f": {printable(schema['error'])}"
    if schema["asked_again"]:
        verdict += f" (asked again {schema['asked_again']} time(s))"
    return verdict


def _error_text(error: dict[str, Any]) -> str:
    """``code: message``, made printable (the message may be the provider's)."""
    return printable(f"{error['code']}: {error['message']}")


def _content_text(content: Any) -> str:
    """A message's content as text: its text parts joined, anything else as JSON."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", part)) for part in content if isinstance(part, dict))
    return _compact(content)


def _compact(value: Any) -> str:
    """``value`` as is when text, else as compact JSON."""
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _indented(text: str) -> list[str]:
    """``text`` made printable, one indented line per line (one empty line for none)."""
    return ["    " + line for line in printable(text).splitlines() or [""]]

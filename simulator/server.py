"""A GeekAI-compatible HTTP server: background and synchronous chat completions, task polling,
Bearer auth, latency, injected faults, a requests-per-minute limit, result expiry and a hostile
mode answering what no provider should (simulator/hostile.py)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from simulator import hostile
from simulator.answers import NUL, request_fingerprint, spoiled_content, wants_json
from simulator.config import SimConfig
from simulator.faults import Dice
from simulator.responses import (
    error_payload,
    json_response,
    seconds_header,
    task_completion,
    task_failed,
    task_succeeded,
    task_summary,
)
from simulator.state import SimState, Task
from simulator.store import SqliteTaskStore

PREFIX = "/api/v1"
MAX_BODY_BYTES = 10 * 1024 * 1024
SYNC_CAP_SECONDS = 300.0
PENDING_FRACTION = 0.2  # a task reports "pending" for this share of its latency, then "running"
MODELS = ("gpt-4o-mini", "gpt-4.1-nano", "deepseek-r1")


class Simulator:
    """The request handlers, the live configuration and the shared state; with ``store``, the
    tasks are kept in that SQLite file too, so any simulator given it answers them."""

    def __init__(self, config: SimConfig, *, store: Path | None = None) -> None:
        self.config = config
        self.state = SimState()
        if store is not None:
            self.state.tasks = SqliteTaskStore(store, poll_kind_of=self._stored_poll_kind)
        self.dice = Dice(config.seed, config.latency)
        self.scripts: dict[str, hostile.Script] = {}  # hostile mode's [[script:MARKER]] answers

    def _stored_poll_kind(self, name: str) -> hostile.PollKind | None:
        """The poll answer a stored task's poison name stands for here (None: none known)."""
        return hostile.poll_kind_named(name, self.scripts)

    async def close(self, app: web.Application) -> None:
        """Release the task store when the application is cleaned up."""
        self.state.tasks.close()

    def reconfigure(self, changes: dict[str, Any]) -> SimConfig:
        """Apply SimConfig field changes live; ValueError on unknown fields or bad values."""
        config = self.config.with_changes(changes)
        if "latency" in changes:
            self.dice.set_latency(config.latency)
        if "seed" in changes:
            self.dice.reseed(config.seed)
        self.config = config
        return config

    # --- answers -----------------------------------------------------------------------------

    def _json(self, payload: Any, status: int = 200, **headers: str) -> web.Response:
        """A provider answer, padded as configured."""
        return json_response(
            payload, status=status, blank_lines=self.config.blank_lines, headers=headers or None
        )

    def _reject(self, status: int, message: str, code: str, **headers: str) -> web.Response:
        """An error answer, counted under its status code."""
        self.state.stats.rejected[str(status)] += 1
        return self._json(error_payload(message, code), status, **headers)

    def _drop(self, request: web.Request, counter: str) -> web.Response:
        """Close the connection with no answer, as a crashed proxy or a lost packet would."""
        self.state.stats.rejected[counter] += 1
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=204)  # never delivered: the transport is gone

    def _rate_limited(self, retry_after: float | None) -> web.Response:
        """A 429, with a Retry-After header unless ``retry_after`` is None."""
        headers = {} if retry_after is None else {"Retry-After": seconds_header(retry_after)}
        return self._reject(
            429, "Rate limit reached for this model", "rate_limit_exceeded", **headers
        )

    # --- checks shared by the provider endpoints -----------------------------------------------

    async def _admit(self, request: web.Request) -> tuple[str, web.Response | None]:
        """Every provider endpoint's start: the configured latency, then the key check."""
        if self.config.request_latency > 0:
            await asyncio.sleep(self.config.request_latency)
        return self._refuse_key(request)

    def _refuse_key(self, request: web.Request) -> tuple[str, web.Response | None]:
        """The caller's API key, and the 401/402/403 answer if it may not proceed."""
        header = request.headers.get("Authorization", "")
        scheme, _, key = header.partition(" ")
        key = key.strip() if scheme.lower() == "bearer" else ""
        if key and key in self.config.payment_required_keys:
            return key, self._reject(402, "Insufficient balance", "insufficient_balance")
        if key and key in self.config.forbidden_keys:
            return key, self._reject(403, "This key may not use this model", "forbidden")
        if self.config.api_keys and key not in self.config.api_keys:
            message = "Invalid API key" if key else "Missing Authorization: Bearer <key>"
            return key, self._reject(401, message, "invalid_api_key")
        return key, None

    async def _injected_fault(self, request: web.Request) -> web.Response | None:
        """Slow answers, dropped connections and 5xx, shared by POST and GET."""
        config, dice = self.config, self.dice
        if dice.roll(config.slow_rate):
            await asyncio.sleep(config.slow_seconds)
        if dice.roll(config.drop_rate):
            return self._drop(request, "dropped")
        if dice.roll(config.rate_500):
            return self._reject(500, "Internal server error", "server_error")
        if dice.roll(config.rate_503):
            return self._reject(503, "The service is overloaded, try again later", "overloaded")
        return None

    # --- POST /chat/completions ----------------------------------------------------------------

    async def create(self, request: web.Request) -> web.StreamResponse:
        """Accept a chat completion: a background task, or a synchronous answer."""
        self.state.stats.posts += 1
        key, refusal = await self._admit(request)
        if refusal is not None:
            return refusal
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raw = None
        if raw is None or len(raw) > MAX_BODY_BYTES:
            return self._reject(413, "Request body is larger than 10 MB", "request_too_large")
        problem, body = _validate(raw)
        if problem is not None:
            return self._reject(400, problem, "invalid_request_error")
        try:
            plan = self._hostile_plan(body)
        except hostile.UnknownPoison as exc:
            return self._reject(400, str(exc), "invalid_request_error")
        fault = await self._injected_fault(request)
        if fault is not None:
            return fault
        now = time.monotonic()
        task, poisoned = None, None
        if plan is not None and plan.post is not None:
            task = self._new_task(body, now)
            poisoned = plan.post(task, self._context(request, key))
            if not hostile.accepts(poisoned):
                return await self._poisoned_refusal(request, plan, task, poisoned)
        limited = self._rate_limit(key, now)
        if limited is not None:
            return limited
        task = task or self._new_task(body, now)
        if plan is not None:
            task.poll_poison, task.poison = plan.poll, plan.name
        if not body.get("background"):
            return await self._answer_synchronously(request, task)
        self._expire(now)
        self.state.tasks.add(task)
        stats = self.state.stats
        stats.accepted += 1
        stats.accepted_by_fingerprint[task.fingerprint] += 1
        saving = self.state.tasks.saved()
        if saving is not None:  # a durable store: answer once the task is in the file
            await saving
        if self.dice.roll(self.config.lost_response_rate):
            return self._drop(request, "lost_response")
        if poisoned is not None:
            return await hostile.send(request, poisoned)
        return self._json(task_summary(task, "pending"))

    def _rate_limit(self, key: str, now: float) -> web.Response | None:
        """An injected 429, or one for exceeding the requests-per-minute limit (which counts
        the POST otherwise); None when the POST may proceed."""
        if self.dice.roll(self.config.rate_429):
            return self._rate_limited(self.config.retry_after)
        if self.config.rpm is not None:
            wait = self.state.window.wait_seconds(key, self.config.rpm, now)
            if wait > 0:
                return self._rate_limited(max(1, math.ceil(wait)))
            self.state.window.record(key, now, self.config.rpm)
        return None

    # --- hostile mode (see simulator/hostile.py) -----------------------------------------------

    def _hostile_plan(self, body: dict[str, Any]) -> hostile.Plan | None:
        """How a background request is poisoned: by its marker when ``hostile`` is on, else by
        ``hostile_rate`` (hashed from fingerprint and seed, so a request is always picked alike);
        None for most requests. UnknownPoison for a marker naming nothing known."""
        config = self.config
        if not body.get("background") or not (config.hostile or config.hostile_rate > 0):
            return None
        plan = hostile.marked_plan(body, self.scripts) if config.hostile else None
        fingerprint = request_fingerprint(body)
        if plan is None:
            draw = self.dice.spoil_draw(f"hostile:{fingerprint}", config.hostile_rate)
            plan = hostile.drawn_plan(draw)
        if plan is None or (plan.first_post_only and fingerprint in self.state.poisoned_once):
            return None  # unpoisoned, or its first POST met the poison: answered as usual
        self.state.stats.poisoned_by_fingerprint[fingerprint] = plan.name
        return plan

    def _context(self, request: web.Request, key: str) -> hostile.Context:
        """What a poison may echo: the caller's key and Authorization header."""
        authorization = request.headers.get("Authorization", "")
        return hostile.Context(key, authorization, self.config.hostile_body_bytes)

    async def _poisoned_refusal(
        self, request: web.Request, plan: hostile.Plan, task: Task, answer: hostile.Answer
    ) -> web.StreamResponse:
        """Send a poisoned non-2xx POST answer: nothing is created, the status is counted."""
        self.state.stats.rejected[str(hostile.status_of(answer))] += 1
        if plan.first_post_only:
            self.state.poisoned_once.add(task.fingerprint)
        return await hostile.send(request, answer)

    async def _poisoned_poll(
        self, request: web.Request, key: str, task: Task, now: float
    ) -> web.StreamResponse:
        """Answer a poll of a ready poisoned task, counted by the status and usage it serves."""
        served: hostile.Served = task.poll_poison(task, self._context(request, key))
        stats = self.state.stats
        self.state.record_fetch(task, now)
        if served.status is not None:
            stats.statuses_served[served.status] += 1
        if served.completed:
            stats.completed_results_served += 1
            stats.record_usage(task.id, served.usage, honest=served.honest)
        return await hostile.send(request, served.answer)

    def _new_task(self, body: dict[str, Any], now: float) -> Task:
        """A task for ``body`` with its latency and fate drawn now."""
        return Task(
            id=str(uuid.uuid4()),
            body=body,
            fingerprint=request_fingerprint(body),
            created_wall=int(time.time()),
            created=now,
            ready_at=now + self.dice.latency(),
            fails=self.dice.roll(self.config.fail_rate),
            nul=self.dice.roll(self.config.nul_rate),
        )

    async def _answer_synchronously(self, request: web.Request, task: Task) -> web.Response:
        """Hold the request for the task's latency (GeekAI cuts at ~5 min), then answer it."""
        await asyncio.sleep(min(SYNC_CAP_SECONDS, max(0.0, task.ready_at - time.monotonic())))
        self.state.stats.record_sync(task.created, time.monotonic())
        if task.fails:
            return self._reject(500, "The model failed to produce an answer", "task_failed")
        self.state.stats.served_by_fingerprint[task.fingerprint] += 1
        if self.dice.roll(self.config.lost_response_rate):
            return self._drop(request, "lost_response")
        self.state.stats.sync_completions += 1
        completion = task_completion(task)
        self.state.stats.record_usage(task.id, completion["usage"])
        return self._json(self._maybe_spoiled(task, completion))

    # --- GET /chat/{id} ------------------------------------------------------------------------

    async def fetch(self, request: web.Request) -> web.StreamResponse:
        """Report a background task's status, and its result once it is done."""
        self.state.stats.gets += 1
        key, refusal = await self._admit(request)
        if refusal is not None:
            return refusal
        fault = await self._injected_fault(request)
        if fault is not None:
            return fault
        now = time.monotonic()
        self._expire(now)
        task = self.state.tasks.get(request.match_info["task_id"])
        if task is None or now - task.created < self.config.not_found_seconds:
            return self._reject(404, "Task not found", "not_found")
        if task.poll_poison is not None and now >= task.ready_at:
            return await self._poisoned_poll(request, key, task, now)
        return self._json(self._task_view(task, now))

    def _task_view(self, task: Task, now: float) -> dict[str, Any]:
        """The task as a poll sees it at ``now``, counted by the status served."""
        served = self.state.stats.statuses_served
        if now < task.ready_at:
            if self.dice.roll(self.config.unknown_status_rate):
                status = self.dice.odd_status()
            elif now < task.created + PENDING_FRACTION * (task.ready_at - task.created):
                status = "pending"
            else:
                status = "running"
            served[status] += 1
            return task_summary(task, status)
        self.state.record_fetch(task, now)
        if task.fails:
            served["failed"] += 1
            return task_failed(task)
        served["succeed"] += 1
        self.state.stats.completed_results_served += 1
        answer = task_succeeded(task)
        self.state.stats.record_usage(task.id, answer["usage"])
        return self._maybe_spoiled(task, answer)

    def _maybe_spoiled(self, task: Task, answer: dict[str, Any]) -> dict[str, Any]:
        """``answer`` with its content broken if ``invalid_json_rate`` picks the task (JSON
        answers only; the same for every poll of the task)."""
        rate = self.config.invalid_json_rate
        if rate <= 0 or not wants_json(task.body):
            return answer
        draw = self.dice.spoil_draw(task.id, rate)
        if draw is not None:
            content = spoiled_content(task.body, draw=draw, fingerprint=task.fingerprint)
            answer["choices"][0]["message"]["content"] = content + (NUL if task.nul else "")
        return answer

    def _expire(self, now: float) -> None:
        """Forget tasks past the retention window, as GeekAI deletes results after 7 days."""
        self.state.stats.expired += self.state.tasks.expire(now, self.config.retention_seconds)

    # --- GET /models ---------------------------------------------------------------------------

    async def models(self, request: web.Request) -> web.StreamResponse:
        """A small model list carrying the per-model RPM limit, as GeekAI's /models does."""
        _, refusal = await self._admit(request)
        if refusal is not None:
            return refusal
        limits = {"max_requests_per_min": self.config.rpm} if self.config.rpm else {}
        data = [
            {"id": name, "object": "model", "owned_by": "sim", "limitations": limits}
            for name in MODELS
        ]
        return self._json({"object": "list", "data": data})

    # --- control plane (no auth, never padded) -------------------------------------------------

    async def stats(self, request: web.Request) -> web.Response:
        """GET /_sim/stats: the counters."""
        return json_response(self.state.snapshot())

    async def reset(self, request: web.Request) -> web.Response:
        """POST /_sim/reset: forget tasks and zero the counters."""
        self.state.reset()
        return json_response({"ok": True})

    async def show_config(self, request: web.Request) -> web.Response:
        """GET /_sim/config: the live configuration."""
        return json_response(_config_dict(self.config))

    async def change_config(self, request: web.Request) -> web.Response:
        """POST /_sim/config: apply a JSON object of SimConfig field changes."""
        try:
            changes = orjson.loads(await request.read())
            if not isinstance(changes, dict):
                raise ValueError("expected a JSON object of SimConfig fields")
            config = self.reconfigure(changes)
        except ValueError as exc:  # orjson.JSONDecodeError is a ValueError
            return json_response(error_payload(str(exc), "invalid_config"), status=400)
        return json_response(_config_dict(config))


def _validate(raw: bytes) -> tuple[str | None, dict[str, Any]]:
    """The reason a chat-completions body is unacceptable (None if fine), and the body."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return "Request body is not valid JSON", {}
    if not isinstance(body, dict):
        return "Request body must be a JSON object", {}
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return "'model' is required and must be a non-empty string", body
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' is required and must be a non-empty list", body
    if body.get("stream") and body.get("background"):
        return "'stream' and 'background' cannot both be true", body
    return None, body


def _config_dict(config: SimConfig) -> dict[str, Any]:
    """``config`` as JSON-ready fields."""
    return {name: getattr(config, name) for name in sorted(SimConfig.field_names())}


SIMULATOR_KEY = web.AppKey("simulator", Simulator)


def make_app(config: SimConfig, *, store: Path | None = None) -> web.Application:
    """The aiohttp application for ``config`` (tasks also kept in the SQLite file ``store``, if
    given); its Simulator is ``app[SIMULATOR_KEY]``."""
    simulator = Simulator(config, store=store)
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[SIMULATOR_KEY] = simulator
    app.on_cleanup.append(simulator.close)
    app.router.add_post(f"{PREFIX}/chat/completions", simulator.create)
    app.router.add_get(f"{PREFIX}/chat/{{task_id}}", simulator.fetch)
    app.router.add_get(f"{PREFIX}/models", simulator.models)
    app.router.add_get("/_sim/stats", simulator.stats)
    app.router.add_post("/_sim/reset", simulator.reset)
    app.router.add_get("/_sim/config", simulator.show_config)
    app.router.add_post("/_sim/config", simulator.change_config)
    return app


async def start(
    config: SimConfig,
    host: str,
    port: int,
    *,
    shutdown_timeout: float = 5.0,
    store: Path | None = None,
) -> tuple[web.AppRunner, int]:
    """Bind the server; returns its runner (for ``cleanup()``) and the port actually bound.

    Handlers are cancelled when their client disconnects, so a slow answer nobody waits for
    does not hold up shutdown. ``store``: keep the tasks in that SQLite file too.
    """
    runner = web.AppRunner(
        make_app(config, store=store),
        access_log=None,
        handle_signals=False,
        handler_cancellation=True,
        shutdown_timeout=shutdown_timeout,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner, runner.addresses[0][1]


def simulator_of(runner: web.AppRunner) -> Simulator:
    """The Simulator behind a runner made by ``start``."""
    return runner.app[SIMULATOR_KEY]


def serve(
    config: SimConfig, host: str = "127.0.0.1", port: int = 8900, *, store: Path | None = None
) -> None:
    """Serve until SIGINT/SIGTERM, announcing the bound address on one line of stdout."""

    async def main() -> None:
        runner, bound = await start(config, host, port, store=store)
        print(f"chatbatch simulator listening on http://{host}:{bound}{PREFIX}", flush=True)
        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stopped.set)
        try:
            await stopped.wait()
        finally:
            await runner.cleanup()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())

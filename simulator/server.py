"""A GeekAI-compatible HTTP server: background and synchronous chat completions, task polling,
Bearer auth, latency, injected faults, a requests-per-minute limit and result expiry."""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import signal
import time
import uuid
from dataclasses import replace
from typing import Any

import orjson
from aiohttp import web

from simulator.answers import completion_for, request_fingerprint
from simulator.config import SimConfig, parse_latency
from simulator.state import SimState, Task, monotonic

PREFIX = "/api/v1"
MAX_BODY_BYTES = 10 * 1024 * 1024
SYNC_CAP_SECONDS = 300.0
ODD_STATUSES = ("queued_for_gpu", "warming_up", "scheduling")


class Dropped(Exception):
    """The connection was closed on purpose without an answer."""


class Simulator:
    """The request handlers and their shared state."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.state = SimState()
        self._sampler = parse_latency(config.latency)
        self.rng = random.Random(config.seed)

    def reconfigure(self, changes: dict[str, Any]) -> None:
        unknown = set(changes) - SimConfig.field_names()
        if unknown:
            raise ValueError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        for key in ("api_keys", "payment_required_keys"):
            if key in changes and changes[key] is not None:
                changes[key] = tuple(changes[key])
        self.config = replace(self.config, **changes)
        self._sampler = parse_latency(self.config.latency)
        if "seed" in changes:
            self.rng = random.Random(self.config.seed)

    # --- helpers -------------------------------------------------------------------------

    def _json(
        self, status: int, payload: Any, headers: dict[str, str] | None = None
    ) -> web.Response:
        body = b"\n" * self.config.blank_lines + orjson.dumps(payload)
        return web.Response(
            status=status, body=body, content_type="application/json", headers=headers
        )

    def _error(self, status: int, message: str, code: str, **headers: str) -> web.Response:
        self.state.stats.rejected[str(status)] += 1
        payload = {"error": {"message": message, "type": code, "code": code}}
        return self._json(status, payload, headers or None)

    def _roll(self, rate: float) -> bool:
        return rate > 0 and self.rng.random() < rate

    def _auth(self, request: web.Request) -> tuple[str, web.Response | None]:
        header = request.headers.get("Authorization", "")
        key = header[7:] if header.startswith("Bearer ") else ""
        if key in self.config.payment_required_keys:
            return key, self._error(402, "Insufficient balance", "insufficient_balance")
        if self.config.api_keys and key not in self.config.api_keys:
            return key, self._error(401, "Invalid API key", "invalid_api_key")
        return key, None

    async def _common_faults(self, request: web.Request) -> web.Response | None:
        """Latency, slow answers, dropped connections and 5xx shared by POST and GET."""
        if self.config.request_latency > 0:
            await asyncio.sleep(self.config.request_latency)
        if self._roll(self.config.slow_rate):
            await asyncio.sleep(self.config.slow_seconds)
        if self._roll(self.config.drop_rate):
            self.state.stats.rejected["dropped"] += 1
            _drop(request)
        if self._roll(self.config.rate_500):
            return self._error(500, "Internal server error", "server_error")
        if self._roll(self.config.rate_503):
            return self._error(503, "Service overloaded", "overloaded")
        return None

    # --- handlers ------------------------------------------------------------------------

    async def create(self, request: web.Request) -> web.StreamResponse:
        """POST /chat/completions."""
        self.state.stats.posts += 1
        key, refusal = self._auth(request)
        if refusal:
            return refusal
        if request.content_length and request.content_length > MAX_BODY_BYTES:
            return self._error(413, "Request entity too large", "request_too_large")
        raw = await request.read()
        if len(raw) > MAX_BODY_BYTES:
            return self._error(413, "Request entity too large", "request_too_large")
        problem, body = _validate(raw)
        if problem:
            return self._error(400, problem, "invalid_request_error")
        fault = await self._common_faults(request)
        if fault:
            return fault
        if self._roll(self.config.rate_429):
            return self._rate_limited(self.config.retry_after)
        now = monotonic()
        if self.config.rpm is not None:
            wait = self.state.window.wait_seconds(key, self.config.rpm, now)
            if wait > 0:
                return self._rate_limited(float(math.ceil(wait)))
            self.state.window.record(key, now)
        task = self._new_task(body, now)
        if not body.get("background"):
            return await self._synchronous(task)
        self.state.tasks[task.id] = task
        self.state.stats.accepted += 1
        self.state.stats.accepted_by_fingerprint[task.fingerprint] += 1
        if self._roll(self.config.lost_response_rate):
            self.state.stats.rejected["lost_response"] += 1
            _drop(request)
        return self._json(200, _summary(task, "pending"))

    def _rate_limited(self, retry_after: float | None) -> web.Response:
        headers = {} if retry_after is None else {"Retry-After": _seconds_header(retry_after)}
        return self._error(429, "Rate limit exceeded for this model", "rate_limit", **headers)

    def _new_task(self, body: dict[str, Any], now: float) -> Task:
        latency = max(0.0, self._sampler(self.rng))
        return Task(
            id=str(uuid.uuid4()),
            body=body,
            fingerprint=request_fingerprint(body),
            created_wall=int(time.time()),
            created=now,
            ready_at=now + latency,
            fails=self._roll(self.config.fail_rate),
            nul=self._roll(self.config.nul_rate),
        )

    async def _synchronous(self, task: Task) -> web.Response:
        await asyncio.sleep(min(SYNC_CAP_SECONDS, max(0.0, task.ready_at - monotonic())))
        self.state.stats.sync_completions += 1
        if task.fails:
            return self._error(500, "The model failed to answer", "task_failed")
        return self._json(200, _completion(task))

    async def fetch(self, request: web.Request) -> web.StreamResponse:
        """GET /chat/{id}."""
        self.state.stats.gets += 1
        _, refusal = self._auth(request)
        if refusal:
            return refusal
        fault = await self._common_faults(request)
        if fault:
            return fault
        task = self.state.tasks.get(request.match_info["task_id"])
        now = monotonic()
        if task is None:
            return self._error(404, "Task not found", "not_found")
        if now - task.created > self.config.retention_seconds:
            del self.state.tasks[task.id]
            return self._error(404, "Task not found", "not_found")
        if now - task.created < self.config.not_found_seconds:
            return self._error(404, "Task not found", "not_found")
        return self._json(200, self._task_view(task, now))

    def _task_view(self, task: Task, now: float) -> dict[str, Any]:
        stats = self.state.stats
        if now < task.ready_at:
            if self._roll(self.config.unknown_status_rate):
                status = self.rng.choice(ODD_STATUSES)
            else:
                early = now < task.created + 0.2 * (task.ready_at - task.created)
                status = "pending" if early else "running"
            stats.statuses_served[status] += 1
            return _summary(task, status)
        if task.fails:
            stats.statuses_served["failed"] += 1
            failed = _summary(task, "failed")
            failed["error"] = {"message": "The model failed to answer", "code": "task_failed"}
            return failed
        stats.statuses_served["succeed"] += 1
        stats.completed_results_served += 1
        return {**_completion(task), "status": "succeed"}

    async def models(self, request: web.Request) -> web.Response:
        """GET /models."""
        limits = {"max_requests_per_min": self.config.rpm} if self.config.rpm else {}
        data = [
            {"id": name, "object": "model", "limitations": limits}
            for name in ("gpt-4o-mini", "gpt-4.1-nano", "deepseek-r1")
        ]
        return self._json(200, {"object": "list", "data": data})

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.state.stats.snapshot(), dumps=_dumps)

    async def reset(self, request: web.Request) -> web.Response:
        self.state.reset()
        return web.json_response({"ok": True})

    async def set_config(self, request: web.Request) -> web.Response:
        try:
            changes = orjson.loads(await request.read())
            if not isinstance(changes, dict):
                raise ValueError("expected a JSON object")
            self.reconfigure(changes)
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"ok": True})


def _validate(raw: bytes) -> tuple[str | None, dict[str, Any]]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return "Request body is not valid JSON", {}
    if not isinstance(body, dict):
        return "Request body must be a JSON object", {}
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "model is required", body
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        return "messages must be a non-empty list", body
    if body.get("stream") and body.get("background"):
        return "stream and background cannot both be true", body
    return None, body


def _summary(task: Task, status: str) -> dict[str, Any]:
    return {
        "id": task.id,
        "object": "chat.completion",
        "created": task.created_wall,
        "model": task.body["model"],
        "status": status,
    }


def _completion(task: Task) -> dict[str, Any]:
    completion = completion_for(task.body, task_id=task.id, created=task.created_wall)
    if task.nul:
        message = completion["choices"][0]["message"]
        message["content"] = message["content"] + "\x00 after NUL"
    return completion


def _drop(request: web.Request) -> None:
    """Close the connection with no answer, as a crashed proxy or a lost packet would."""
    transport = request.transport
    if transport is not None:
        transport.abort()
    raise Dropped()


def _seconds_header(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.3f}"


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


@web.middleware
async def _swallow_drops(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except Dropped:
        raise asyncio.CancelledError() from None


def make_app(config: SimConfig) -> web.Application:
    """The aiohttp application for ``config``; its Simulator is ``app[SIMULATOR_KEY]``."""
    simulator = Simulator(config)
    app = web.Application(client_max_size=MAX_BODY_BYTES + 1024, middlewares=[_swallow_drops])
    app[SIMULATOR_KEY] = simulator
    app.router.add_post(f"{PREFIX}/chat/completions", simulator.create)
    app.router.add_get(f"{PREFIX}/chat/{{task_id}}", simulator.fetch)
    app.router.add_get(f"{PREFIX}/models", simulator.models)
    app.router.add_get("/_sim/stats", simulator.stats)
    app.router.add_post("/_sim/reset", simulator.reset)
    app.router.add_post("/_sim/config", simulator.set_config)
    return app


SIMULATOR_KEY = web.AppKey("simulator", Simulator)


async def start(config: SimConfig, host: str, port: int) -> tuple[web.AppRunner, Simulator, int]:
    """Bind the server; returns the runner (for cleanup), the simulator and the real port."""
    app = make_app(config)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    bound = sockets[0].getsockname()[1] if sockets else port
    return runner, app[SIMULATOR_KEY], bound


def serve(config: SimConfig, host: str = "127.0.0.1", port: int = 8900) -> None:
    """Serve until interrupted, announcing the bound address on one line of stdout."""

    async def main() -> None:
        runner, _, bound = await start(config, host, port)
        print(f"chatbatch simulator listening on http://{host}:{bound}{PREFIX}", flush=True)
        stopped = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopped.set)
        try:
            await stopped.wait()
        finally:
            await runner.cleanup()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())

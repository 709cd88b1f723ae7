"""The Celery application. Messages only say "go look"; every fact lives in PostgreSQL.

Settings, and why (see README "Celery and Redis settings"):
- acks_late + reject_on_worker_lost: a killed worker's message goes back to the queue. Looping is
  harmless: a task only claims due rows, and attempts are capped in the database.
- prefetch multiplier 1: a worker holds no messages it is not running.
- visibility timeout (1 h) far above the longest task (the drain budget, ~20 s): Redis never
  redelivers a message that is still being worked on. No countdowns or ETAs are used at all.
- results ignored: PostgreSQL is the result store.
- TCP keepalives and a health check every 10 s on the broker connection: a host whose link was
  cut notices its dead connection within seconds of the link coming back, not minutes.
- no cancelling of running tasks on a broker connection loss: the threads pool cannot kill a
  task, and a drain that carries on is harmless because every write is guarded.
"""

from __future__ import annotations

from celery import Celery
from celery.signals import worker_process_init, worker_shutting_down

from chatbatch.settings import Settings
from worker.sockets import keepalive_options

VISIBILITY_TIMEOUT_SECONDS = 3600

app = Celery("chatbatch", set_as_current=False)
app.conf.update(
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    task_ignore_result=True,
    task_serializer="json",
    accept_content=["json"],
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
    worker_send_task_events=False,
    worker_cancel_long_running_tasks_on_connection_loss=False,
    broker_connection_retry_on_startup=True,
    broker_transport_options={
        "visibility_timeout": VISIBILITY_TIMEOUT_SECONDS,
        "socket_timeout": 10,
        "socket_connect_timeout": 10,
        "socket_keepalive": True,
        "socket_keepalive_options": keepalive_options(),
        "health_check_interval": 10,
        "max_retries": 3,
        "interval_start": 0,
        "interval_step": 0.5,
        "interval_max": 3,
    },
    result_backend=None,
)


def configure(settings: Settings) -> Celery:
    """Point the app at the configured broker and queue."""
    app.conf.broker_url = settings.broker_url
    app.conf.task_default_queue = settings.queue
    return app


@worker_process_init.connect
def _after_fork(**_: object) -> None:
    from worker.runtime import reset_after_fork

    reset_after_fork()


@worker_shutting_down.connect
def _stop_cleanly(**_: object) -> None:
    """SIGTERM (a warm shutdown): the engine claims nothing more, lets the calls in flight land,
    and hands rows it never sent back to the queue, before Celery waits for the task."""
    from worker.runtime import stop_process_engine

    stop_process_engine()

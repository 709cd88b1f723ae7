"""The simulator's durable task store over real HTTP: a simulator given the same SQLite file,
later or at the same time, in this process or another, answers every task an earlier one
accepted exactly as that one would have (issue 12 item 3)."""

from __future__ import annotations

import select
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from simulator.answers import expected_content, expected_usage
from simulator.config import SimConfig
from simulator.embedded import SimulatorHandle, running_simulator
from simulator.hostile import Reply
from simulator.state import TaskStore
from simulator.store import SqliteTaskStore

ROOT = Path(__file__).resolve().parents[2]
AUTH = {"Authorization": "Bearer sk-simulator"}
PLAIN: dict[str, Any] = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
RICH: dict[str, Any] = {
    "model": "deepseek-r1",
    "messages": [
        {"role": "system", "content": "Answer in JSON."},
        {"role": "user", "content": [{"type": "text", "text": "rate this"}]},
    ],
    "response_format": {"type": "json_object"},
    "thinking": {"type": "enabled"},
}
CAPPED: dict[str, Any] = {**PLAIN, "max_tokens": 2}
BODIES = {"plain": PLAIN, "rich": RICH, "capped": CAPPED}


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "sim" / "tasks.sqlite3"  # its folder is made too


def user_body(text: str) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}


def submit(sim: SimulatorHandle, body: dict[str, Any]) -> str:
    """POST ``body`` in background mode; the new task's id."""
    with httpx.Client(base_url=sim.base_url + "/", headers=AUTH, timeout=10) as client:
        response = client.post("chat/completions", json={**body, "background": True})
    assert response.status_code == 200, response.text
    task_id: str = response.json()["id"]
    return task_id


def poll(base_url: str, task_id: str) -> httpx.Response:
    with httpx.Client(base_url=base_url + "/", headers=AUTH, timeout=10) as client:
        return client.get(f"chat/{task_id}")


def wait_done(base_url: str, task_id: str) -> dict[str, Any]:
    """The first answer to a poll of ``task_id`` that is neither pending nor running."""
    for _ in range(300):
        response = poll(base_url, task_id)
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = orjson.loads(response.content)
        if answer["status"] not in ("pending", "running"):
            return answer
        time.sleep(0.02)
    raise AssertionError("task never finished")


def rows(path: Path) -> int:
    with sqlite3.connect(path) as db:
        count: int = db.execute("SELECT count(*) FROM sim_tasks").fetchone()[0]
    return count


def test_a_later_simulator_answers_the_tasks_of_a_stopped_one(store) -> None:
    with running_simulator(SimConfig(latency="0", seed=3), store=store) as first:
        ids = {name: submit(first, body) for name, body in BODIES.items()}
        first.reconfigure(fail_rate=1.0)
        ids["failed"] = submit(first, user_body("this one fails"))
        first.reconfigure(fail_rate=0.0, nul_rate=1.0)
        ids["nul"] = submit(first, user_body("this one has a NUL"))
        answers = {name: wait_done(first.base_url, task_id) for name, task_id in ids.items()}
    # Another latency and no faults: what a task does was fixed when it was accepted.
    with running_simulator(SimConfig(latency="30"), store=store) as second:
        for name, task_id in ids.items():
            assert wait_done(second.base_url, task_id) == answers[name], name
        stats = second.stats()
    for name, body in BODIES.items():
        answer = answers[name]
        assert answer["status"] == "succeed" and answer["id"] == ids[name]
        assert answer["choices"][0]["message"]["content"] == expected_content(body)
        assert answer["usage"] == expected_usage(body)
    assert answers["failed"]["status"] == "failed"
    assert answers["nul"]["choices"][0]["message"]["content"].endswith("\x00")
    assert stats["accepted"] == 0 and stats["tasks"] == len(ids)
    assert stats["completed_results_served"] == 4
    assert stats["fetched"] == 0  # the first simulator saw every outcome first


def test_an_unfinished_task_keeps_its_wall_clock_timeline(store) -> None:
    with running_simulator(SimConfig(latency="1.5"), store=store) as first:
        posted = time.monotonic()
        task_id = submit(first, PLAIN)
        accepted = time.monotonic()  # the task was created between the two
    with running_simulator(SimConfig(latency="0"), store=store) as second:
        seen: list[tuple[float, float, str]] = []  # (asked, answered, status)
        while not seen or seen[-1][2] != "succeed":
            asked = time.monotonic()
            status = poll(second.base_url, task_id).json()["status"]
            seen.append((asked, time.monotonic(), status))
            time.sleep(0.03)
        stats = second.stats()
    statuses = [status for _, _, status in seen]
    order = ["pending", "running", "succeed"]
    assert "running" in statuses and statuses == sorted(statuses, key=order.index)
    assert all(asked < accepted + 1.5 for asked, _, status in seen if status != "succeed")
    assert posted + 1.5 <= seen[-1][1] < posted + 2.5
    # The stats time it from the stored wall-clock creation and ready times.
    assert stats["fetched"] == 1
    assert stats["median_completion_seconds"] == pytest.approx(1.5, abs=0.01)


def test_simulators_running_side_by_side_answer_each_others_tasks(store) -> None:
    config = SimConfig(latency="0.3")
    with (
        running_simulator(config, store=store) as left,
        running_simulator(config, store=store) as right,
    ):
        from_left, from_right = submit(left, RICH), submit(right, CAPPED)
        left_at_right = wait_done(right.base_url, from_left)
        right_at_left = wait_done(left.base_url, from_right)
        assert wait_done(left.base_url, from_left) == left_at_right
        assert wait_done(right.base_url, from_right) == right_at_left
        assert left.stats()["tasks"] == right.stats()["tasks"] == 2
        assert left.stats()["accepted"] == right.stats()["accepted"] == 1
    assert left_at_right["choices"][0]["message"]["content"] == expected_content(RICH)
    assert left_at_right["usage"] == expected_usage(RICH)
    assert right_at_left["choices"][0]["finish_reason"] == "length"
    assert right_at_left["usage"] == expected_usage(CAPPED)


def test_a_simulator_in_another_process_answers_from_the_same_file(store) -> None:
    command = [sys.executable, "-m", "simulator", "--port", "0", "--latency", "0"]
    with (
        running_simulator(SimConfig(latency="0"), store=store) as here,
        subprocess.Popen(
            [*command, "--store", str(store)], cwd=ROOT, stdout=subprocess.PIPE, text=True
        ) as process,
    ):
        try:
            assert process.stdout is not None
            assert select.select([process.stdout], [], [], 15)[0], "no announcement"
            there = process.stdout.readline().strip().rsplit(" ", 1)[1]
            mine = submit(here, RICH)
            with httpx.Client(base_url=there + "/", headers=AUTH, timeout=10) as client:
                response = client.post("chat/completions", json={**PLAIN, "background": True})
                theirs = response.json()["id"]
            assert wait_done(there, mine) == wait_done(here.base_url, mine)
            assert wait_done(here.base_url, theirs) == wait_done(there, theirs)
            assert wait_done(there, mine)["usage"] == expected_usage(RICH)
        finally:
            process.terminate()
        assert process.wait(timeout=10) == 0


def test_a_poisoned_task_stays_poisoned_for_a_later_simulator(store) -> None:
    scripted = Reply(200, {"Content-Type": "application/json"}, b'{"status": "scripted"}')
    kind, script = user_body("hi [[hostile:usage_negative]]"), user_body("hi [[script:odd]]")
    with running_simulator(SimConfig(latency="0", hostile=True), store=store) as first:
        first.script("odd", poll=scripted)
        kind_id, script_id = submit(first, kind), submit(first, script)
        answer = wait_done(first.base_url, kind_id)
        assert wait_done(first.base_url, script_id) == {"status": "scripted"}
    assert answer["usage"]["total_tokens"] == -57
    with running_simulator(SimConfig(latency="0"), store=store) as second:  # hostile mode off
        assert wait_done(second.base_url, kind_id) == answer  # fixed when it was accepted
        # A script lives in the simulator that registered it: elsewhere, answered normally.
        plain = wait_done(second.base_url, script_id)
        assert plain["choices"][0]["message"]["content"] == expected_content(script)
    with running_simulator(SimConfig(latency="0"), store=store) as third:
        third.script("odd", poll=scripted)
        assert wait_done(third.base_url, script_id) == {"status": "scripted"}


def test_stored_tasks_expire(store) -> None:
    with running_simulator(SimConfig(latency="0", retention_seconds=0.5), store=store) as sim:
        task_id = submit(sim, PLAIN)
        assert wait_done(sim.base_url, task_id)["status"] == "succeed"
        time.sleep(0.55)
        gone = poll(sim.base_url, task_id)
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "not_found"
        stats = sim.stats()
        assert stats["tasks"] == 0 and stats["expired"] == 1
    assert rows(store) == 0


def test_a_later_simulator_expires_rows_past_its_retention(store) -> None:
    with running_simulator(SimConfig(latency="0"), store=store) as first:
        old = submit(first, PLAIN)
    time.sleep(0.35)
    with running_simulator(SimConfig(latency="0", retention_seconds=0.3), store=store) as second:
        fresh = submit(second, RICH)
        assert poll(second.base_url, old).status_code == 404
        assert wait_done(second.base_url, fresh)["status"] == "succeed"
        stats = second.stats()
        assert stats["expired"] == 1 and stats["tasks"] == 1
    assert rows(store) == 1


def test_reset_empties_the_file(store) -> None:
    with running_simulator(SimConfig(latency="0"), store=store) as sim:
        task_id = submit(sim, PLAIN)
        sim.reset()
        assert poll(sim.base_url, task_id).status_code == 404
    assert rows(store) == 0


def test_without_a_store_tasks_live_in_memory_and_die_with_the_simulator(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with running_simulator(SimConfig(latency="0")) as first:
        assert type(first._simulator.state.tasks) is TaskStore  # white box: the default memory
        task_id = submit(first, PLAIN)
        assert wait_done(first.base_url, task_id)["status"] == "succeed"
    with running_simulator(SimConfig(latency="0")) as second:
        assert poll(second.base_url, task_id).status_code == 404
    assert list(tmp_path.iterdir()) == []  # no file anywhere it could have gone


def test_a_store_refuses_a_file_that_is_not_its_own(tmp_path) -> None:
    database = tmp_path / "chatbatch.db"
    with sqlite3.connect(database) as db:
        db.execute("CREATE TABLE batches (id TEXT)")
    with (
        pytest.raises(ValueError, match="not a simulator task store"),
        running_simulator(store=database),
    ):
        pass
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT name FROM sqlite_master").fetchall() == [("batches",)]
    garbage = tmp_path / "notes.txt"
    garbage.write_text("not a database at all, but long enough to have a header " * 4)
    with pytest.raises(ValueError, match="cannot keep the simulator's tasks"):
        SqliteTaskStore(garbage)

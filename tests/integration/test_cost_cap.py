"""``--max-cost`` on a real run: the engine stops submitting before the cap, pauses the batch
saying why, and ``resume`` continues it (with a new cap, or none)."""

from __future__ import annotations

from decimal import Decimal

from engine_helpers import load, run_to_end, write_requests
from sqlalchemy import update

from chatbatch.operations import controls
from chatbatch.reporting.summary import cost_summary
from chatbatch.rules.pricing import PriceTable
from chatbatch.store import reads
from chatbatch.store.models import batches_table as b

PRICES = PriceTable.model_validate(
    {"currency": "USD", "models": {"gpt-4o-mini": {"input": "150", "output": "600"}}}
)


def capped_batch(db, path, n: int, max_cost: str) -> str:
    write_requests(path, n, max_tokens=60)
    batch_id = load(db, path)
    with db.begin() as conn:
        conn.execute(
            update(b)
            .where(b.c.id == batch_id)
            .values(max_cost=max_cost, prices=PRICES.model_dump_json())
        )
    return batch_id


def spent(db, batch_id: str) -> Decimal:
    with db.connect() as conn:
        cost = cost_summary(conn, reads.resolve_batch(conn, batch_id), prices=PRICES)
    return Decimal(cost["so_far"])


def test_a_capped_batch_pauses_before_passing_its_cap_and_resumes(pg, engine, sim, tmp_path):
    # Each answer costs 0.003–0.04 USD at these (inflated) prices: 120 requests cost ~2.5 USD.
    batch_id = capped_batch(pg, tmp_path / "capped.jsonl", 120, "0.5")
    paused = run_to_end(engine, pg, batch_id)
    assert paused["status"] == "paused", paused
    assert paused["pause_reason"].startswith("cost limit 0.5 USD reached: spent ")
    answered = paused["counts"]["succeeded"]
    assert 0 < answered < 120 and paused["counts"]["queued"] == 120 - answered
    # in-flight answers may cost more than the average they were counted at, never much more
    assert spent(pg, batch_id) <= Decimal("0.5") * Decimal("1.15")

    with pg.begin() as conn:
        raised = controls.resume(conn, batch_id, max_cost=Decimal("1.0"))
    assert raised.message == "resumed with a cost limit of 1.0"
    again = run_to_end(engine, pg, batch_id)
    assert again["status"] == "paused" and again["counts"]["succeeded"] > answered
    assert spent(pg, batch_id) <= Decimal("1.15")

    with pg.begin() as conn:
        lifted = controls.resume(conn, batch_id)
    assert lifted.message == "resumed without a cost limit"
    done = run_to_end(engine, pg, batch_id)
    assert done["status"] == "completed" and done["counts"]["succeeded"] == 120


def test_an_uncapped_batch_beside_a_capped_one_runs_freely(pg, engine, sim, tmp_path):
    capped = capped_batch(pg, tmp_path / "capped.jsonl", 40, "0.1")
    write_requests(tmp_path / "free.jsonl", 40)
    free = load(pg, tmp_path / "free.jsonl")
    assert run_to_end(engine, pg, free)["counts"]["succeeded"] == 40
    assert run_to_end(engine, pg, capped)["status"] == "paused"

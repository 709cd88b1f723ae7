"""The labeling workflow end to end, as the README tells a new user to run it: a CSV of 1,000
reviews with a template and a label schema goes in; the same rows come out with ``label`` and
``confidence`` columns, the cost shown. Once on the embedded default, once on PostgreSQL with two
workers and a provider that spoils some answers, then again the next "night" with --reuse."""

from __future__ import annotations

import csv
import os

import orjson
import pytest
from cli_process import BINARY, REPO, base_env, chatbatch, start_worker, stop, wait_finished

pytestmark = pytest.mark.skipif(
    BINARY is None and not os.environ.get("CI"), reason="chatbatch is not installed"
)

EXAMPLES = REPO / "examples"
LABEL_OPTIONS = (
    "--template",
    f"@{EXAMPLES / 'review_prompt.txt'}",
    "--schema",
    str(EXAMPLES / "review_schema.json"),
    "--model",
    "gpt-4o-mini",
    "--id-column",
    "id",
    "--prices",
    str(EXAMPLES / "prices.toml"),
)


def source_rows() -> list[dict[str, str]]:
    with (EXAMPLES / "reviews.csv").open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def check_labels(
    rows: list[dict[str, str]], *, first_columns: list[str], unlabeled: int = 0
) -> None:
    """The source rows, in order, each with a label and a confidence (but for ``unlabeled``
    answers still invalid after every re-ask)."""
    source = source_rows()
    assert list(rows[0])[: len(first_columns)] == first_columns
    assert len(rows) == len(source) == 1000
    missing = 0
    for got, given in zip(rows, source, strict=True):
        assert {k: got[k] for k in given if k in got} == {k: given[k] for k in given if k in got}
        if not got["label"]:
            missing += 1
            continue
        assert got["label"] in ("positive", "negative", "neutral")
        assert 0 <= float(got["confidence"]) <= 1
    assert missing <= unlabeled


def test_a_csv_is_labeled_on_the_embedded_default(sim, tmp_path) -> None:
    env = base_env(tmp_path) | {"CHATBATCH_POLL_FIRST_SECONDS": "0.05"}
    proc = chatbatch(
        "run",
        str(EXAMPLES / "reviews.csv"),
        *LABEL_OPTIONS,
        "-o",
        "labels.csv",
        "--simulate",
        "--name",
        "reviews",
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert "schema      100.0% valid (1000/1000)" in proc.stdout
    assert "USD so far" in proc.stdout
    with (tmp_path / "labels.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    check_labels(rows, first_columns=["id", "product", "text", "label", "confidence"])
    assert {row["status"] for row in rows} == {"succeeded"}


def test_nightly_labeling_on_postgres_with_workers_and_reuse(distributed_env, sim, tmp_path):
    env = distributed_env
    sim.reconfigure(invalid_json_rate=0.1, rate_429=0.03)
    chatbatch("db", "upgrade", env=env)
    chatbatch(
        "load",
        str(EXAMPLES / "reviews.csv"),
        *LABEL_OPTIONS,
        "--retry-invalid",
        "3",
        "--name",
        "night-1",
        env=env,
    )
    workers = [start_worker(env, tmp_path / f"w{i}.log") for i in range(2)]
    try:
        first = wait_finished(env, "night-1", timeout=240)
        assert first["status"] == "completed", first
        assert first["counts"]["succeeded"] == 1000
        assert first["schema"]["retried"] > 0  # spoiled answers were asked again...
        assert first["schema"]["pass_rate"] >= 0.99  # ...until nearly all were valid
        assert first["cost"]["so_far"] and first["cost"]["currency"] == "USD"
        accepted = sum(sim.stats()["accepted_by_fingerprint"].values())

        chatbatch(
            "export",
            "night-1",
            "-o",
            str(tmp_path / "labels.csv"),
            "--bom",
            "--columns",
            "id,product,text,label,confidence",
            env=env,
        )
        raw = (tmp_path / "labels.csv").read_bytes()
        assert raw.startswith(b"\xef\xbb\xbfid,product,text,label,confidence\n")
        rows = list(csv.DictReader(raw.decode("utf-8-sig").splitlines()))
        check_labels(rows, first_columns=["id"], unlabeled=10)

        # The next night the same reviews cost nothing: every answer is reused.
        loaded = orjson.loads(
            chatbatch(
                "load",
                str(EXAMPLES / "reviews.csv"),
                *LABEL_OPTIONS,
                "--retry-invalid",
                "3",
                "--name",
                "night-2",
                "--reuse",
                "--json",
                env=env,
            ).stdout
        )
        second = wait_finished(env, "night-2", timeout=60)
    finally:
        for worker in workers:
            stop(worker)
    # A row is reused when any row with the same prompt got a valid label: reviews.csv holds
    # some reviews twice, so an unlabeled row can take its labeled twin's answer.
    labeled_prompts = {(row["product"], row["text"]) for row in rows if row["label"]}
    assert loaded["reused"] == sum((row["product"], row["text"]) in labeled_prompts for row in rows)
    assert second["counts"]["reused"] == loaded["reused"]
    assert second["cost"]["so_far"] == "0" or second["counts"]["succeeded"] > 0
    new_posts = sum(sim.stats()["accepted_by_fingerprint"].values()) - accepted
    assert new_posts == 1000 - loaded["reused"]

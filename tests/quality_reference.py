"""Gold-label figures computed straight from individual (gold, answer) rows by their textbook
definitions, written apart from ``chatbatch.rules.quality`` (which counts pairs first) so that
tests can check one against the other."""

from __future__ import annotations


def independent_figures(rows: list[tuple[str, str | None]]) -> dict:
    """Accuracy, kappa and per-class figures straight from the rows, by the definitions."""
    n = len(rows)
    labels = sorted({g for g, _ in rows} | {a for _, a in rows if a is not None})
    accuracy = sum(1 for g, a in rows if g == a) / n
    categories = [*labels, None]
    chance = sum(
        (sum(1 for g, _ in rows if g == c) / n) * (sum(1 for _, a in rows if a == c) / n)
        for c in categories
    )
    kappa = (accuracy - chance) / (1 - chance)
    per_class = {}
    for c in labels:
        true_positive = sum(1 for g, a in rows if g == c and a == c)
        predicted = sum(1 for _, a in rows if a == c)
        actual = sum(1 for g, _ in rows if g == c)
        p = true_positive / predicted if predicted else None
        r = true_positive / actual if actual else None
        f1 = None if p is None or r is None else (2 * p * r / (p + r) if p + r else 0.0)
        per_class[c] = (p, r, f1, actual)
    return {"accuracy": accuracy, "kappa": kappa, "per_class": per_class}

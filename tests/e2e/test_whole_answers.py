"""Nothing the model said is dropped: tool calls, reasoning, web-search citations and every
choice of an ``n`` > 1 request reach the CSV export, as the simulator (GeekAI's documented
shapes) gave them, and ``--columns`` can pick them."""

from __future__ import annotations

import csv
import json
import os

import orjson
import pytest
from cli_process import BINARY, base_env, chatbatch

from simulator.answers import (
    expected_citations,
    expected_content,
    expected_further_contents,
    expected_reasoning,
    expected_tool_calls,
)

pytestmark = pytest.mark.skipif(
    BINARY is None and not os.environ.get("CI"), reason="chatbatch is not installed"
)

TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
BODIES = {
    "plain": {},
    "search": {"enable_search": True},
    "tools": {"tools": [TOOL]},
    "thinking": {"thinking": {"type": "enabled"}},
    "three": {"n": 3},
}


def test_every_part_of_the_answer_reaches_the_csv(tmp_path) -> None:
    env = base_env(tmp_path / "d")
    bodies = {
        key: {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": f"q {key}"}],
            **extra,
        }
        for key, extra in BODIES.items()
    }
    prompts = tmp_path / "in.jsonl"
    prompts.write_text("".join(
        json.dumps({"custom_id": key, "body": body}) + "\n" for key, body in bodies.items()
    ))  # fmt: skip
    chatbatch("run", str(prompts), "-o", str(tmp_path / "out.csv"), "--name", "all", "--simulate",
              env=env)  # fmt: skip
    with (tmp_path / "out.csv").open(newline="", encoding="utf-8") as fh:
        rows = {row["custom_id"]: row for row in csv.DictReader(fh)}

    for key, body in bodies.items():
        row = rows[key]
        calls, cites = expected_tool_calls(body), expected_citations(body)
        assert row["content"] == expected_content(body)
        assert row["tool_calls"] == ("" if calls is None else orjson.dumps(calls).decode())
        assert row["reasoning_content"] == (expected_reasoning(body) or "")
        assert row["citations"] == ("" if cites is None else orjson.dumps(cites).decode())
        further = expected_further_contents(body)
        assert [row["content_2"], row["content_3"]] == further + [""] * (2 - len(further))
    assert (rows["tools"]["tool_calls"] and rows["search"]["citations"]
            and rows["thinking"]["reasoning_content"] and rows["three"]["content_3"])  # fmt: skip

    chatbatch("export", "all", "-o", str(tmp_path / "picked.csv"), "--columns",
              "custom_id,content_3,citations", env=env)  # fmt: skip
    picked = (tmp_path / "picked.csv").read_text(encoding="utf-8").splitlines()
    assert picked[0] == "custom_id,content_3,citations"
    assert f"three,{expected_further_contents(bodies['three'])[1]}," in picked

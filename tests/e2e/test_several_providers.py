"""Several providers in one deployment, through the installed binary: two simulators, each
taking only its own key, one in background mode and one in sync mode, named in a providers
file. A request sent to the wrong provider would carry the wrong key and be refused (401)."""

from __future__ import annotations

import os

import orjson
import pytest
from cli_process import BINARY, base_env, chatbatch

from simulator.config import SimConfig
from simulator.embedded import running_simulator

pytestmark = pytest.mark.skipif(
    BINARY is None and not os.environ.get("CI"), reason="chatbatch is not installed"
)


def test_each_request_goes_to_its_provider_with_that_providers_key(tmp_path) -> None:
    bulk = SimConfig(api_keys=("sk-bulk-provider-key",), latency="0.05")
    strong = SimConfig(api_keys=("sk-strong-provider-key",), latency="0.05")
    with running_simulator(bulk) as cheap, running_simulator(strong) as good:
        providers = tmp_path / "providers.toml"
        providers.write_text(
            "[[provider]]\n"
            'name = "bulk"\n'
            f'base_url = "{cheap.base_url}"\n'
            'key_env = "TEST_BULK_KEY"\n'
            'models = ["*-mini", "*"]\n'
            "\n[[provider]]\n"
            'name = "strong"\n'
            f'base_url = "{good.base_url}"\n'
            'key_env = "TEST_STRONG_KEY"\n'
            'mode = "sync"\n'
            'models = ["gpt-4o", "o3*"]\n'
        )
        env = base_env(tmp_path) | {
            "CHATBATCH_PROVIDERS": str(providers),
            "TEST_BULK_KEY": "sk-bulk-provider-key",
            "TEST_STRONG_KEY": "sk-strong-provider-key",
        }
        models = ["gpt-4o-mini", "gpt-4o", "o3-mini", "deepseek-chat"] * 5
        lines = [
            orjson.dumps(
                {
                    "custom_id": f"q{i}",
                    "model": model,
                    "messages": [{"role": "user", "content": f"q{i}"}],
                }
            ).decode()
            for i, model in enumerate(models)
        ]
        (tmp_path / "mixed.jsonl").write_text("\n".join(lines) + "\n")
        out = str(tmp_path / "out.jsonl")
        chatbatch("run", str(tmp_path / "mixed.jsonl"), "--name", "mix", "-o", out, env=env)
        status = orjson.loads(chatbatch("status", "mix", "--json", env=env).stdout)
        cheap_stats, good_stats = cheap.stats(), good.stats()
    assert status["counts"]["succeeded"] == 20
    assert status["providers"] == {"bulk": 15, "strong": 5}  # only "gpt-4o" goes to strong
    # "o3-mini" matches both "*-mini" and "o3*": the longer pattern, "*-mini", wins
    assert cheap_stats["accepted"] == 15 and cheap_stats["sync_completions"] == 0
    assert good_stats["sync_completions"] == 5 and good_stats["accepted"] == 0
    assert cheap_stats["rejected"]["401"] == 0 and good_stats["rejected"]["401"] == 0

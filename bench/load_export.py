"""Benchmarks 3 and 4 — load and export speed and memory against ``psql \\copy``.

Load: an N-line OpenAI-Batch JSONL file through ``chatbatch load`` (validation, COPY) against
``psql \\copy`` of the same lines into a one-column table. Export: N stored results through
``chatbatch export`` to JSONL and to CSV against ``psql \\copy (SELECT ...) TO`` a file. Peak
memory is each ``chatbatch`` process's own max RSS (see ``MEASURE``); it must not grow with N
(compare two sizes). The start-up time of a ``chatbatch`` command is printed too: at small N it is
most of the ratio.

    python -m bench.load_export                 # N = 100,000 and 1,000,000
    python -m bench.load_export --quick         # N = 20,000 and 50,000, a smoke run
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import ADMIN_URL, BINARY, environment, fresh_database, write_prompts

RESULT_SQL = """
UPDATE requests SET status = 'succeeded', remote_id = 'task-' || id, http_status = 200,
  completed_at = now(), content = 'positive', finish_reason = 'stop', prompt_tokens = 20,
  completion_tokens = 1, total_tokens = 21,
  response = '{"id":"task-' || id || '","object":"chat.completion","model":"gpt-4o-mini",'
    || '"choices":[{"index":0,"message":{"role":"assistant","content":"positive"},'
    || '"finish_reason":"stop"}],"usage":{"prompt_tokens":20,"completion_tokens":1,'
    || '"total_tokens":21}}'
"""


# Runs a command and writes its wall seconds and peak RSS (KB). A child's max RSS starts at its
# parent's (Linux carries the high-water mark across fork and exec), so measuring ``chatbatch``
# straight from this process would report this process's own size; this small interpreter in
# between makes the floor about 10 MB.
MEASURE = """
import os, sys, time
started = time.monotonic()
pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as fh:
    fh.write(f"{time.monotonic() - started} {usage.ru_maxrss}")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def timed(command: list[str], env: dict[str, str] | None = None) -> tuple[float, int]:
    """Run ``command``; its wall seconds and peak RSS in MB (its own, see ``MEASURE``)."""
    with tempfile.NamedTemporaryFile("r", suffix=".measure") as figures:
        proc = subprocess.run(
            [sys.executable, "-S", "-c", MEASURE, figures.name, *command],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            check=False,
        )
        if proc.returncode:
            raise SystemExit(f"{' '.join(command)} failed: {proc.stderr.decode()}")
        seconds, max_rss_kb = figures.read().split()
    return float(seconds), int(max_rss_kb) // 1024


def psql(url: str, *commands: str) -> list[str]:
    plain = url.replace("postgresql+psycopg://", "postgresql://")
    return ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", plain, *(f"-c{c}" for c in commands)]


def one_size(n: int, tmp: Path) -> dict[str, tuple[float, int]]:
    figures: dict[str, tuple[float, int]] = {}
    assert BINARY, "install chatbatch first (pip install .)"
    prompts = write_prompts(tmp / f"prompts-{n}.jsonl", n)
    with fresh_database() as url:
        env = environment(url, "http://127.0.0.1:9")
        figures["load psql"] = timed(
            psql(
                url,
                "CREATE TABLE lines (line text)",
                f"\\copy lines FROM '{prompts}' WITH (FORMAT csv, QUOTE E'\\x01', "
                "DELIMITER E'\\x02')",
            )
        )
        figures["startup"] = timed([BINARY, "list"], env)  # an empty database: start-up only
        figures["load chatbatch"] = timed([BINARY, "load", str(prompts), "--name", "b"], env)
        subprocess.run(psql(url, RESULT_SQL), check=True, stdout=subprocess.DEVNULL)
        out = tmp / "out"
        figures["export psql"] = timed(
            psql(
                url,
                "\\copy (SELECT id, custom_id, status, remote_id, response, content, "
                "prompt_tokens, completion_tokens, total_tokens FROM requests ORDER BY line_no) "
                f"TO '{out}.psql'",
            )
        )
        for fmt in ("jsonl", "csv"):
            figures[f"export {fmt}"] = timed(
                [BINARY, "export", "b", "-o", f"{out}.{fmt}", "--format", fmt], env
            )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=(100_000, 1_000_000))
    parser.add_argument("--quick", action="store_true", help="sizes 20,000 and 50,000")
    args = parser.parse_args()
    sizes = (20_000, 50_000) if args.quick else tuple(args.sizes)
    print(f"load and export against psql \\copy ({ADMIN_URL.rsplit('@', 1)[-1]})")
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            figures = one_size(n, Path(tmp))
            load_s, load_mb = figures["load chatbatch"]
            startup_s, startup_mb = figures["startup"]
            print(
                f"  N={n:,}  (start-up of a chatbatch command, `list`: {startup_s:.2f} s, "
                f"peak {startup_mb} MB)"
            )
            print(
                f"    load   chatbatch {load_s:6.2f} s ({n / load_s:9,.0f} lines/s, "
                f"peak {load_mb} MB)  psql {figures['load psql'][0]:6.2f} s "
                f"({figures['load psql'][1]} MB)  "
                f"ratio {load_s / figures['load psql'][0]:5.2f} (target <= 1.5)"
            )
            for fmt in ("jsonl", "csv"):
                seconds, mb = figures[f"export {fmt}"]
                print(
                    f"    export {fmt:<5}     {seconds:6.2f} s ({n / seconds:9,.0f} rows/s, "
                    f"peak {mb} MB)  psql {figures['export psql'][0]:6.2f} s "
                    f"({figures['export psql'][1]} MB)  "
                    f"ratio {seconds / figures['export psql'][0]:5.2f} (target <= 2.0)"
                )


if __name__ == "__main__":
    main()

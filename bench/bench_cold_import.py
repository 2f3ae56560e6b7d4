"""Cold import time of each Lambda handler module against `import boto3` alone, measured in
the same run.

Each sample is a fresh interpreter (`python -c`), as a Lambda cold start is, that times the
`import` statement alone (the interpreter's own start-up is left out) with `perf_counter`. The
statements are interleaved (boto3, webhook, poll, ... then again) so that load on the machine
hits all alike; the median of `--runs` samples is reported, with the ratio to `import boto3`.
Bytecode is written once before timing (a warm-up run of each), as the package carries it.

Also shown, not counted against the target: the webhook function's first request, which
imports what the module leaves for later (Powertools, boto3, the settings, the DynamoDB state,
`store_notice`).

The issue's target (issue 6): the webhook handler's cold import at most 1.5 x `import boto3`.
Exit status 1 only when an import fails (never because of timing).

    .venv/bin/python bench/bench_cold_import.py [--runs 15]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

TARGET_RATIO = 1.5
ROOT = Path(__file__).resolve().parent.parent

SUBJECTS: dict[str, str] = {
    "import boto3": "import boto3",
    "webhook": "import connector.handlers.webhook",
    "poll": "import connector.handlers.poll",
    "worker": "import connector.handlers.worker",
    "sweep": "import connector.handlers.sweep",
    "webhook + first request's imports": (
        "import connector.handlers.webhook\n"
        "import aws_lambda_powertools.logging.correlation_paths, boto3\n"
        "import connector.handlers.runtime, connector.settings, connector.state.dynamodb\n"
        "import connector.pipeline"),
}

TIMER = """
import time
t = time.perf_counter()
{statement}
print(time.perf_counter() - t)
"""


def sample(statement: str) -> float:
    env = {**os.environ, "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "eu-west-1"),
           "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", TIMER.format(statement=statement)],
                          capture_output=True, text=True, cwd=ROOT, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{statement!r} failed:\n{done.stderr[-2000:]}")
    return float(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="samples per module (median)")
    args = parser.parse_args(argv)
    try:
        for statement in SUBJECTS.values():   # warm-up: writes the bytecode, fills the caches
            sample(statement)
        times: dict[str, list[float]] = {name: [] for name in SUBJECTS}
        for _ in range(args.runs):
            for name, statement in SUBJECTS.items():
                times[name].append(sample(statement))
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 1
    base = statistics.median(times["import boto3"])
    print(f"cold import, median of {args.runs} fresh interpreters "
          f"(Python {sys.version.split()[0]}):")
    print(f"{'module':<36} {'median ms':>10} {'min ms':>8} {'x boto3':>8}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<36} {median * 1000:>10.1f} {min(values) * 1000:>8.1f} "
              f"{median / base:>8.2f}")
    ratio = statistics.median(times["webhook"]) / base
    verdict = "met" if ratio <= TARGET_RATIO else "MISSED"
    print(f"target: webhook <= {TARGET_RATIO} x import boto3: {ratio:.2f} x ({verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What observability costs a worker: N no-op jobs drained at concurrency 10 (run.py's process scenario) by
scalr_queue's worker as it ships beside the same worker with its Prometheus endpoint on
(SCALR_QUEUE_METRICS_PORT), with the OpenTelemetry SDK recording a span per try (jobs enqueued inside a span,
so each try is a child of it), and with opentelemetry not importable at all.

`python bench/run.py --only observability` (or `python bench/observability.py`); medians of --repeat runs.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.systems import ScalrQueue  # noqa: E402
from scalr_queue.testing import RedisServer, free_port  # noqa: E402

NO_OTEL = (
    "import runpy, sys; sys.modules['opentelemetry'] = None; sys.argv = ['scalr_queue.worker', 'bench.tasks']; "
    "runpy.run_module('scalr_queue.worker', run_name='__main__', alter_sys=True)"
)


class Plain(ScalrQueue):
    name = "as shipped (otel installed, no SDK)"


class WithMetrics(ScalrQueue):
    name = "metrics endpoint on"

    def env(self, **extra: str) -> dict[str, str]:
        return super().env(SCALR_QUEUE_METRICS_PORT=str(free_port()), **extra)


class WithTracing(ScalrQueue):
    name = "tracing on (SDK, batch, dropping exporter)"

    def worker(self) -> list[str]:
        return [sys.executable, "-m", "scalr_queue.worker", "bench.traced_tasks"]

    async def fill(self, n: int) -> None:
        from opentelemetry.sdk.trace import TracerProvider

        with TracerProvider().get_tracer("bench").start_as_current_span("producer"):
            await super().fill(n)  # every job carries the producer's trace context


class WithoutOtel(ScalrQueue):
    name = "opentelemetry not importable"

    def worker(self) -> list[str]:
        return [sys.executable, "-c", NO_OTEL]


VARIANTS = [WithoutOtel, Plain, WithMetrics, WithTracing]


def run_all(n: int, repeat: int) -> dict[str, dict[str, float]]:
    from bench.run import process, server_flush

    runs: dict[str, list[dict[str, float]]] = {kind.name: [] for kind in VARIANTS}
    with RedisServer() as server:
        for repetition in range(repeat):
            for kind in VARIANTS:
                runs[kind.name].append(asyncio.run(process(kind, server.url, n, 10)))
                server_flush(server)
            print(f"observability run {repetition + 1}/{repeat} done", flush=True)
    medians = {
        name: {key: statistics.median(r[key] for r in found) for key in found[0]}
        for name, found in runs.items()
    }
    report(medians, n, repeat)
    return medians


def report(m: dict[str, dict[str, Any]], n: int, repeat: int) -> None:
    width = 46
    print(
        f"\n{f'{n:,} no-op jobs, c=10, medians of {repeat}':<{width}}{'jobs/s':>10}{'CPU ms/job':>12}{'RSS MiB':>10}"
    )
    base = m[Plain.name]
    for name, figures in m.items():
        cpu = figures["cpu_ms_per_job"]
        print(
            f"{name:<{width}}{figures['per_s']:>10,.0f}{cpu:>12.3f}{figures['rss_mib']:>10.1f}"
            f"   ({cpu / base['cpu_ms_per_job']:.2f}x CPU)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    run_all(args.n, args.repeat)


if __name__ == "__main__":
    main()

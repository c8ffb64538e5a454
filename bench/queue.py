"""Queue benchmark: submit-to-start latency and runs per minute, SQLite broker vs Redis.

    python bench/queue.py [--samples 30] [--burst 50] [--brokers sqlite,redis]

For each broker, a fresh installation in a temporary folder (SQLite database) and one real
worker (``celery -A workers worker --pool solo``, the tiny preset preloaded and warmed up):

* latency: ``--samples`` runs submitted one at a time to an idle worker; submit-to-start is the
  time from just before ``service.submit_run`` to the run's ``started_at`` (written when the
  worker claims the row). Median and p95.
* throughput: ``--burst`` runs submitted at once; runs per minute from the first submission to
  the last finished run.

Runs are the smallest tiny-preset run (one step, one 16x16 frame), so the figures show the
queue's own cost. Redis: ``--redis-url`` (default db 14, which is emptied).
Targets: median submit-to-start under 0.3 s with Redis, under 1 s with the SQLite broker.
"""
from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path and "queue" would shadow the
# standard library module that Celery, kombu and threading helpers import: use the repo root.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

RUN = dict(model="tiny", schedule="1", frames=1, height=16, width=16, guidance=1.0)
TARGETS = {"sqlite": 1.0, "redis": 0.3}
FINAL = ("done", "failed", "cancelled")


def _parse(ts: str) -> dt.datetime:
    return dt.datetime.fromisoformat(ts.rstrip("Z"))


def _wait(run_id: int, timeout: float = 120.0) -> dict:
    import service

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = service.get_run(run_id)
        if row["status"] in FINAL:
            if row["status"] != "done":
                raise RuntimeError(f"run {run_id} ended {row['status']}: {row['error']}")
            return row
        time.sleep(0.01)
    raise TimeoutError(f"run {run_id} did not finish in {timeout:.0f} s")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def measure(broker: str, samples: int, burst: int, redis_url: str) -> dict:
    """Set up an installation for ``broker``, start a worker, and measure."""
    import workers
    from db.session import dispose_engines
    import service
    from workers.embedded import EmbeddedWorker

    with tempfile.TemporaryDirectory(prefix=f"pwan-bench-{broker}-") as tmp:
        data = Path(tmp) / "data"
        env = {
            "PWAN_DATA_DIR": str(data),
            "PWAN_DATABASE_URL": f"sqlite:///{data / 'pwan.sqlite3'}",
            "PWAN_BROKER_URL": (
                redis_url if broker == "redis" else f"sqla+sqlite:///{data / 'broker.sqlite3'}"
            ),
        }
        if broker == "redis":
            import redis

            redis.Redis.from_url(redis_url, socket_connect_timeout=2).flushdb()
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        workers.configure()
        worker = EmbeddedWorker(
            ["infer"], name=f"bench-{broker}", loglevel="warning",
            env={**os.environ, "PWAN_PRELOAD": "tiny", "OMP_NUM_THREADS":
                 os.environ.get("OMP_NUM_THREADS", "1")},
        )
        try:
            worker.start()
            if not worker.wait_ready(120):
                raise RuntimeError(f"the {broker} worker did not start; see {data}/workers")
            for i in range(2):  # warm: model loaded, code paths imported
                _wait(service.submit_run("warm up", seed=i, **RUN)["id"], timeout=300)

            latencies = []
            for i in range(samples):
                submitted = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
                row = _wait(service.submit_run(f"latency {i}", seed=i, **RUN)["id"])
                latencies.append((_parse(row["started_at"]) - submitted).total_seconds())

            started = time.perf_counter()
            ids = [service.submit_run(f"burst {i}", seed=i, **RUN)["id"] for i in range(burst)]
            for run_id in ids:
                _wait(run_id, timeout=600)
            elapsed = time.perf_counter() - started
            return {
                "median": statistics.median(latencies),
                "p95": _percentile(latencies, 0.95),
                "per_minute": burst / elapsed * 60.0,
                "burst_seconds": elapsed,
            }
        finally:
            worker.stop(timeout=10)
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            dispose_engines()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=30, help="latency samples per broker")
    parser.add_argument("--burst", type=int, default=50, help="runs submitted at once")
    parser.add_argument("--brokers", default="sqlite,redis", help="comma separated")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14",
                        help="Redis database to use (it is emptied)")
    args = parser.parse_args(argv)

    results: dict[str, dict | str] = {}
    for broker in [b.strip() for b in args.brokers.split(",") if b.strip()]:
        print(f"measuring {broker} ...", file=sys.stderr, flush=True)
        try:
            results[broker] = measure(broker, args.samples, args.burst, args.redis_url)
        except Exception as exc:  # noqa: BLE001 - report and go on with the other broker
            results[broker] = f"unavailable: {type(exc).__name__}: {exc}"

    names = list(results)
    run = f"tiny preset, schedule {RUN['schedule']}, {RUN['frames']}x{RUN['height']}x{RUN['width']}"
    print(f"\nqueue benchmark: {run}; one solo worker; SQLite database")
    print(f"{args.samples} latency samples (idle worker), burst of {args.burst}\n")
    print(f"{'':26}" + "".join(f"{n + ' broker':>18}" for n in names))

    def row(label: str, cell) -> None:
        print(f"{label:26}" + "".join(f"{cell(n):>18}" for n in names))

    def value(name: str, key: str, fmt: str) -> str:
        res = results[name]
        return fmt.format(res[key]) if isinstance(res, dict) else "n/a"

    row("submit->start median", lambda n: value(n, "median", "{:.3f} s"))
    row("submit->start p95", lambda n: value(n, "p95", "{:.3f} s"))
    row("runs per minute", lambda n: value(n, "per_minute", "{:.0f}"))

    def target(name: str) -> str:
        res, limit = results[name], TARGETS.get(name)
        if not isinstance(res, dict) or limit is None:
            return "n/a"
        return f"< {limit:g} s {'PASS' if res['median'] < limit else 'MISS'}"

    row("target (median)", target)
    if len(names) == 2 and all(isinstance(results[n], dict) for n in names):
        a, b = (results[n] for n in names)
        print(f"\nratio {names[0]}/{names[1]}: latency x{a['median'] / max(b['median'], 1e-9):.1f}, "
              f"throughput x{a['per_minute'] / b['per_minute']:.2f}")
    for name, res in results.items():
        if not isinstance(res, dict):
            print(f"\n{name}: {res}")
    ok = all(isinstance(r, dict) and r["median"] < TARGETS.get(n, float("inf"))
             for n, r in results.items())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""``make bench``: Parley's delivery throughput and latency against its floors and a
peer, call setup, memory per socket and the cost of the inbox (docs/performance.md).

Everything runs on this machine, one stage after another, in this process tree: the
load generator (this process), the servers under test (children), PostgreSQL and
Redis. Results print as ratios of the floors and the peer measured in the same run,
and are written to var/bench/results-<time>.json.
"""

import argparse
import asyncio
import json
import logging
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any

import psycopg

from bench.servers import (
    OUT_DIR,
    ROOT,
    Process,
    cpu_seconds,
    free_port,
    rss_kib,
    start_celery_worker,
    start_daphne,
    start_floor,
)

POSTGRES = "postgresql://postgres@127.0.0.1:5432"
DATABASE = "parley_bench"
REDIS = "redis://127.0.0.1:6379"
# Redis databases of their own, away from make run (0) and the tests (1, 2).
REDIS_LAYER_DB, REDIS_CACHE_DB = 5, 6


def log(text: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {text}", flush=True)


def server_env() -> dict[str, str]:
    """The environment of Parley's processes: PostgreSQL, Redis, DEBUG off."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DJANGO_ENV": "development",
        "DEBUG": "0",
        "DATABASE_URL": f"{POSTGRES}/{DATABASE}",
        "REDIS_URL": f"{REDIS}/{REDIS_LAYER_DB}",
        "CACHE_REDIS_URL": f"{REDIS}/{REDIS_CACHE_DB}",
    }


def prepare_database() -> None:
    """A fresh, migrated database, and Django set up on it in this process."""
    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        connection.execute(f"CREATE DATABASE {DATABASE}")
    os.environ.update(server_env())
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    # Django's logging sends INFO to the console: one line per request of the peer's
    # load client would cost the generator's CPU.
    for noisy in ("httpx", "aioice", "aiortc"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def flush_redis() -> None:
    import redis

    for db in (REDIS_LAYER_DB, REDIS_CACHE_DB):
        redis.Redis.from_url(f"{REDIS}/{db}").flushdb()


def celery_backlog() -> int:
    import redis

    return int(redis.Redis.from_url(f"{REDIS}/{REDIS_LAYER_DB}").llen("celery"))


def drain_notifications() -> dict:
    """Each message queues a notification task (or rides on a queued one): wait until
    the worker has caught up, and report how far behind it was and for how long."""
    started = time.monotonic()
    backlog = celery_backlog()
    while celery_backlog() and time.monotonic() - started < 300:
        time.sleep(0.2)
    return {
        "notification_backlog": backlog,
        "notification_backlog_drain_seconds": round(time.monotonic() - started, 1),
    }


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as stat:
        values = [float(value) for value in stat.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def drive(
    pairs: list[Any],
    urls: list[str],
    seconds: float,
    pids: list[int],
    *,
    paced: bool = True,
    settle: Callable[[], dict] | None = None,
) -> dict:
    """Connect every device, saturate, then measure latency at half the saturated rate.
    ``settle`` runs between the two (in a thread): the latency is that of a system
    running at half rate, not of one still working off the saturation's backlog."""
    from bench.loadgen import Load

    load = Load(pairs, urls, paced=paced)
    rss_before = sum(rss_kib(pid) for pid in pids)
    connect_seconds = await load.connect()
    await asyncio.sleep(2)  # let the connect work settle before reading memory
    rss_after = sum(rss_kib(pid) for pid in pids)
    busy, total = machine_cpu()
    server_cpu, generator_cpu = sum(cpu_seconds(pid) for pid in pids), own_cpu()
    saturation = await load.saturate(seconds)
    busy_after, total_after = machine_cpu()
    server_cpu = sum(cpu_seconds(pid) for pid in pids) - server_cpu
    generator_cpu = own_cpu() - generator_cpu
    settled = await asyncio.to_thread(settle) if settle is not None else {}
    latency = await load.latency(max(1.0, saturation["delivered_per_second"] / 2), seconds)
    totals = load.totals()
    await load.close()
    devices = 2 * len(pairs)
    return {
        "devices": devices,
        "connect_seconds": round(connect_seconds, 1),
        "rss_kib_per_1000_sockets": round((rss_after - rss_before) * 1000 / devices),
        "saturation": {
            **saturation,
            "machine_cpu_percent": round(100 * (busy_after - busy) / (total_after - total)),
            "server_cpu_seconds": round(server_cpu, 1),
            "generator_cpu_seconds": round(generator_cpu, 1),
            **settled,
        },
        "half_rate": latency,
        "totals": totals,
    }


def run_parley(pairs: list[Any], seconds: float) -> dict:
    """Two Daphne processes sharing the Redis channel layer, and a Celery worker."""
    flush_redis()
    env = server_env()
    ports = [free_port(), free_port()]
    processes: list[Process] = []
    try:
        processes += [start_daphne(f"daphne-{n}", port, env) for n, port in enumerate(ports, 1)]
        processes.append(start_celery_worker("worker", env))
        urls = [f"ws://127.0.0.1:{port}/ws/" for port in ports]
        result = asyncio.run(
            drive(pairs, urls, seconds, [p.pid for p in processes[:2]], settle=drain_notifications)
        )
        # And again after the latency phase, so the next stage starts on a quiet machine.
        result.update({f"{key}_at_end": value for key, value in drain_notifications().items()})
        return result
    finally:
        for process in processes:
            process.stop()


def run_floor(kind: str, pairs: list[Any], seconds: float) -> dict:
    members = {
        pair.conversation_id: [pair.sender.device_id, pair.receiver.device_id] for pair in pairs
    }
    pairs_file = OUT_DIR / "pairs.json"
    pairs_file.write_text(json.dumps(members))
    port = free_port()
    dsn = f"{POSTGRES}/{DATABASE}" if kind == "durable" else None
    process = start_floor(f"floor-{kind}", port, pairs_file, dsn)
    try:
        urls = [f"ws://127.0.0.1:{port}/ws/"]
        return asyncio.run(drive(pairs, urls, seconds, [process.pid], paced=False))
    finally:
        process.stop()


def run_calls(calls: int) -> dict:
    """In a process of its own, with a time limit: WebRTC peers created after thousands of
    sockets in this process once waited forever, with nothing to time them out."""
    flush_redis()
    # One pair of users calls many times a minute: raise the per-user limits that
    # protect people from call floods and directory scraping.
    env = {**server_env(), "CALL_INVITES_PER_MINUTE": "1000", "THROTTLE_KEY_DIRECTORY": "1000/min"}
    port = free_port()
    processes = [start_daphne("daphne-calls", port, env), start_celery_worker("worker", env)]
    try:
        measured = subprocess.run(  # noqa: S603  (our own module)
            [sys.executable, "-m", "bench.calls", "--server", f"http://127.0.0.1:{port}",
             "--calls", str(calls)],
            cwd=ROOT, capture_output=True, text=True, timeout=60 + 10 * calls, check=True,
        )  # fmt: skip
        result: dict = json.loads(measured.stdout)
        return result
    finally:
        for process in processes:
            process.stop()


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if not numerator or not denominator:
        return None
    return round(numerator / denominator, 2)


def summarize(results: dict) -> list[str]:
    """The report, as Markdown lines."""
    lines = [
        "| devices | system | delivered msg/s (saturated) | p50 / p95 / p99 ms at half rate "
        "| lost | duplicates |",
        "|---|---|---|---|---|---|",
    ]
    for stage in results["stages"]:
        for name, run in stage["systems"].items():
            if "error" in run:
                lines.append(f"| {stage['devices']} | {name} | failed: {run['error']} | | | |")
                continue
            lat = run["half_rate"]["latency_ms"]
            totals = run["totals"]
            lines.append(
                f"| {stage['devices']} | {name} | {run['saturation']['delivered_per_second']} "
                f"| {lat['p50']} / {lat['p95']} / {lat['p99']} "
                f"| {totals['lost']} | {totals['duplicates']} |"
            )
    lines += ["", "| devices | Parley / relay | Parley / durable | Parley / Synapse | "
              "Parley p99 / Synapse p99 |", "|---|---|---|---|---|"]  # fmt: skip
    for stage in results["stages"]:
        systems = stage["systems"]
        parley = systems.get("parley", {})
        rate = parley.get("saturation", {}).get("delivered_per_second")
        p99 = parley.get("half_rate", {}).get("latency_ms", {}).get("p99")

        def rate_of(name: str, systems: dict = systems) -> float | None:
            return systems.get(name, {}).get("saturation", {}).get("delivered_per_second")

        peers = [name for name in systems if name.startswith("synapse")]
        versus_peer = ", ".join(f"{ratio(rate, rate_of(name))} ({name})" for name in peers)
        peer_p99 = ", ".join(
            f"{ratio(p99, systems[name].get('half_rate', {}).get('latency_ms', {}).get('p99'))}"
            f" ({name})"
            for name in peers
        )
        lines.append(
            f"| {stage['devices']} | {ratio(rate, rate_of('relay'))} "
            f"| {ratio(rate, rate_of('durable'))} | {versus_peer or '-'} | {peer_p99 or '-'} |"
        )
    lines += ["", "| devices | system | connect s | RSS per 1,000 idle sockets (MiB) |",
              "|---|---|---|---|"]  # fmt: skip
    for stage in results["stages"]:
        for name, run in stage["systems"].items():
            if "rss_kib_per_1000_sockets" in run:
                lines.append(
                    f"| {stage['devices']} | {name} | {run['connect_seconds']} "
                    f"| {run['rss_kib_per_1000_sockets'] / 1024:.1f} |"
                )
    calls = results.get("calls", {})
    if "setup_ms" in calls:
        setup = calls["setup_ms"]
        lines += ["", f"Call setup, invite to connected on both peers, {calls['calls']} calls "
                  f"({calls['failures']} failed): p50 {setup['p50']} ms, p95 {setup['p95']} ms, "
                  f"p99 {setup['p99']} ms."]  # fmt: skip
    footprint = results.get("footprint", {})
    if "inbox" in footprint:
        lines += ["", "| conversations | inbox queries | inbox median ms | oldest page median ms |",
                  "|---|---|---|---|"]  # fmt: skip
        for row in footprint["inbox"]:
            lines.append(
                f"| {row['conversations']} | {row['queries']} | {row['median_ms']} "
                f"| {row.get('oldest_page_median_ms')} |"
            )
        history = footprint.get("history", {})
        lines.append("")
        lines.append(f"History: {json.dumps(history)}")
    return lines


def run_peer(database: str, devices: int, seconds: float) -> dict:
    """Synapse with as many users as devices, in the shape of our results."""
    from bench.synapse_peer import run_synapse

    # From 1,000 users Synapse sends in waves seconds apart: shorter windows measure
    # the waves, not the rate.
    window = max(seconds, 60.0) if devices >= 1000 else seconds
    result = run_synapse(
        database=database, users=devices, saturation_seconds=window, latency_seconds=window,
        log=log,
    )  # fmt: skip
    return {
        "saturation": {"delivered_per_second": result["saturation_msgs_per_s"]},
        "half_rate": {"rate": result["half_rate"], "latency_ms": result["latency_ms"]},
        "totals": {"lost": result["lost"], "duplicates": 0},
        "raw": result,
    }


def guarded(step: Callable[[], dict]) -> dict:
    """One system's failure is reported, and the run goes on to the others."""
    try:
        return step()
    except Exception as exc:
        log(f"failed: {exc!r}")
        return {"error": repr(exc)[:300]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", default="100,1000,5000", help="connected devices per stage")
    parser.add_argument("--seconds", type=float, default=15, help="length of each phase")
    parser.add_argument("--systems", default="relay,durable,parley", help="ours and the floors")
    parser.add_argument("--synapse", default="sqlite,postgresql", help="'' to skip the peer")
    parser.add_argument("--synapse-max-devices", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=30, help="0 to skip call setup")
    parser.add_argument("--footprint", default="100,1000,10000", help="'' to skip the inbox")
    args = parser.parse_args()

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    log("preparing the bench database")
    prepare_database()
    from bench.seed import seed_pairs

    results: dict[str, Any] = {"started": datetime.now(UTC).isoformat(), "args": vars(args)}
    results["stages"] = []
    for devices in [int(n) for n in args.devices.split(",") if n]:
        pairs = seed_pairs(devices // 2, tag=str(devices))
        stage: dict[str, Any] = {"devices": devices, "systems": {}}
        results["stages"].append(stage)
        steps: list[tuple[str, Callable[[], dict]]] = [
            ("relay", partial(run_floor, "relay", pairs, args.seconds)),
            ("durable", partial(run_floor, "durable", pairs, args.seconds)),
            ("parley", partial(run_parley, pairs, args.seconds)),
        ]
        steps = [(name, step) for name, step in steps if name in args.systems.split(",")]
        if devices <= args.synapse_max_devices:
            steps += [
                (f"synapse-{database}", partial(run_peer, database, devices, args.seconds))
                for database in args.synapse.split(",")
                if database
            ]
        for name, step in steps:
            log(f"{devices} devices: {name}")
            stage["systems"][name] = guarded(step)
            log(json.dumps(stage["systems"][name]))
    if args.calls:
        log(f"call setup, {args.calls} calls")
        results["calls"] = guarded(lambda: run_calls(args.calls))
        log(json.dumps(results["calls"]))
    if args.footprint:
        from bench.footprint import run_footprint

        log("inbox and history")
        sizes = [int(n) for n in args.footprint.split(",")]
        results["footprint"] = guarded(lambda: run_footprint(sizes=sizes, log=log))
        log(json.dumps(results["footprint"]))

    results["finished"] = datetime.now(UTC).isoformat()
    report = summarize(results)
    results["report"] = report
    path = OUT_DIR / f"results-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    path.write_text(json.dumps(results, indent=1))
    print("\n".join(report))
    print(f"\nfull results: {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

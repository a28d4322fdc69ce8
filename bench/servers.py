"""Processes under test, started and stopped by the benchmark: Parley's Daphne servers
and Celery worker, and the floors (bench.floors). Each logs to var/bench/logs/."""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "var" / "bench"
LOG_DIR = OUT_DIR / "logs"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_kib(pid: int) -> int:
    """Resident memory of one process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class Process:
    """One child process with its log file; ``stop`` is safe to call twice."""

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str]) -> None:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.log_path = LOG_DIR / f"{name}.log"
        with self.log_path.open("wb") as log:
            self.popen = subprocess.Popen(  # noqa: S603  (fixed command lines of ours)
                argv, cwd=ROOT, env=dict(env), stdout=log, stderr=subprocess.STDOUT
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_port(self, port: int, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log()[-3000:]}")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not listen on {port}:\n{self.log()[-3000:]}")

    def wait_for_log(self, text: str, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while text not in self.log():
            if self.popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not say {text!r}:\n{self.log()[-3000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def start_daphne(name: str, port: int, env: Mapping[str, str]) -> Process:
    """A Daphne server as docs/running.md deploys it."""
    process = Process(
        name,
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
         "--ping-interval", "20", "--ping-timeout", "30", "config.asgi:application"],
        env,
    )  # fmt: skip
    process.wait_for_port(port)
    return process


def start_celery_worker(name: str, env: Mapping[str, str], seconds: float = 60) -> Process:
    """A worker as deployed (prefork, one process per core; WARNING logs: at INFO it
    writes two lines per task); ready when it answers a ping through the broker."""
    from config.celery import app

    node = f"{name}@bench"
    process = Process(
        name,
        [sys.executable, "-m", "celery", "-A", "config", "worker", "--concurrency", "2",
         "--loglevel", "WARNING", "--without-gossip", "--without-mingle", "-n", node],
        env,
    )  # fmt: skip
    deadline = time.monotonic() + seconds
    while not app.control.ping(destination=[node], timeout=0.5):
        if process.popen.poll() is not None or time.monotonic() > deadline:
            process.stop()
            raise RuntimeError(f"{name} did not start:\n{process.log()[-3000:]}")
    return process


def start_floor(name: str, port: int, pairs_file: Path, dsn: str | None) -> Process:
    argv = [sys.executable, "-m", "bench.floors", "--port", str(port), "--pairs", str(pairs_file)]
    if dsn:
        argv += ["--durable", dsn]
    process = Process(name, argv, os.environ)
    process.wait_for_log("ready")
    return process

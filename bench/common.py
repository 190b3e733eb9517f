"""Shared plumbing for the benchmarks: the production-like environment, the bench database,
a gunicorn process, wrk runs, and the machine description every result is recorded with.

Every benchmark is a plain script (`.venv/bin/python bench/<name>.py`) that calls `setup()` before
touching Django, so the ORM it seeds with uses exactly the settings gunicorn serves with.
"""

import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
OUT = BENCH / "out"
PYTHON = ROOT / ".venv" / "bin" / "python"
GUNICORN = ROOT / ".venv" / "bin" / "gunicorn"
WRK = shutil.which("wrk") or "/usr/bin/wrk"
DB_NAME = os.environ.get("BENCH_DB", "herald_bench")
PG = "postgres://postgres@127.0.0.1:5432"


def free_port(exclude=()) -> int:
    """A free port; within BENCH_PORTS (e.g. 18300-18399) when set, for a shared machine."""
    low, _, high = os.environ.get("BENCH_PORTS", "").partition("-")
    candidates = range(int(low), int(high) + 1) if low and high else [0]
    for port in candidates:
        if port in exclude:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise RuntimeError(f"no free port in BENCH_PORTS={os.environ['BENCH_PORTS']}")


def bench_env(port: int, **extra) -> dict:
    """Production settings with only what a bench needs changed (no TLS, no rate limit)."""
    env = {
        "DJANGO_SETTINGS_MODULE": "bench.settings",
        "SECRET_KEY": "bench-only-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz",
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "false",
        "DATABASE_URL": f"{PG}/{DB_NAME}",
        "RATELIMIT_ENABLE": "false",
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "STATICFILES_BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage",
        # Production settings: the sandbox only when asked for, with a secret of our own.
        "SMS_PROVIDERS_ENABLED": "sandbox",
        "SANDBOX_WEBHOOK_SECRET": "bench-sandbox-secret",
    }
    env.update({k: str(v) for k, v in extra.items()})
    return env


def setup(port: int, **extra):
    """Apply the bench environment to this process, create and migrate the database, and start
    Django. Returns the environment for child processes."""
    env = bench_env(port, **extra)
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    import psycopg

    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return {**os.environ, **env}


def reset_tables():
    """Empty Herald's tables (not auth), so every run starts from the same state."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
            "AND tablename LIKE 'messaging_%%'"
        )
        tables = [row[0] for row in cursor.fetchall()]
        if tables:
            cursor.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " CASCADE")


class Gunicorn:
    """gunicorn serving bench.settings (production settings + /bench/ok) on a free port."""

    def __init__(self, env: dict, port: int, workers: int, worker_class="sync", threads=1,
                 settings_module=None):  # fmt: skip
        env = {**env, "DJANGO_SETTINGS_MODULE": settings_module} if settings_module else env
        self.env, self.port, self.workers = env, port, workers
        self.worker_class, self.threads = worker_class, threads
        self.proc = None
        self.log_path = OUT / f"gunicorn-{port}.log"

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list:
        cmd = [str(GUNICORN), "config.wsgi", "--bind", f"127.0.0.1:{self.port}",
               "--workers", str(self.workers), "--timeout", "30",
               "--worker-class", self.worker_class]  # fmt: skip
        if self.worker_class == "gthread":
            cmd += ["--threads", str(self.threads)]
        return cmd

    def __enter__(self):
        OUT.mkdir(exist_ok=True)
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - closed in __exit__
        self.proc = subprocess.Popen(
            self.command(), cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        self.__exit__(None, None, None)
        raise RuntimeError(f"gunicorn did not start; see {self.log_path}")

    def __exit__(self, *exc):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_TOTAL = re.compile(r"(\d+) requests in ([\d.]+)(\w+),")
_NON2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_LATENCY = re.compile(r"Latency\s+([\d.]+\w+)\s+([\d.]+\w+)\s+([\d.]+\w+)")


def wrk(url: str, *, duration: int, connections: int, threads: int, script=None, args=()):
    """Run wrk and return its figures (and the exact command, for RESULTS.md)."""
    cmd = [WRK, f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency"]
    if script:
        cmd += ["-s", str(script)]
    cmd.append(url)
    if args:
        cmd += ["--", *map(str, args)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=duration + 60)
    text = out.stdout
    errors = _ERRORS.search(text)
    latency = _LATENCY.search(text)
    return {
        "command": " ".join(str(c) for c in cmd),
        "requests_per_second": float(_RPS.search(text).group(1)),
        "requests": int(_TOTAL.search(text).group(1)),
        "non_2xx": int(_NON2XX.search(text).group(1)) if _NON2XX.search(text) else 0,
        "socket_errors": [int(g) for g in errors.groups()] if errors else [0, 0, 0, 0],
        "latency_avg": latency.group(1) if latency else "",
        "output": text,
    }


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its children that are alive (gunicorn's workers)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pids = [pid]
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            pids += [int(p) for p in fh.read().split()]
    except OSError:
        pass
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as fh:
                fields = fh.read().rpartition(")")[2].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
        except OSError:
            continue
    return total


def write_requests(path: Path, raw_requests):
    """Write raw HTTP requests for wrk/requests.lua: each as `<length>\\n<bytes>`."""
    count = 0
    with open(path, "wb") as fh:
        for raw in raw_requests:
            fh.write(b"%d\n" % len(raw))
            fh.write(raw)
            count += 1
    return count


def raw_post(path: str, port: int, body: bytes, headers: dict) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def machine() -> dict:
    mem_kb = 0
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    cpu = ""
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    pg = subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-Atc", "SHOW server_version"],
        capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "postgresql": pg,
        "kernel": platform.release(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def save(name: str, result: dict):
    OUT.mkdir(exist_ok=True)
    path = OUT / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, default=str))
    return path


def commit_latency_ms(samples: int = 200) -> float:
    """Median time of one INSERT + COMMIT on the bench database: what the disk's fsync costs
    right now (other work on a shared machine moves it a lot), recorded beside every result."""
    import psycopg

    with psycopg.connect(f"{PG}/{DB_NAME}", autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_commit_probe (x int)")
        times = []
        for _ in range(samples):
            started = time.perf_counter()
            conn.execute("INSERT INTO bench_commit_probe VALUES (1)")
            times.append((time.perf_counter() - started) * 1000)
        conn.execute("DROP TABLE bench_commit_probe")
    times.sort()
    return round(times[len(times) // 2], 3)

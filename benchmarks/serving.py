"""Online prediction: aiaas against MLflow, BentoML, a minimal FastAPI route and a bare ASGI app.

    python benchmarks/serving.py                 # the full run (~12 min; + ~4 min first setup)
    python benchmarks/serving.py --quick         # a short look (also: BENCH_QUICK=1)
    python benchmarks/serving.py --reps 2        # every configuration twice, interleaved

The same LightGBM classifier (``../shared/bench/serving/train_model.py``: make_classification
20000×20, 200 trees) is served by every server, one server at a time, each pinned to CPU 0
(``taskset -c 0``) with wrk pinned to CPU 1, under the same load: 1-row and 64-row requests at
8 and 64 connections, ``wrk -t1`` for a discarded warm-up then a measured run with
``--latency``. Reported per cell: requests/s, p50, p99, non-2xx answers, socket errors, and
the server's CPU use (its process tree's CPU time over the measured run, and per request).

This machine is shared, so: as root, servers and wrk run under ``nice -n -15`` and their
sessions' autogroups at nice -15 (all alike; ``--nice``); each configuration first waits up
to 15 s for idle CPUs; every server is measured once its own processes are idle after its
start; and every cell records how much of CPU 0 other processes still took.

- Anchors, started by the harness's own scripts in ``../shared/bench/serving`` (read-only,
  used as they are): the bare ASGI ceiling, the minimal FastAPI route, ``mlflow models
  serve`` and BentoML (without and with adaptive batching).
- aiaas: ``aiaas serve --workers 1 --job-workers 0`` on a fresh data dir; the booster is
  converted to ONNX (onnxmltools, ``zipmap=False``), uploaded as version 1 of ``bench-lgbm``
  and deployed as the endpoint ``bench``; ``/predict`` (``instances`` body) and the
  MLflow-compatible ``/invocations`` (``dataframe_split`` body) are measured with an
  organization API key; then the same file is uploaded as version 2 and made the endpoint's
  shadow, and ``/predict`` is measured again (the shadow's cost); then a second server with
  ``AIAAS_SERVING__BATCHING=false`` (micro-batching is on by default). Every other setting is
  the default.

Every server's answers are checked against the harness's ``expected_{1,64}.json`` before it is
measured (P(class 1) within 1e-6 for the float64 anchors, 1e-5 for ONNX's float32).

One-time setup, done here when missing (idempotent; ``$BENCH_HOME``, default
``$TMPDIR/serving-bench``, outside the repo): ``wrk`` (apt-get), the anchors' virtualenvs
``$BENCH_HOME/venv`` and ``$BENCH_HOME/bento-venv`` from ``benchmarks/serving/*.lock`` (MLflow
and BentoML are benchmark-only: never aiaas dependencies), the harness's model and payloads.

The table is printed and written to benchmarks/results/serving.md.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "benchmarks" / "serving"
BIN = Path(sys.executable).parent
AIAAS = str(BIN / "aiaas")
HARNESS = ROOT.parent / "shared" / "bench" / "serving"
RESULTS = ROOT / "benchmarks" / "results"
BENCH_HOME = Path(
    os.environ.get("BENCH_HOME") or Path(tempfile.gettempdir()) / "serving-bench"
).resolve()
MODEL_DIR = BENCH_HOME / "models"
LOG_DIR = BENCH_HOME / "logs"
SERVER_CPU, WRK_CPU = "0", "1"
ROWS = (1, 64)
CONNS = (8, 64)
MODEL, ENDPOINT = "bench-lgbm", "bench"
TOL_ANCHOR, TOL_AIAAS = 1e-6, 1e-5
# targets of the serving issue
TARGET_VS_FASTAPI = 1.25
TARGET_P99_MS = 10.0
TARGET_SHADOW = 0.05
#: ``nice -n N`` before every server and wrk (set by --nice): the same for all of them
NICE: list[str] = []
DISTURBED = 0.10  # median share of CPU 0 taken by other processes above which a run says so


# --------------------------------------------------------------------------- one-time setup
def _run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=True, text=True, **kw)


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        raise SystemExit("wrk is missing: install it (apt-get install wrk) and run again")
    print("installing wrk (apt-get, first run only)", flush=True)
    _run(["apt-get", "update", "-qq"], stdout=subprocess.DEVNULL)
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    _run(["apt-get", "install", "-y", "-qq", "wrk"], stdout=subprocess.DEVNULL, env=env)
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("apt-get install wrk did not provide a wrk binary")
    return found


def ensure_venv(venv: Path, lock: Path) -> Path:
    """``venv`` synced to ``lock`` (a uv lock), unless it already was (a stamp says so)."""
    py = venv / "bin" / "python"
    stamp = venv / ".aiaas-bench-lock"
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()
    if py.exists() and stamp.exists() and stamp.read_text().strip() == digest:
        return py
    print(f"preparing {venv} from {lock.relative_to(ROOT)} (first run only)", flush=True)
    if not py.exists():
        _run([sys.executable, "-m", "venv", str(venv)])
    uv = BIN / "uv"
    if uv.exists():
        _run([str(uv), "pip", "sync", "-q", "--python", str(py), str(lock)])
    else:  # pip reads the same file (every line pinned)
        _run([str(py), "-m", "pip", "install", "-q", "-r", str(lock)])
    stamp.write_text(digest + "\n")
    return py


def ensure_model(anchor_python: Path) -> None:
    wanted = ["model.txt", "features.json", "mlflow_model/MLmodel"] + [
        f"{p}_{n}.json" for p in ("payload_mlflow", "payload_instances", "expected") for n in ROWS
    ]
    if all((MODEL_DIR / w).exists() for w in wanted):
        return
    print(f"training the harness model into {MODEL_DIR} (first run only)", flush=True)
    _run([str(anchor_python), str(HARNESS / "train_model.py"), str(MODEL_DIR)])


def ensure_onnx() -> Path:
    """The harness's booster as ONNX (float input [None, 20], probabilities without ZipMap)."""
    out = BENCH_HOME / "aiaas" / "model.onnx"
    src = MODEL_DIR / "model.txt"
    if out.exists() and out.stat().st_mtime >= src.stat().st_mtime:
        return out
    import lightgbm as lgb
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    booster = lgb.Booster(model_file=str(src))
    width = len(json.loads((MODEL_DIR / "features.json").read_text()))
    onnx_model = convert_lightgbm(
        booster, initial_types=[("input", FloatTensorType([None, width]))], zipmap=False
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(onnx_model.SerializeToString())
    tmp.replace(out)
    return out


# --------------------------------------------------------------------------- processes
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tree(pid: int) -> list[int]:
    """``pid`` and every live descendant (from /proc: the children of each of its threads)."""
    found, todo = [pid], [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            with contextlib.suppress(OSError, ValueError):
                kids = [int(x) for x in (task / "children").read_text().split()]
                found += kids
                todo += kids
    return found


def prioritize(pids: list[int]) -> None:
    """Give ``pids`` the --nice level against other processes. With the kernel's autogroups
    (``/proc/sys/kernel/sched_autogroup_enabled``), a nice value counts only inside its
    session, and every server runs in its own session(s), so the session's autogroup gets
    it too (root only)."""
    if not NICE:
        return
    level = NICE[-1]
    for p in pids:
        with contextlib.suppress(OSError):
            Path(f"/proc/{p}/autogroup").write_text(level)


def _cpu_ticks(pids: list[int]) -> int:
    total = 0
    for p in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
    return total


def _cpu_stat(cpu: int) -> tuple[int, int]:
    """(busy, total) ticks of one CPU since boot, from /proc/stat."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            v = [int(x) for x in line.split()[1:]]
            idle = v[3] + v[4]  # idle + iowait
            total = sum(v[:8])
            return total - idle, total
    raise RuntimeError(f"no cpu{cpu} in /proc/stat")


def wait_quiet(limit_s: float, busy_max: float = 0.10) -> str:
    """Wait (at most ``limit_s``) for a second in which neither CPU is busier than ``busy_max``:
    this machine is shared, and other processes on CPU 0 would take the server's time."""
    start = time.monotonic()
    busy: list[float] = []
    while True:
        before = [_cpu_stat(c) for c in (0, 1)]
        time.sleep(1.0)
        after = [_cpu_stat(c) for c in (0, 1)]
        busy = [(a[0] - b[0]) / max(1, a[1] - b[1]) for a, b in zip(after, before, strict=True)]
        waited = time.monotonic() - start
        if max(busy) <= busy_max:
            return f"quiet after {waited:.0f} s"
        if waited >= limit_s:
            return f"not quiet after {waited:.0f} s (CPU 0 {busy[0]:.0%}, CPU 1 {busy[1]:.0%} busy)"


def settle(server: Server, limit_s: float = 120.0, idle: float = 0.05) -> float:
    """Seconds until the server's process tree is idle (< ``idle`` of a core over 1 s).

    A server may answer its readiness URL while it still works in the background (aiaas
    imports modules in a thread after its start, and garbage collections over a growing
    heap pause it for up to seconds meanwhile); every server is measured once it is idle."""
    tick = os.sysconf("SC_CLK_TCK")
    start = time.monotonic()
    while time.monotonic() - start < limit_s:
        pids = _tree(server.pid)
        c0 = _cpu_ticks(pids)
        time.sleep(1.0)
        if (_cpu_ticks(pids) - c0) / tick <= idle:
            break
    return time.monotonic() - start


def _load1() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


@dataclass
class Server:
    name: str
    pid: int
    base: str
    log: Path
    stop_cmd: list[str] | None = None  # the harness's stop_server.sh; else: killpg

    def stop(self) -> None:
        if self.stop_cmd is not None:
            subprocess.run(self.stop_cmd, check=False, capture_output=True)
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                os.killpg(self.pid, 0)
            except ProcessLookupError:
                return
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, os.WNOHANG)
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)

    def tail(self, n: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        return ""


def _harness_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIAAS_", "BENCH_"))}
    return env | {"BENCH_HOME": str(BENCH_HOME), "SERVER_CPU": SERVER_CPU}


def start_anchor(name: str, script: str, args: list[str]) -> Server:
    """A harness server: ``start_*.sh PORT ...`` prints its PID (== its process group)."""
    port = _free_port()
    done = subprocess.run(
        [*NICE, "bash", str(HARNESS / script), str(port), *args],
        env=_harness_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    last = (done.stdout.strip().splitlines() or [""])[-1]
    if done.returncode or not last.isdigit():
        raise RuntimeError(f"{script} failed ({done.returncode}): {done.stderr.strip()[-800:]}")
    stop = ["bash", str(HARNESS / "stop_server.sh"), last]
    log = LOG_DIR / f"{script.removeprefix('start_').removesuffix('.sh')}-{port}.log"
    return Server(name, int(last), f"http://127.0.0.1:{port}", log, stop)


def _aiaas_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """Ours, not the developer's AIAAS_* settings; no job worker competes with serving."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIAAS_", "RAY_"))}
    return env | {"AIAAS_DATA_DIR": str(data_dir), "AIAAS_JOBS__WORKERS": "0"} | extra


def _cli(data_dir: Path, *args: str) -> str:
    done = subprocess.run(
        [AIAAS, *args], env=_aiaas_env(data_dir), cwd=data_dir, capture_output=True, text=True
    )
    if done.returncode:
        raise RuntimeError(f"aiaas {' '.join(args)}: {done.stderr.strip()[-500:]}")
    return done.stdout.strip().splitlines()[-1]


def start_aiaas(name: str, data_dir: Path, **env: str) -> Server:
    port = _free_port()
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = LOG_DIR / f"aiaas-{port}.log"
    cmd = [*NICE, "taskset", "-c", SERVER_CPU, AIAAS, "serve", "--host", "127.0.0.1",
           "--port", str(port), "--workers", "1", "--job-workers", "0"]  # fmt: skip
    with log.open("ab") as out:
        popen = subprocess.Popen(
            cmd,
            env=_aiaas_env(data_dir, **env),
            cwd=data_dir,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(name, popen.pid, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + 120
    while True:
        if popen.poll() is not None:
            raise RuntimeError(f"aiaas serve exited ({popen.returncode}):\n{server.tail()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{server.base}/readyz", timeout=2).status_code == 200:
                return server
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"aiaas serve not ready after 120 s:\n{server.tail()}")
        time.sleep(0.2)


# --------------------------------------------------------------------------- checks
def _p1(obj: Any) -> list[float]:
    """P(class 1) per row from any answer shape the harness accepts, and aiaas's /predict."""
    if isinstance(obj, dict):
        for key in ("predictions", "outputs", "probabilities", "data", "result"):
            if key in obj:
                return _p1(obj[key])
        raise ValueError(f"no predictions key in {list(obj)[:5]}")
    out = []
    for v in obj:
        if isinstance(v, list | tuple):
            out.append(float(v[-1]))
        elif isinstance(v, dict) and "probabilities" in v:
            out.append(float(v["probabilities"]["1"]))
        elif isinstance(v, dict):
            out.append(float(v.get("1", list(v.values())[-1])))
        else:
            out.append(float(v))
    return out


def check(url: str, payload: Path, rows: int, tol: float, headers: dict[str, str]) -> str:
    """One POST; HTTP 200 and P(class 1) of every row within ``tol`` of the harness's."""
    resp = httpx.post(
        url,
        content=payload.read_bytes(),
        headers={"Content-Type": "application/json", **headers},
        timeout=60,
    )
    if resp.status_code != 200:
        raise RuntimeError(f"{url} <- {payload.name}: HTTP {resp.status_code} {resp.text[:300]}")
    got = _p1(resp.json())
    want = json.loads((MODEL_DIR / f"expected_{rows}.json").read_text())
    if len(got) != len(want):
        raise RuntimeError(f"{url} <- {payload.name}: {len(got)} predictions, want {len(want)}")
    worst = max(abs(a - b) for a, b in zip(got, want, strict=True))
    if worst > tol:
        raise RuntimeError(f"{url} <- {payload.name}: P(class 1) off by {worst:.2e} > {tol:g}")
    return f"{rows} rows: max |Δp| {worst:.1e}"


# --------------------------------------------------------------------------- load
@dataclass
class Cell:
    server: str
    route: str
    rows: int
    conns: int
    rep: int
    rps: float = float("nan")
    p50: float = float("nan")
    p99: float = float("nan")
    non2xx: int = -1
    sock_err: int = -1
    requests: int = 0
    cpu: float = float("nan")  # the server's CPU time / measured wall time
    cpu_ms: float = float("nan")  # the server's CPU time per request answered
    others: float = float("nan")  # CPU 0's busy time not the server's / measured wall time
    load1: str = ""
    error: str = ""


@dataclass
class Config:
    """One measured server configuration (a row group of the table)."""

    label: str
    route: str
    cells: list[Cell] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    error: str = ""
    quiet: str = ""
    settle_s: float = float("nan")  # readiness → idle


def wrk(
    url: str, body: Path, conns: int, duration: float, warmup: float, auth: str | None
) -> dict[str, Any]:
    env = os.environ | {"WRK_AUTHORIZATION": auth or ""}
    base = [*NICE, "taskset", "-c", WRK_CPU, "wrk", "-t1", f"-c{conns}", "--timeout", "10s",
            "-s", str(HERE / "wrk_post.lua")]  # fmt: skip
    if warmup > 0:
        subprocess.run([*base, f"-d{warmup:g}s", url, "--", str(body)], env=env,
                       capture_output=True, check=False)  # fmt: skip
    done = subprocess.run([*base, f"-d{duration:g}s", "--latency", url, "--", str(body)],
                          env=env, capture_output=True, text=True, check=False)  # fmt: skip
    raw = LOG_DIR / "wrk"
    raw.mkdir(parents=True, exist_ok=True)
    (raw / f"{time.strftime('%H%M%S')}-{os.getpid()}-c{conns}-{body.stem}.txt").write_text(
        done.stdout + done.stderr
    )
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {(done.stdout + done.stderr).strip()[-300:]}")
    return dict(kv.split("=", 1) for kv in line.split()[1:])


def measure(
    cfg: Config, server: Server, path: str, payload: str, rep: int, args: argparse.Namespace,
    auth: str | None = None,
) -> None:  # fmt: skip
    """The four cells (rows × connections) of one configuration on a running server."""
    tick = os.sysconf("SC_CLK_TCK")
    if args.quiet_wait > 0:
        cfg.quiet = wait_quiet(args.quiet_wait)
        print(f"   {cfg.label}: {cfg.quiet}", flush=True)
    for rows in ROWS:
        for conns in CONNS:
            cell = Cell(cfg.label, cfg.route, rows, conns, rep)
            body = MODEL_DIR / f"{payload}_{rows}.json"
            try:
                pids = _tree(server.pid)
                prioritize(pids)
                # the CPU time is sampled around the measured run only, not the warm-up
                if args.warmup > 0:
                    wrk(server.base + path, body, conns, args.warmup, 0, auth)
                t0, c0, s0 = time.monotonic(), _cpu_ticks(pids), _cpu_stat(int(SERVER_CPU))
                res = wrk(server.base + path, body, conns, args.duration, 0, auth)
                c1, t1, s1 = _cpu_ticks(pids), time.monotonic(), _cpu_stat(int(SERVER_CPU))
                cell.rps, cell.p50, cell.p99 = (
                    float(res["rps"]),
                    float(res["p50_ms"]),
                    float(res["p99_ms"]),
                )
                cell.non2xx, cell.sock_err = int(res["non2xx"]), int(res["sock_err"])
                cell.requests = int(res["requests"])
                cell.cpu = (c1 - c0) / tick / (t1 - t0)
                cell.cpu_ms = 1000 * (c1 - c0) / tick / max(1, cell.requests)
                # (the two counters are read a moment apart: clamp the rounding below 0)
                cell.others = max(0.0, ((s1[0] - s0[0]) - (c1 - c0)) / max(1, s1[1] - s0[1]))
            except Exception as exc:
                cell.error = f"{type(exc).__name__}: {exc}"[:300]
            cell.load1 = _load1()
            cfg.cells.append(cell)
            print(
                f"   {cfg.label:<28} rows={rows:<3} c={conns:<3} rps={cell.rps:8.0f} "
                f"p50={cell.p50:7.2f} ms p99={cell.p99:7.2f} ms non2xx={cell.non2xx} "
                f"cpu={cell.cpu:4.0%} ({cell.cpu_ms:.2f} ms/req) others={cell.others:4.0%} "
                f"load1={cell.load1} {cell.error}",
                flush=True,
            )


# --------------------------------------------------------------------------- aiaas
@dataclass
class Aiaas:
    """A fresh data dir with organization ``bench`` and a developer API key."""

    data_dir: Path
    key: str
    onnx: Path
    columns: list[str]

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def client(self, server: Server) -> httpx.Client:
        return httpx.Client(base_url=server.base, headers=self.headers, timeout=120)

    def upload(self, client: httpx.Client) -> int:
        resp = client.post(
            f"/api/v1/models/{MODEL}/versions",
            files={"file": ("model.onnx", self.onnx.read_bytes(), "application/octet-stream")},
            data={"signature": json.dumps({"columns": self.columns})},
        )
        if resp.status_code != 201:
            raise RuntimeError(f"upload: HTTP {resp.status_code} {resp.text[:400]}")
        return int(resp.json()["number"])

    def deploy(self, client: httpx.Client, version: int) -> dict[str, Any]:
        """Create the endpoint; then the first request after deploy against the next ones."""
        body = {"name": ENDPOINT, "model": MODEL, "version": version}
        resp = client.post("/api/v1/endpoints", json=body)
        if resp.status_code != 201:
            raise RuntimeError(f"deploy: HTTP {resp.status_code} {resp.text[:400]}")
        deployed = time.perf_counter()
        payload = (MODEL_DIR / "payload_instances_1.json").read_bytes()
        url = f"/api/v1/endpoints/{ENDPOINT}/predict"
        hdrs = {"Content-Type": "application/json"}
        attempts, first_ms = 0, None
        while time.perf_counter() - deployed < 60:
            attempts += 1
            t = time.perf_counter()
            r = client.post(url, content=payload, headers=hdrs)
            if r.status_code == 200:
                first_ms = (time.perf_counter() - t) * 1000
                break
            time.sleep(0.05)
        if first_ms is None:
            raise RuntimeError(f"no 200 from {url} within 60 s of the deploy: {r.status_code}")
        to_first = (time.perf_counter() - deployed) * 1000
        nexts = []
        for _ in range(20):
            t = time.perf_counter()
            client.post(url, content=payload, headers=hdrs).raise_for_status()
            nexts.append((time.perf_counter() - t) * 1000)
        return {"first_ms": first_ms, "attempts": attempts, "deploy_to_first_ms": to_first,
                "next_ms": statistics.median(nexts)}  # fmt: skip


def prepare_aiaas(onnx: Path) -> Aiaas:
    data_dir = Path(tempfile.mkdtemp(prefix="aiaas-bench-serving-"))
    _cli(data_dir, "admin", "create-org", "bench")
    key = _cli(data_dir, "admin", "create-api-key", "--org", "bench", "--role", "developer",
               "--name", "bench")  # fmt: skip
    columns = json.loads((MODEL_DIR / "features.json").read_text())
    return Aiaas(data_dir, key, onnx, columns)


def _metric(server: Server, name: str, **labels: str) -> float:
    """Sum of a Prometheus sample over the series whose labels include ``labels``."""
    text = httpx.get(f"{server.base}/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


def run_aiaas(
    results: dict[str, Any], onnx: Path, rep: int, args: argparse.Namespace
) -> list[Config]:
    """aiaas with its defaults (adaptive batching on): /predict, /invocations, /predict with
    a shadow version."""
    predict = Config("aiaas /predict", "/predict (instances)")
    invoc = Config("aiaas /invocations", "/invocations (dataframe_split)")
    shadow = Config("aiaas /predict + shadow", "/predict (instances), shadow v2")
    configs = [predict, invoc, shadow]
    server: Server | None = None
    app: Aiaas | None = None
    try:
        app = prepare_aiaas(onnx)
        server = start_aiaas("aiaas", app.data_dir)
        predict.settle_s = settle(server)
        with app.client(server) as client:
            version = app.upload(client)
            results.setdefault("cold", []).append(app.deploy(client, version) | {"server": "on"})
        base = f"/api/v1/endpoints/{ENDPOINT}"
        for cfg, path, payload in ((predict, "/predict", "payload_instances"),
                                   (invoc, "/invocations", "payload_mlflow")):  # fmt: skip
            cfg.checks = [
                check(
                    server.base + base + path,
                    MODEL_DIR / f"{payload}_{n}.json",
                    n,
                    TOL_AIAAS,
                    app.headers,
                )  # fmt: skip
                for n in ROWS
            ]
        auth = app.headers["Authorization"]
        print(f"-- aiaas checks: {predict.checks + invoc.checks}", flush=True)
        settle(server)  # the upload's checking child, the model's load
        measure(predict, server, base + "/predict", "payload_instances", rep, args, auth)
        measure(invoc, server, base + "/invocations", "payload_mlflow", rep, args, auth)
        with app.client(server) as client:
            v2 = app.upload(client)
            resp = client.patch(base, json={"shadow": {"version": v2}})
            if resp.status_code != 200:
                raise RuntimeError(f"PATCH shadow: HTTP {resp.status_code} {resp.text[:300]}")
        time.sleep(1.0)  # the endpoint's revision reaches the worker within refresh_s (0.25 s)
        shadow.checks = [
            check(
                server.base + base + "/predict",
                MODEL_DIR / f"payload_instances_{n}.json",
                n,
                TOL_AIAAS,
                app.headers,
            )  # fmt: skip
            for n in ROWS
        ]
        rows_metric = "aiaas_predictions_rows_total"
        before = {r: _metric(server, rows_metric, role=r) for r in ("primary", "shadow")}
        measure(shadow, server, base + "/predict", "payload_instances", rep, args, auth)
        time.sleep(1.0)  # the shadow thread drains its queue
        after = {r: _metric(server, rows_metric, role=r) for r in ("primary", "shadow")}
        results.setdefault("shadow_rows", []).append(
            {r: after[r] - before[r] for r in ("primary", "shadow")}
        )
    except Exception as exc:
        err = f"{type(exc).__name__}: {exc}"[:600]
        if server is not None:
            err += f"\nserver log:\n{server.tail(8)}"
        for cfg in configs:
            if not cfg.cells:
                cfg.error = err
        print(f"-- aiaas failed: {err}", flush=True)
    finally:
        if server is not None:
            server.stop()
        if app is not None:
            shutil.rmtree(app.data_dir, ignore_errors=True)
    return configs


def run_aiaas_unbatched(
    results: dict[str, Any], onnx: Path, rep: int, args: argparse.Namespace
) -> list[Config]:
    cfg = Config("aiaas /predict, no batching", "/predict (instances), SERVING__BATCHING=false")
    server: Server | None = None
    app: Aiaas | None = None
    try:
        app = prepare_aiaas(onnx)
        server = start_aiaas("aiaas-unbatched", app.data_dir, AIAAS_SERVING__BATCHING="false")
        cfg.settle_s = settle(server)
        with app.client(server) as client:
            version = app.upload(client)
            results.setdefault("cold", []).append(app.deploy(client, version) | {"server": "off"})
        path = f"/api/v1/endpoints/{ENDPOINT}/predict"
        cfg.checks = [
            check(
                server.base + path,
                MODEL_DIR / f"payload_instances_{n}.json",
                n,
                TOL_AIAAS,
                app.headers,
            )  # fmt: skip
            for n in ROWS
        ]
        settle(server)
        measure(cfg, server, path, "payload_instances", rep, args, app.headers["Authorization"])
    except Exception as exc:
        cfg.error = f"{type(exc).__name__}: {exc}"[:600]
        if server is not None:
            cfg.error += f"\nserver log:\n{server.tail(8)}"
        print(f"-- aiaas without batching failed: {cfg.error}", flush=True)
    finally:
        if server is not None:
            server.stop()
        if app is not None:
            shutil.rmtree(app.data_dir, ignore_errors=True)
    return [cfg]


ANCHORS = [
    # label, route, script, args, URL path, payload prefix, checked
    ("raw ASGI (ceiling)", "any path, constant answer", "start_raw_asgi.sh", ["1"], "/",
     "payload_instances", False),
    ("FastAPI minimal", "/predict (instances)", "start_fastapi.sh", ["1"], "/predict",
     "payload_instances", True),
    ("MLflow", "/invocations (dataframe_split)", "start_mlflow.sh", [], "/invocations",
     "payload_mlflow", True),
    ("BentoML", "/predict (instances)", "start_bento.sh", ["nobatch", "1"], "/predict",
     "payload_instances", True),
    ("BentoML, batching", "/predict (instances), batchable", "start_bento.sh", ["batch", "1"],
     "/predict", "payload_instances", True),
]  # fmt: skip


def run_anchor(spec: tuple[Any, ...], rep: int, args: argparse.Namespace) -> Config:
    label, route, script, sargs, path, payload, checked = spec
    cfg = Config(label, route)
    server = None
    try:
        server = start_anchor(label, script, sargs)
        cfg.settle_s = settle(server)
        if checked:
            cfg.checks = [
                check(server.base + path, MODEL_DIR / f"{payload}_{n}.json", n, TOL_ANCHOR, {})
                for n in ROWS
            ]
        measure(cfg, server, path, payload, rep, args)
    except Exception as exc:
        cfg.error = f"{type(exc).__name__}: {exc}"[:600]
        print(f"-- {label} failed: {cfg.error}", flush=True)
    finally:
        if server is not None:
            server.stop()
    return cfg


# --------------------------------------------------------------------------- report
def _med(values: list[float]) -> float:
    vals = [v for v in values if v == v]
    return statistics.median(vals) if vals else float("nan")


def _f(v: float, nd: int = 0) -> str:
    return "—" if v != v else f"{v:,.{nd}f}"


def _ok(flag: bool | None) -> str:
    return "—" if flag is None else ("yes" if flag else "**no**")


def _by_label(configs: list[Config]) -> dict[str, list[Cell]]:
    out: dict[str, list[Cell]] = {}
    for cfg in configs:
        out.setdefault(cfg.label, []).extend(cfg.cells)
    return out


def _stat(cells: list[Cell], rows: int, conns: int, attr: str) -> float:
    return _med([getattr(c, attr) for c in cells if (c.rows, c.conns) == (rows, conns)])


def render(configs: list[Config], results: dict[str, Any], args: argparse.Namespace) -> str:
    cells = _by_label(configs)
    labels = list(dict.fromkeys(c.label for c in configs))
    routes = {c.label: c.route for c in configs}
    lines = [
        "# Serving benchmark: aiaas vs MLflow, BentoML, minimal FastAPI, bare ASGI",
        "",
        f"Machine: {os.cpu_count()} cores; run started at {results['started']} UTC; load "
        f"average at the start {results['load']}; aiaas {results['commit']}. "
        f"{'**Quick run** (--quick / BENCH_QUICK): short and noisy. ' if args.quick else ''}"
        "Every server is pinned to CPU 0 (`taskset -c 0`, one worker process), wrk to CPU 1 "
        f"(`wrk -t1`, {args.warmup:g} s warm-up discarded, then {args.duration:g} s measured "
        f"with `--latency`), one server at a time"
        f"{f', servers and wrk under `nice -n {args.nice}`' if args.nice else ''}; "
        f"{args.reps} pass(es), the configurations "
        "interleaved in each; with several passes each number is the median of the passes. "
        "The same model everywhere: the harness's LightGBM classifier (20 features, 200 "
        "trees); aiaas serves it as ONNX (onnxmltools, float32), the anchors with LightGBM "
        "(float64). Every server's answers were checked against the harness's expected P(class "
        f"1) before it was measured (within {TOL_ANCHOR:g}, aiaas {TOL_AIAAS:g}). aiaas runs "
        "with its default settings but `AIAAS_JOBS__WORKERS=0` (no training worker): among "
        "them the prediction log on (every prediction's inputs and outputs kept for "
        "monitoring). "
        "`server CPU` is the server's process tree's CPU time over the measured run (100 % = "
        "CPU 0 saturated); `others on CPU 0` is the rest of CPU 0's busy time then (other "
        "processes, interrupts).",
        "",
        f"Versions: {results['versions']}.",
        "",
    ]
    others = _med([c.others for cfg in configs for c in cfg.cells])
    if others == others and others > DISTURBED:
        lines += [
            f"**A disturbed run**: other processes on this shared machine took {others:.0%} of "
            "CPU 0 (the servers' core) in the median cell (`others on CPU 0`), so the servers "
            "got a fraction of their core and latencies include waiting for it. Absolute "
            "numbers are not representative and the ratios carry the contention's changes "
            "between configurations; `server CPU ms / request` is the least disturbed figure. "
            "Run again on a quiet machine.",
            "",
        ]
    lines += [
        "| server | route | rows | conns | req/s | p50 ms | p99 ms | non-2xx | sock err | "
        "server CPU | server CPU ms / request | others on CPU 0 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for rows in ROWS:
        for conns in CONNS:
            for label in labels:
                mine = [c for c in cells[label] if (c.rows, c.conns) == (rows, conns)]
                if not mine:
                    continue
                rps_text = " / ".join(_f(c.rps) for c in mine)
                non2xx = " / ".join(str(c.non2xx) for c in mine)
                sock = " / ".join(str(c.sock_err) for c in mine)
                err = "; ".join(c.error for c in mine if c.error)
                lines.append(
                    f"| {label} | {routes[label]} | {rows} | {conns} | {rps_text} | "
                    f"{_f(_stat(mine, rows, conns, 'p50'), 2)} | "
                    f"{_f(_stat(mine, rows, conns, 'p99'), 2)} | {non2xx} | {sock} | "
                    f"{_f(100 * _stat(mine, rows, conns, 'cpu'))} % | "
                    f"{_f(_stat(mine, rows, conns, 'cpu_ms'), 3)} | "
                    f"{_f(100 * _stat(mine, rows, conns, 'others'))} %"
                    f"{' ' + err if err else ''} |"
                )
    settled = [f"{c.label} {c.settle_s:.0f} s" for c in configs if c.settle_s == c.settle_s]
    if settled:
        lines += [
            "",
            "Every server was measured once idle after its start (its process tree below 5 % "
            "of a core over a second; `/readyz` or its readiness URL answered before): "
            "readiness → idle: " + ", ".join(settled) + ". aiaas answers `/readyz` while a "
            "thread still imports modules (scikit-learn) and, until it freezes them out of "
            "the garbage collector, full collections over the growing heap pause every "
            "request (100 ms to seconds); requests in that window are not measured here.",
        ]
    failed = [c for c in configs if c.error]
    if failed:
        lines += ["", "Failed configurations:", ""]
        lines += [f"- {c.label} (pass {i}): `{c.error.splitlines()[0]}`"
                  for i, c in enumerate(failed, 1)]  # fmt: skip
    lines += [""]

    def rps(label: str, rows: int, conns: int) -> float:
        return _stat(cells.get(label, []), rows, conns, "rps")

    def cpu_ms(label: str, rows: int, conns: int) -> float:
        return _stat(cells.get(label, []), rows, conns, "cpu_ms")

    lines += [
        "## Ratios (req/s of aiaas / req/s of the anchor; same rows and connections)",
        "",
        "| aiaas route | rows | conns | ÷ FastAPI minimal | ÷ MLflow | ÷ BentoML | "
        "÷ BentoML batching | ÷ raw ASGI | aiaas p99 ms | FastAPI ÷ aiaas, CPU ms / request |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    aiaas_labels = [lb for lb in labels if lb.startswith("aiaas")]
    for label in aiaas_labels:
        for rows in ROWS:
            for conns in CONNS:
                ours = rps(label, rows, conns)
                by_cpu = cpu_ms("FastAPI minimal", rows, conns) / cpu_ms(label, rows, conns)
                ratios = [ours / rps(a, rows, conns) for a in
                          ("FastAPI minimal", "MLflow", "BentoML", "BentoML, batching",
                           "raw ASGI (ceiling)")]  # fmt: skip
                lines.append(
                    f"| {label} | {rows} | {conns} | "
                    + " | ".join(_f(r, 2) for r in ratios)
                    + f" | {_f(_stat(cells.get(label, []), rows, conns, 'p99'), 2)} | "
                    f"{_f(by_cpu, 2)} |"
                )
    lines += [""]

    # targets of the issue
    lines += ["## Targets", "", "| target | cell | value | met |", "|---|---|---:|---|"]
    for rows in ROWS:
        for conns in CONNS:
            r = rps("aiaas /predict", rows, conns) / rps("FastAPI minimal", rows, conns)
            lines.append(
                f"| aiaas `/predict` ≥ {TARGET_VS_FASTAPI}× the minimal FastAPI route's req/s | "
                f"{rows} row(s), {conns} conns | {_f(r, 2)}× | {_ok(None if r != r else r >= TARGET_VS_FASTAPI)} |"  # noqa: E501
            )
    for rows in ROWS:
        for conns in CONNS:
            p99 = _stat(cells.get("aiaas /predict", []), rows, conns, "p99")
            lines.append(
                f"| aiaas `/predict` p99 < {TARGET_P99_MS:g} ms | {rows} row(s), {conns} conns | "
                f"{_f(p99, 2)} ms | {_ok(None if p99 != p99 else p99 < TARGET_P99_MS)} |"
            )
    for rows in ROWS:
        for conns in CONNS:
            base = _stat(cells.get("aiaas /predict", []), rows, conns, "p50")
            sh = _stat(cells.get("aiaas /predict + shadow", []), rows, conns, "p50")
            cost = (sh - base) / base
            lines.append(
                f"| a shadow version costs < {TARGET_SHADOW:.0%} of the primary p50 | "
                f"{rows} row(s), {conns} conns | {_f(base, 2)} → {_f(sh, 2)} ms "
                f"({_f(100 * cost, 1)} %) | {_ok(None if cost != cost else cost < TARGET_SHADOW)} |"
            )
    lines += [""]
    shadow_rows = results.get("shadow_rows") or []
    if shadow_rows:
        s = shadow_rows[-1]
        lines += [
            "The shadow really ran: during the shadow configuration (warm-ups included) "
            f"`aiaas_predictions_rows_total` grew by {s['primary']:,.0f} rows for the primary "
            f"and by {s['shadow']:,.0f} for the shadow (a shadow copy that does not fit its "
            "queue is dropped, never waited for).",
            "",
        ]
    cold = results.get("cold") or []
    if cold:
        lines += [
            "## Cold load in process (first request after `POST /endpoints` vs the next)",
            "",
            "| server | batching | first request (1 row) | attempts until 200 | "
            "deploy → first 200 | next requests (median of 20) |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for c in cold:
            lines.append(
                f"| aiaas | {c['server']} | {c['first_ms']:.1f} ms | {c['attempts']} | "
                f"{c['deploy_to_first_ms']:.1f} ms | {c['next_ms']:.2f} ms |"
            )
        lines += [
            "",
            "Client-side times over HTTP (httpx, one connection, unpinned client). The first "
            "request's extra time is the model's load: reading the ONNX file from the store "
            "and building the ONNX Runtime session.",
            "",
        ]
    lines += [
        "## How to reproduce",
        "",
        "```bash",
        "make bench BENCH=serving                 # = .venv/bin/python benchmarks/serving.py",
        "BENCH_QUICK=1 make bench BENCH=serving   # a 3 s-per-cell look",
        ".venv/bin/python benchmarks/serving.py --reps 2   # two interleaved passes",
        "```",
        "",
        f"Scratch (venvs, the model, server logs, every wrk output) lives in `$BENCH_HOME` "
        f"(`{tempfile.gettempdir()}/serving-bench` by default); the first run installs wrk "
        "(apt-get) and the anchors' venvs from `benchmarks/serving/{anchors,bento}.lock`.",
        "",
    ]
    return "\n".join(lines)


def _versions() -> str:
    def pkg(py: Path, names: list[str]) -> str:
        code = (
            "import importlib.metadata as m\n"
            f"for n in {names!r}:\n"
            "    try: print(n + ' ' + m.version(n))\n"
            "    except Exception: pass\n"
        )
        done = subprocess.run([str(py), "-c", code], capture_output=True, text=True, check=False)
        return ", ".join(done.stdout.split("\n")).strip(", ")

    aiaas = pkg(Path(sys.executable), ["onnxruntime", "uvicorn", "fastapi", "lightgbm"])
    anchors = pkg(BENCH_HOME / "venv" / "bin" / "python", ["mlflow", "uvicorn", "lightgbm"])
    bento = pkg(BENCH_HOME / "bento-venv" / "bin" / "python", ["bentoml"])
    wrk_v = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    wrk_line = (wrk_v.stdout + wrk_v.stderr).strip().splitlines()[:1]
    return (
        f"aiaas venv: {aiaas}; anchors venv: {anchors}; {bento}; "
        f"{wrk_line[0].split(' [')[0] if wrk_line else 'wrk'}"
    )


def _commit() -> str:
    done = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                          capture_output=True, text=True, check=False)  # fmt: skip
    return done.stdout.strip() or "unknown"


# --------------------------------------------------------------------------- main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per cell")
    parser.add_argument("--warmup", type=float, default=3.0, help="discarded warm-up seconds")
    parser.add_argument("--reps", type=int, default=1, help="passes over every configuration")
    parser.add_argument("--quick", action="store_true",
                        help="3 s cells, 1 s warm-up (also: BENCH_QUICK=1)")  # fmt: skip
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=15.0,
        help="wait up to this long for idle CPUs before each configuration",
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=-15 if os.geteuid() == 0 else 0,
        help="run every server and wrk under `nice -n N` (default -15 as root, else 0), so "
        "that other processes on a shared machine take less of their cores",
    )
    parser.add_argument("--only", default="", help="run only configurations whose label has this")
    parser.add_argument("--out", default=str(RESULTS / "serving.md"), help="markdown output")
    args = parser.parse_args()
    if args.quick or os.environ.get("BENCH_QUICK", "") not in ("", "0"):
        args.quick, args.duration, args.warmup = True, 3.0, 1.0
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("needs 2 cores: the server on CPU 0, wrk on CPU 1")

    if args.nice:
        NICE[:] = ["nice", "-n", str(args.nice)]
        prioritize([os.getpid()])  # this session's autogroup: the driver and wrk
    started = time.monotonic()
    ensure_wrk()
    BENCH_HOME.mkdir(parents=True, exist_ok=True)
    anchor_py = ensure_venv(BENCH_HOME / "venv", HERE / "anchors.lock")
    ensure_venv(BENCH_HOME / "bento-venv", HERE / "bento.lock")
    ensure_model(anchor_py)
    onnx = ensure_onnx()
    print(f"setup done in {time.monotonic() - started:.0f} s", flush=True)
    # this driver stays off the servers' core (every child it starts says its own CPU)
    os.sched_setaffinity(0, {int(WRK_CPU)})

    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "load": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
        "commit": _commit(),
        "versions": _versions(),
    }
    configs: list[Config] = []
    only = args.only.lower()

    def wanted(label: str) -> bool:
        return not only or only in label.lower()

    for rep in range(1, args.reps + 1):
        print(f"== pass {rep}/{args.reps}", flush=True)
        for spec in ANCHORS[:2]:
            if wanted(spec[0]):
                print(f"-- {spec[0]} {time.strftime('%H:%M:%S')}", flush=True)
                configs.append(run_anchor(spec, rep, args))
        if wanted("aiaas /predict"):
            print(f"-- aiaas {time.strftime('%H:%M:%S')}", flush=True)
            configs += run_aiaas(results, onnx, rep, args)
        for spec in ANCHORS[2:]:
            if wanted(spec[0]):
                print(f"-- {spec[0]} {time.strftime('%H:%M:%S')}", flush=True)
                configs.append(run_anchor(spec, rep, args))
        if wanted("aiaas /predict, no batching"):
            print(f"-- aiaas without batching {time.strftime('%H:%M:%S')}", flush=True)
            configs += run_aiaas_unbatched(results, onnx, rep, args)

    table = render(configs, results, args)
    table += f"\nWhole benchmark: {time.monotonic() - started:.0f} s.\n"
    print()
    print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(table, encoding="utf-8")
    print(f"written to {out}")
    return 1 if any(c.error for c in configs) else 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: `nodegraph serve` vs the in-process Engine — job throughput and added latency per job.

    python bench/server.py                # CPU, tiny model; --repeats N, --jobs N, --clients N

1. Cached (no-op) graph: graphs/core_text.yaml, run once so every node is cached, then `--jobs` jobs
   submitted by `--clients` threads over HTTP, each waiting for its `job_done` over the WebSocket:
   jobs/s end to end (submit -> done event). Beside it, the same graph run in-process on a warm
   Engine: runs/s. Repeated `--repeats` times, min/median of each.
2. Tiny txt2img (graphs/txt2img.yaml, 64x64, `--steps` 20), warm (models resident, only the seed changes):
   the in-process `Engine.run` and one server job (submit -> job_done), alternating, each with its
   own new seed; the added latency is server minus in-process, min/median over the repetitions. On a
   busy machine that difference drowns in noise, so the server's share outside the run is given too:
   submit -> `job_done` minus the job's own started -> finished (HTTP, queue hand-off, events).

The server runs in this process (uvicorn on a thread, loopback), as `nodegraph serve` does, with its
own Engine; requests go over real sockets. Prints one JSON object.
"""

from __future__ import annotations

import json
import socket
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import GRAPHS, bench_parser, emit, scratch_dir  # noqa: E402


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Served:
    """A server on a loopback port in this process, and a WebSocket that collects job ends."""

    def __init__(self, tmp: Path) -> None:
        import uvicorn

        from nodegraph.server.app import create_app
        from nodegraph.server.settings import ServeSettings

        settings = ServeSettings(port=_free_port(), out=tmp / "out", inputs=tmp / "in", graphs=GRAPHS,
                                 device="cpu", dtype="float32", queue_size=10_000)
        self.app, self.state = create_app(settings)
        self.url = f"http://127.0.0.1:{settings.port}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=settings.port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)
        self.ends: dict[str, float] = {}
        self.cond = threading.Condition()
        from websockets.sync.client import connect

        self.ws = connect(self.url.replace("http", "ws") + "/api/events")
        self.listener = threading.Thread(target=self._listen, daemon=True)
        self.listener.start()

    def _listen(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            for raw in self.ws:
                event = json.loads(raw)
                if event["type"] in ("job_done", "job_failed", "job_cancelled"):
                    with self.cond:
                        self.ends[event["job"]] = time.perf_counter()
                        self.cond.notify_all()
        except ConnectionClosed:
            return

    def submit(self, session: Any, body: dict[str, Any]) -> str:
        answer = session.post(self.url + "/api/jobs", json=body, timeout=120)
        answer.raise_for_status()
        return str(answer.json()["id"])

    def wait(self, job_id: str) -> float:
        with self.cond:
            while job_id not in self.ends:
                self.cond.wait(120)
            return self.ends[job_id]

    def close(self) -> None:
        self.ws.close()
        self.server.should_exit = True
        self.thread.join(30)


def _stamp(text: str) -> float:
    """Seconds of a job record's ISO timestamp."""
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def cached_throughput(served: Served, jobs: int, clients: int) -> float:
    """Jobs/s for the all-cached core_text graph: `jobs` over `clients` threads, submit -> done."""
    import requests

    per = jobs // clients
    start = time.perf_counter()
    errors: list[BaseException] = []

    def client() -> None:
        try:
            with requests.Session() as session:
                for _ in range(per):
                    served.wait(served.submit(session, {"graph": "core_text.yaml"}))
        except BaseException as exc:  # noqa: BLE001 - reported after the threads end
            errors.append(exc)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return per * clients / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__, repeats=5)
    parser.add_argument("--jobs", type=int, default=200, help="jobs per throughput repetition")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20, help="txt2img sampler steps (fewer: less noise "
                                                              "around the few ms the server adds)")
    args = parser.parse_args(argv)
    import requests

    from nodegraph import Engine, RunOptions

    with scratch_dir() as tmp:
        served = Served(tmp)
        try:
            session = requests.Session()
            served.wait(served.submit(session, {"graph": "core_text.yaml"}))  # warm: all cached from now on
            engine = Engine()
            plan = engine.load(GRAPHS / "core_text.yaml")
            options = RunOptions(out_dir=tmp / "lib", device="cpu", dtype="float32", show_progress=False)
            engine.run(plan, options=options)
            served_rates, library_rates = [], []
            for _ in range(args.repeats):
                served_rates.append(cached_throughput(served, args.jobs, args.clients))
                t0 = time.perf_counter()
                for _ in range(args.jobs):
                    engine.run(plan, options=options)
                library_rates.append(args.jobs / (time.perf_counter() - t0))

            sets = {"steps": args.steps, "width": 64, "height": 64}
            served.wait(served.submit(session, {"graph": "txt2img.yaml", "set": {**sets, "seed": 1}}))
            engine.run(GRAPHS / "txt2img.yaml", {**sets, "seed": 1}, options)
            lib_s, server_s, outside, executed = [], [], [], []
            for r in range(args.repeats):
                t0 = time.perf_counter()
                result = engine.run(GRAPHS / "txt2img.yaml", {**sets, "seed": 100 + r}, options)
                lib_s.append(time.perf_counter() - t0)
                executed = result.executed
                t0 = time.perf_counter()
                job = served.submit(session, {"graph": "txt2img.yaml", "set": {**sets, "seed": 100 + r}})
                server_s.append(served.wait(job) - t0)
                record = session.get(f"{served.url}/api/jobs/{job}", timeout=60).json()
                outside.append(server_s[-1] - (_stamp(record["finished"]) - _stamp(record["started"])))
            added = [s - lib for s, lib in zip(server_s, lib_s, strict=True)]
            emit({"benchmark": "server", "model": "builtin:tinyworld", "repeats": args.repeats,
                  "cached_graph": "graphs/core_text.yaml", "jobs_per_repeat": args.jobs,
                  "clients": args.clients,
                  "server_cached_jobs_per_s_min": round(min(served_rates), 1),
                  "server_cached_jobs_per_s_median": round(statistics.median(served_rates), 1),
                  "library_cached_runs_per_s_min": round(min(library_rates), 1),
                  "library_cached_runs_per_s_median": round(statistics.median(library_rates), 1),
                  "txt2img": f"64x64, {args.steps} steps, warm (seed change)", "txt2img_executed": executed,
                  "library_s_min": round(min(lib_s), 4),
                  "library_s_median": round(statistics.median(lib_s), 4),
                  "server_s_min": round(min(server_s), 4),
                  "server_s_median": round(statistics.median(server_s), 4),
                  "added_latency_ms_min": round(1000 * min(added), 1),
                  "added_latency_ms_median": round(1000 * statistics.median(added), 1),
                  # submit -> job_done minus the job's own started -> finished: HTTP, queue, event delivery
                  "outside_run_ms_min": round(1000 * min(outside), 1),
                  "outside_run_ms_median": round(1000 * statistics.median(outside), 1)}, "cpu")
        finally:
            served.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`nodegraph serve`: run the HTTP/WebSocket server (nodegraph/server, docs/server.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nodegraph.cli.output import consoles, user_errors
from nodegraph.errors import NodegraphError

DEFAULT_GRAPHS = Path("graphs")


def serve(
    host: Annotated[str, typer.Option(help="Address to bind; anything but loopback needs --token")
                    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (ComfyUI's default, so its clients find it)")] = 8188,
    models: Annotated[list[Path] | None, typer.Option(
        "--models", help="Folder to look for model files in; repeatable (also $NODEGRAPH_MODELS)")] = None,
    out: Annotated[Path, typer.Option("--out", help="Output folder; each job writes into <out>/<job id>/")
                   ] = Path("out"),
    graphs: Annotated[Path, typer.Option("--graphs", help="Folder of graph files the page and API offer")
                      ] = DEFAULT_GRAPHS,
    inputs: Annotated[Path, typer.Option("--input", help="Folder for uploaded images (ComfyUI's input/)")
                      ] = Path("input"),
    token: Annotated[str | None, typer.Option(
        "--token", envvar="NODEGRAPH_TOKEN", help="Bearer token every request must carry (needed off "
                                                   "loopback; also $NODEGRAPH_TOKEN)")] = None,
    queue_size: Annotated[int, typer.Option("--queue-size", help="Queued jobs at most; past it: 429")] = 64,
    max_body_mb: Annotated[float, typer.Option("--max-body-mb", help="Largest request body in MB; past "
                                                                   "it: 413")] = 32.0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto, float32, float16 or bfloat16")] = "auto",
    cache_mb: Annotated[float, typer.Option("--cache-mb", min=0, help="Memory cache budget in MB")] = 2048,
    threads: Annotated[int | None, typer.Option(
        "--threads", min=1, help="CPU threads per torch operation (default: torch's, or $OMP_NUM_THREADS)")]
    = None,
) -> None:
    """Serve graphs over HTTP: a job queue, live progress over WebSocket, the web page, ComfyUI's API."""
    from nodegraph.cli.app import model_dirs
    from nodegraph.runtime.threads import configure_threads

    configure_threads(threads)  # before the engine imports torch
    stdout, err = consoles()
    with user_errors(err):
        try:
            from nodegraph.server.settings import ServeSettings, check_settings
        except ImportError as exc:  # pragma: no cover - the extra is missing
            raise NodegraphError(f"the server needs its extra: pip install 'nodegraph[server]' "
                                 f"({exc})") from None
        settings = ServeSettings(host=host, port=port, models=model_dirs(models or []), out=out,
                                 graphs=graphs, inputs=inputs, token=token, queue_size=queue_size,
                                 max_body_mb=max_body_mb, device=device, dtype=dtype, cache_mb=cache_mb)
        check_settings(settings)
        try:
            import uvicorn

            from nodegraph.server.app import create_app
        except ImportError as exc:
            raise NodegraphError(f"the server needs its extra: pip install 'nodegraph[server]' "
                                 f"({exc})") from None
        app, state = create_app(settings)
    for job in state.lost:
        err.print(f"[yellow]note: job {job['id']} ({job.get('graph') or 'submitted graph'}, submitted "
                  f"{job.get('submitted')}) was lost when the previous server stopped; jobs live in memory"
                  "[/yellow]", highlight=False, soft_wrap=True)
    shown = f"[{host}]" if ":" in host else host
    stdout.print(f"nodegraph serve: http://{shown}:{port}/  (graphs: {graphs}, out: {out}, queue: "
                 f"{queue_size}; token: {'required' if token else 'none, loopback only'})",
                 highlight=False, soft_wrap=True)
    stdout.print("jobs are kept in memory: a restart loses queued jobs (it lists them when it starts)",
                 highlight=False, soft_wrap=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", ws_max_size=16 * 2**20)

"""What `nodegraph serve` was started with, checked once at start-up (bad values exit with code 2)."""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from pathlib import Path

from nodegraph.errors import NodegraphError
from nodegraph.runtime.devices import DTYPES

DEFAULT_MAX_BODY_MB = 32.0
DEFAULT_QUEUE_SIZE = 64
DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")  # as `nodegraph run --device`


@dataclass(frozen=True)
class ServeSettings:
    """Folders, limits and the token of one server."""

    host: str = "127.0.0.1"
    port: int = 8188
    models: tuple[Path, ...] = ()
    out: Path = Path("out")
    graphs: Path = Path("graphs")
    inputs: Path = Path("input")
    token: str | None = None
    queue_size: int = DEFAULT_QUEUE_SIZE
    max_body_mb: float = DEFAULT_MAX_BODY_MB
    device: str = "auto"
    dtype: str = "auto"
    cache_mb: float = 2048
    history: int = 1000  # finished jobs kept in memory (the oldest are forgotten past it)

    @property
    def max_body(self) -> int:
        return int(self.max_body_mb * 2**20)


def is_loopback(host: str) -> bool:
    """Whether every address `host` names is a loopback one (127.0.0.0/8, ::1, localhost)."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def check_settings(settings: ServeSettings) -> None:
    """Refuse settings that would expose the server or cannot work, before anything starts."""
    if not is_loopback(settings.host) and not settings.token:
        raise NodegraphError(
            f"--host {settings.host} is not a loopback address: anyone who can reach it could run "
            "graphs and read outputs. Give --token T (clients then send 'Authorization: Bearer T'), "
            "or bind 127.0.0.1")
    if settings.token is not None and len(settings.token) < 8:
        raise NodegraphError("--token must be at least 8 characters")
    if not DEVICE_RE.match(settings.device):
        raise NodegraphError(f"unknown device '{settings.device}' (use auto, cpu, cuda, cuda:N or mps)")
    if settings.dtype != "auto" and settings.dtype not in DTYPES:
        raise NodegraphError(f"unknown dtype '{settings.dtype}' (use auto, float32, float16 or bfloat16)")
    if settings.queue_size < 1:
        raise NodegraphError("--queue-size must be at least 1")
    if not 0 < settings.port < 65536 and settings.port != 0:
        raise NodegraphError(f"--port {settings.port} is not a port number")
    if not settings.graphs.is_dir():
        raise NodegraphError(f"--graphs folder '{settings.graphs}' does not exist")
    for folder in settings.models:
        if not folder.is_dir():
            raise NodegraphError(f"--models folder '{folder}' does not exist")
    for name, folder in (("--out", settings.out), ("--input", settings.inputs)):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise NodegraphError(f"{name} folder '{folder}' cannot be created: "
                                 f"{exc.strerror or exc}") from None

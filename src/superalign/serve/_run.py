"""Running an app with uvicorn on a local address, and the names a server goes by."""

from __future__ import annotations

import errno
import ipaddress
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console

from ..errors import ConfigError

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
err_console = Console(stderr=True)


def is_local(host: str) -> bool:
    if host in LOCAL_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def warn_if_open(host: str, what: str) -> None:
    """A loud warning when a server listens beyond this machine."""
    if not is_local(host):
        err_console.print(
            f"warning: {what} listens on {host}: anyone who can reach this machine on that "
            "address can connect. Use --host 127.0.0.1 (the default) unless you mean it.",
            style="bold yellow",
            markup=False,
            highlight=False,
        )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on now (for tests and `--port 0`)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host``:``port`` (0: a free port), for ``run_app``. Binding
    first lets a command say where it serves only once it can, and turns a busy port or
    a foreign address into a ConfigError that names it and what to do."""
    # The family and the address as uvicorn binds them itself.
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except (OSError, UnicodeError) as e:  # a busy port, a foreign or unknown address
        sock.close()
        if isinstance(e, OSError) and e.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"port {port} on {host} is already in use (another server is listening "
                "there); pick another with --port, or --port 0 for a free one"
            ) from e
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ConfigError(
            f"cannot listen on {host} port {port} ({reason}); give an address of this "
            "machine with --host (127.0.0.1, the default) and a free port with --port 0"
        ) from e
    return sock


def bound_port(sock: socket.socket) -> int:
    """The port a bound socket listens on (the free one picked for port 0)."""
    return sock.getsockname()[1]


def run_app(app: Any, host: str, port: int, sock: socket.socket | None = None) -> None:
    """Serve ``app`` until interrupted (Ctrl-C), on ``sock`` when given (see ``bind``)."""
    import uvicorn

    if sock is None:
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
        return
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:  # Ctrl-C: uvicorn stops, then raises the signal again
        pass


@contextmanager
def background(app: Any, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``app`` from a thread of this process (tests, benchmarks); yields its base
    URL (``http://host:port``) once it accepts connections, stops it on exit."""
    import uvicorn

    port = port or free_port(host)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"the server on {host}:{port} did not start")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


_CHECKPOINT = re.compile(r"(?:^|/)([^/]+)/checkpoints/(round-\d+)/?$")


def served_name(ref: str) -> str:
    """The model name clients use: a bundled alias as is; ``runs/NAME/checkpoints/round-N``
    becomes ``NAME-round-N``; any other path its directory name."""
    m = _CHECKPOINT.search(ref.rstrip("/"))
    if m:
        return f"{m[1]}-{m[2]}"
    path = Path(ref)
    if path.exists():
        return path.resolve().name
    return ref

"""The `serve` command: an OpenAI-compatible server for a model or a round checkpoint."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from ..errors import ConfigError
from ._adapters import MAX_ADAPTERS
from ._api import MAX_BODY_BYTES

console = Console()
err_console = Console(stderr=True)
KEY_ENV = "SUPERALIGN_API_KEY"


def serve_command(
    model: str = typer.Argument(
        ..., help="bundled alias (smollm2-135m), checkpoint dir (runs/NAME/checkpoints/round-N)"
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on"),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="TCP port (0: a free one)"),
    name: str | None = typer.Option(
        None, "--name", help="model name clients send (default: alias, or NAME-round-N)"
    ),
    window_ms: float = typer.Option(
        10.0, "--window-ms", min=0.0, max=1000.0, help="how long to collect requests per batch"
    ),
    max_batch: int = typer.Option(32, "--max-batch", min=1, help="most chats per generate call"),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda"),
    fast: bool = typer.Option(
        True, "--fast/--no-fast", help="the fast decode engine (--no-fast: plain generate)"
    ),
    max_body_bytes: int = typer.Option(
        MAX_BODY_BYTES,
        "--max-body-bytes",
        min=1,
        help="largest request body accepted, in bytes (a larger one gets HTTP 400)",
    ),
    max_prompt_tokens: int = typer.Option(
        0,
        "--max-prompt-tokens",
        min=0,
        help="longest prompt accepted, in tokens (0: the model's context; longer: HTTP 400)",
    ),
    api_key: str | None = typer.Option(
        None,
        "--api-key",
        envvar=KEY_ENV,
        show_default=False,
        help=f"require 'Authorization: Bearer KEY' on every request (or set {KEY_ENV})",
    ),
    max_adapters: int = typer.Option(
        MAX_ADAPTERS,
        "--max-adapters",
        min=0,
        help="most LoRA adapters loaded at once through /v1/load_lora_adapter",
    ),
) -> None:
    """Serve a model on /v1/chat/completions and /v1/models (OpenAI-compatible), with
    vLLM's /v1/load_lora_adapter and /v1/unload_lora_adapter for LoRA adapters."""
    from ..models import load_model, parse_model_ref
    from ._api import create_app
    from ._run import bind, bound_port, run_app, served_name, warn_if_open

    spec = parse_model_ref(model)
    if spec.backend != "hf":
        raise ConfigError(
            f"serve loads local models only (a bundled alias or a checkpoint directory), not "
            f"{model!r}; an openai: endpoint is already a server"
        )
    path = Path(model)
    if ("/" in model or path.exists()) and not path.is_dir():
        raise ConfigError(
            f"{model} is not a directory; give a checkpoint directory such as "
            "runs/NAME/checkpoints/round-1, or a bundled alias such as smollm2-135m"
        )
    # Bound first: a busy port fails at once, before the model loads or anything says
    # "serving"; the socket is handed to the server as it is.
    sock = bind(host, port)
    try:
        loaded = load_model({"backend": "hf", "model": model, "device": device, "fast": fast})
        served = name or served_name(model)
        app = create_app(
            loaded,
            served,
            window_ms=window_ms,
            max_batch=max_batch,
            max_body_bytes=max_body_bytes,
            max_prompt_tokens=max_prompt_tokens or None,
            api_key=api_key or None,
            max_adapters=max_adapters,
            log=lambda message: err_console.print(
                message, markup=False, highlight=False, soft_wrap=True
            ),
        )
    except BaseException:
        sock.close()
        raise
    port = bound_port(sock)
    warn_if_open(host, "the model server")
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/v1"
    console.print(f"serving {served} at {url}", markup=False, highlight=False, soft_wrap=True)
    console.print(
        f'try: superalign chat "openai:{served}@{url}" "hello"',
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    if api_key:  # never printed: say where clients find it
        console.print(
            "every request needs 'Authorization: Bearer KEY' (superalign chat sends "
            "$OPENAI_API_KEY; a learner's rollouts send the variable its api_key_env names)",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    run_app(app, host, port, sock=sock)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)

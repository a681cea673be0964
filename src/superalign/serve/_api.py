"""An OpenAI-compatible chat server for any ChatModel: ``/v1/models`` and
``/v1/chat/completions`` (with ``stream``), so scanners and clients that speak the
OpenAI API can test a learner checkpoint. For a transformers model it also speaks vLLM's
dynamic LoRA endpoints, ``/v1/load_lora_adapter`` and ``/v1/unload_lora_adapter``
(``_adapters.py``): a loaded adapter is listed by ``/v1/models`` and answers requests
that name it; requests naming the served model get the base model.

With an API key (``api_key``) every request must carry ``Authorization: Bearer KEY``;
one without it, or with another key, gets HTTP 401 with an OpenAI-style body.

A malformed request gets HTTP 400 with an OpenAI-style body,
``{"error": {"message", "type": "invalid_request_error", "param", "code"}}``, whose
message names the field and what it must be. An unknown model name gets 404. A body over
the byte limit (1 MiB unless set) or a prompt over the token limit (the model's context
unless set) gets 400 saying the limit, before any generation.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ..models import ChatModel, HFChatModel
from ..types import GenParams
from ._adapters import MAX_ADAPTERS, AdapterError, AdapterSet
from ._batch import Batcher

ROLES = ("system", "user", "assistant")
MAX_TOKENS_LIMIT = 4096
MAX_BODY_BYTES = 1 << 20  # 1 MiB: far above any chat a small model can read


class BadRequest(Exception):
    """A request field is missing or invalid; ``param`` names it."""

    def __init__(self, message: str, param: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.param = param
        self.status = status


def error_body(
    message: str,
    param: str | None = None,
    kind: str = "invalid_request_error",
    code: str | None = None,
) -> dict:
    """The error object OpenAI clients parse."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _refused(e: BadRequest | AdapterError) -> Response:
    """The HTTP answer to a refused request: 400 or 404 with the OpenAI error body."""
    kind = "invalid_request_error" if e.status == 400 else "not_found_error"
    return JSONResponse(error_body(str(e), e.param, kind), status_code=e.status)


class RequireKey:
    """ASGI middleware: every HTTP request must carry ``Authorization: Bearer KEY``; any
    other gets 401 with an OpenAI-style error body. The key is compared in constant time
    (``hmac.compare_digest``)."""

    def __init__(self, app: ASGIApp, key: str) -> None:
        if not key:
            raise ValueError("the API key must not be empty")
        self.app = app
        self.key = key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            given = b""
            for header, value in scope["headers"]:
                if header == b"authorization":
                    given = value
            scheme, _, token = given.partition(b" ")
            if not given:
                message = (
                    "this server needs an API key: send the header 'Authorization: Bearer KEY' "
                    "with the key it was started with (superalign serve --api-key, or "
                    "SUPERALIGN_API_KEY)"
                )
            elif scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.key):
                message = "the API key sent in 'Authorization: Bearer ...' is not this server's key"
            else:
                await self.app(scope, receive, send)
                return
            response = JSONResponse(
                error_body(message, code="invalid_api_key"),
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def create_app(
    model: ChatModel,
    served_name: str,
    *,
    window_ms: float = 10.0,
    max_batch: int = 32,
    max_tokens_limit: int = MAX_TOKENS_LIMIT,
    max_body_bytes: int = MAX_BODY_BYTES,
    max_prompt_tokens: int | None = None,
    api_key: str | None = None,
    max_adapters: int = MAX_ADAPTERS,
    log: Callable[[str], None] | None = None,
) -> Starlette:
    """The server app for ``model``, known to clients as ``served_name``.

    A request body over ``max_body_bytes`` and a prompt over ``max_prompt_tokens``
    tokens (None: the model's context, where it has one) get HTTP 400 saying the limit,
    before any generation: one huge request cannot hold the others up. An
    ``HFChatModel`` can load up to ``max_adapters`` LoRA adapters at run time; ``log``
    hears of each load and unload. With ``api_key`` every request needs it."""
    if max_body_bytes < 1:
        raise ValueError(f"max_body_bytes must be at least 1, not {max_body_bytes}")
    if max_prompt_tokens is None:
        max_prompt_tokens = getattr(model, "max_context", None)
    if max_prompt_tokens is not None and max_prompt_tokens < 1:
        raise ValueError(f"max_prompt_tokens must be at least 1, not {max_prompt_tokens}")
    adapters = (
        AdapterSet(model, served_name, max_adapters) if isinstance(model, HFChatModel) else None
    )
    batcher = Batcher(
        model,
        window_ms=window_ms,
        max_batch=max_batch,
        using=adapters.using if adapters is not None else None,
    )
    created = int(time.time())
    count_tokens = _token_counter(model)
    say = log or (lambda message: None)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    def loaded() -> dict[str, Any]:
        """A copy of the loaded adapters (the worker thread may change them meanwhile)."""
        return dict(adapters.loaded) if adapters is not None else {}

    async def models(request: Request) -> Response:
        entry = {
            "id": served_name,
            "object": "model",
            "created": created,
            "owned_by": "superalign",
            "root": served_name,
            "parent": None,
        }
        listed = [entry]
        for a in loaded().values():
            listed.append(
                {
                    "id": a.name,
                    "object": "model",
                    "created": a.created,
                    "owned_by": "superalign",
                    "root": a.path,
                    "parent": served_name,
                }
            )
        return JSONResponse({"object": "list", "data": listed})

    def _adapter_body(body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise BadRequest(
                f"the request body must be a JSON object with 'lora_name' (and 'lora_path' "
                f"to load), not {type(body).__name__}"
            )
        if adapters is None:
            raise BadRequest(
                f"this server's model ({type(model).__name__}) cannot load LoRA adapters; "
                "serve a transformers model (a bundled alias or a checkpoint directory)"
            )
        return body

    async def load_adapter(request: Request) -> Response:
        try:
            body = _adapter_body(await _json_body(request, max_body_bytes))
            assert adapters is not None  # _adapter_body refused a server without them
            name, path = adapters.check_new(body.get("lora_name"), body.get("lora_path"))
            adapter = await batcher.call(adapters.load, name, path, int(time.time()))
        except (BadRequest, AdapterError) as e:
            return _refused(e)
        except Exception as e:  # the model failed while loading: say so
            return JSONResponse(
                error_body(f"loading failed: {type(e).__name__}: {e}", kind="server_error"),
                status_code=500,
            )
        say(f"loaded adapter {adapter.name} from {adapter.path}")
        return PlainTextResponse(f"Success: LoRA adapter {adapter.name!r} loaded.")

    async def unload_adapter(request: Request) -> Response:
        try:
            body = _adapter_body(await _json_body(request, max_body_bytes))
            assert adapters is not None
            adapter = await batcher.call(adapters.unload, body.get("lora_name"))
        except (BadRequest, AdapterError) as e:
            return _refused(e)
        say(f"unloaded adapter {adapter.name}")
        return PlainTextResponse(f"Success: LoRA adapter {adapter.name!r} unloaded.")

    async def chat_completions(request: Request) -> Response:
        try:
            body = await _json_body(request, max_body_bytes)
            messages, params, stream = parse_chat_request(
                body, served_name, max_tokens_limit, adapters=loaded()
            )
            # Counted off the event loop: a long prompt does not stall other requests.
            prompt_tokens = await asyncio.to_thread(
                lambda: sum(count_tokens(m["content"]) for m in messages)
            )
            _check_prompt(prompt_tokens, max_prompt_tokens)
        except BadRequest as e:
            return _refused(e)
        name = body["model"]
        adapter = None if name == served_name else name
        try:
            text = await _unless_gone(request, batcher.generate(messages, params, adapter))
        except _ClientGone:
            return Response(status_code=499)  # nobody reads it; nothing was generated for it
        except AdapterError as e:  # unloaded while the request waited
            return _refused(e)
        except Exception as e:  # the model failed: a 500 that says so, not a dropped socket
            return JSONResponse(
                error_body(f"generation failed: {type(e).__name__}: {e}", kind="server_error"),
                status_code=500,
            )
        rid = f"chatcmpl-{uuid.uuid4().hex}"
        completion_tokens = count_tokens(text)
        finish = "length" if completion_tokens >= params.max_new_tokens else "stop"
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        if stream:
            return StreamingResponse(
                _stream(rid, name, text, finish), media_type="text/event-stream"
            )
        return JSONResponse(
            {
                "id": rid,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": name,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": finish,
                    }
                ],
                "usage": usage,
            }
        )

    async def no_route(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        return JSONResponse(
            error_body(
                f"no route {request.method} {request.url.path}; this server offers "
                "GET /v1/models, POST /v1/chat/completions, POST /v1/load_lora_adapter and "
                "POST /v1/unload_lora_adapter",
                kind="not_found_error" if status == 404 else "invalid_request_error",
            ),
            status_code=status,
        )

    app = Starlette(
        routes=[
            Route("/v1/models", models, methods=["GET"]),
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/load_lora_adapter", load_adapter, methods=["POST"]),
            Route("/v1/unload_lora_adapter", unload_adapter, methods=["POST"]),
        ],
        lifespan=lifespan,
        exception_handlers={404: no_route, 405: no_route},
        middleware=[Middleware(RequireKey, key=api_key)] if api_key else [],
    )
    app.state.batcher = batcher
    app.state.adapters = adapters
    return app


class _ClientGone(Exception):
    """The client closed the connection before its reply was ready."""


async def _unless_gone(request: Request, work: Awaitable[str], poll: float = 0.25) -> str:
    """``work``'s result; cancelled (so a queued request is never generated) when the
    client disconnects first, as a timed-out client that retries does."""
    task = asyncio.ensure_future(work)
    while True:
        done, _ = await asyncio.wait({task}, timeout=poll)
        if done:
            return task.result()
        if await request.is_disconnected():
            task.cancel()
            raise _ClientGone


def _size(n: int) -> str:
    if n >= 1 << 20 and n % (1 << 20) == 0:
        return f"{n} bytes ({n >> 20} MiB)"
    if n >= 1 << 10 and n % (1 << 10) == 0:
        return f"{n} bytes ({n >> 10} KiB)"
    return f"{n} bytes"


async def _read_capped(request: Request, limit: int) -> bytes:
    """The request body, refused (BadRequest) as soon as it passes ``limit`` bytes: a
    declared Content-Length over it is refused unread, a longer stream stops being read."""
    too_big = BadRequest(
        f"the request body is larger than this server's limit of {_size(limit)}; send a "
        "shorter chat (the server's --max-body-bytes sets the limit)"
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_big
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


def _check_prompt(tokens: int, limit: int | None) -> None:
    """BadRequest when the prompt's ``tokens`` pass the server's ``limit``."""
    if limit is not None and tokens > limit:
        raise BadRequest(
            f"the prompt is {tokens} tokens, over this server's limit of {limit} tokens "
            "(the model's context unless --max-prompt-tokens sets it); shorten the messages",
            "messages",
        )


async def _json_body(request: Request, limit: int = MAX_BODY_BYTES) -> Any:
    raw = await _read_capped(request, limit)
    try:
        return json.loads(raw)
    except RecursionError as e:  # nesting deeper than the parser's stack
        raise BadRequest(
            "the request body nests too deeply to parse; send a JSON object with 'model' "
            "and 'messages'"
        ) from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadRequest(
            f"the request body is not valid JSON ({e}); send a JSON object with "
            "'model' and 'messages'"
        ) from e


def parse_chat_request(
    body: Any,
    served_name: str,
    max_tokens_limit: int = MAX_TOKENS_LIMIT,
    adapters: Collection[str] = (),
) -> tuple[list[dict[str, str]], GenParams, bool]:
    """Validated messages, sampling parameters and the stream flag of a request body,
    whose ``model`` must be ``served_name`` or one of the loaded ``adapters``."""
    if not isinstance(body, dict):
        raise BadRequest(f"the request body must be a JSON object, not {type(body).__name__}")
    name = body.get("model")
    if not isinstance(name, str) or not name:
        raise BadRequest(f"'model' must be a non-empty string (this server: {served_name!r})")
    if name != served_name and name not in adapters:
        names = ", ".join(repr(n) for n in [served_name, *sorted(adapters)])
        raise BadRequest(
            f"model {name[:200]!r} is not served here; GET /v1/models lists {names}",
            "model",
            status=404,
        )
    messages = _messages(body.get("messages"))
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens", 256))
    if max_tokens is None:
        max_tokens = 256
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise BadRequest(
            f"'max_tokens' must be a positive integer, not {max_tokens!r}", "max_tokens"
        )
    if max_tokens > max_tokens_limit:
        raise BadRequest(
            f"'max_tokens' {max_tokens} is above this server's limit of {max_tokens_limit}",
            "max_tokens",
        )
    temperature = _number(body, "temperature", 1.0, 0.0, 2.0)
    top_p = _number(body, "top_p", 1.0, 0.0, 1.0)
    if top_p == 0:
        raise BadRequest("'top_p' must be above 0", "top_p")
    seed = body.get("seed")
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63
    ):
        raise BadRequest(f"'seed' must be an integer from 0 to 2**63 - 1, not {seed!r}", "seed")
    n = body.get("n", 1)
    if n != 1:
        raise BadRequest(f"'n' must be 1 on this server, not {n!r}", "n")
    stop = body.get("stop")
    if stop is None:
        stops: tuple[str, ...] = ()
    elif isinstance(stop, str):
        stops = (stop,)
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop) and len(stop) <= 4:
        stops = tuple(stop)
    else:
        raise BadRequest("'stop' must be a string or a list of up to 4 strings", "stop")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest(f"'stream' must be true or false, not {stream!r}", "stream")
    params = GenParams(
        max_new_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed, stop=stops
    )
    return messages, params, stream


def _messages(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise BadRequest("'messages' must be a non-empty list of {role, content}", "messages")
    out = []
    for i, m in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise BadRequest(f"'{where}' must be an object with role and content", where)
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise BadRequest(
                f"'{where}.role' must be one of {', '.join(ROLES)}, not {role!r}", f"{where}.role"
            )
        if isinstance(content, list):  # content parts: text parts only
            texts = [p.get("text") for p in content if isinstance(p, dict)]
            if len(texts) != len(content) or not all(isinstance(t, str) for t in texts):
                raise BadRequest(
                    f"'{where}.content' parts must be text parts ({{type: text, text}})",
                    f"{where}.content",
                )
            content = "".join(texts)  # type: ignore[arg-type]
        if not isinstance(content, str):
            raise BadRequest(f"'{where}.content' must be a string", f"{where}.content")
        out.append({"role": role, "content": content})
    return out


def _number(body: dict, key: str, default: float, lo: float, hi: float) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise BadRequest(f"'{key}' must be a number from {lo:g} to {hi:g}, not {value!r}", key)
    return float(value)


async def _stream(rid: str, name: str, text: str, finish: str) -> AsyncIterator[str]:
    """The whole reply as one content chunk, then the finish chunk and [DONE]."""

    def chunk(delta: dict, reason: str | None) -> str:
        body = {
            "id": rid,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": name,
            "choices": [{"index": 0, "delta": delta, "finish_reason": reason}],
        }
        return f"data: {json.dumps(body)}\n\n"

    yield chunk({"role": "assistant", "content": text}, None)
    yield chunk({}, finish)
    yield "data: [DONE]\n\n"


def _token_counter(model: ChatModel) -> Any:
    """Tokens in a text by the model's tokenizer (words where it has none)."""
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        return lambda text: len(text.split())
    return lambda text: len(tokenizer(text, add_special_tokens=False).input_ids)

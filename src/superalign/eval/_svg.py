"""Small inline SVG charts for the report: no JavaScript, no network."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..textsafe import html_text
from ._metrics import Metric

W, H = 360, 220
LEFT, RIGHT, TOP, BOTTOM = 48, 24, 16, 36
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")

Series = Mapping[str, Sequence[tuple[int, Metric]]]  # label -> [(round, metric)]


def _scale(lo: float, hi: float, out_lo: float, out_hi: float):
    span = (hi - lo) or 1.0
    return lambda v: out_lo + (v - lo) / span * (out_hi - out_lo)


def _y_max(values: Sequence[float]) -> float:
    top = max(values, default=1.0)
    return 1.0 if top <= 1.0 else top * 1.1


def _axes(
    x0: float, x1: float, y1: float, xlabel: str, ylabel: str, xticks: Sequence[float], xfmt, yfmt
) -> tuple[list[str], object, object]:
    sx = _scale(x0, x1, LEFT, W - RIGHT)
    sy = _scale(0.0, y1, H - BOTTOM, TOP)
    parts: list[str] = []
    for i in range(5):
        v = y1 * i / 4
        y = sy(v)
        parts.append(
            f'<line x1="{LEFT}" y1="{y:.1f}" x2="{W - RIGHT}" y2="{y:.1f}" stroke="#e4e4e4"/>'
        )
        parts.append(f'<text x="{LEFT - 4}" y="{y + 3:.1f}" text-anchor="end">{yfmt(v)}</text>')
    # Axes after the grid so the grid never paints over them.
    parts += [
        f'<line x1="{LEFT}" y1="{H - BOTTOM}" x2="{W - RIGHT}" y2="{H - BOTTOM}" stroke="#444"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{H - BOTTOM}" stroke="#444"/>',
    ]
    for t in xticks:
        parts.append(
            f'<text x="{sx(t):.1f}" y="{H - BOTTOM + 14}" text-anchor="middle">{xfmt(t)}</text>'
        )
    parts.append(
        f'<text x="{(LEFT + W - RIGHT) / 2}" y="{H - 4}" text-anchor="middle">'
        f"{html_text(xlabel)}</text>"
    )
    mid = TOP + (H - BOTTOM - TOP) / 2
    parts.append(
        f'<text x="12" y="{mid}" text-anchor="middle" '
        f'transform="rotate(-90 12 {mid})">{html_text(ylabel)}</text>'
    )
    return parts, sx, sy


def _pct(v: float) -> str:
    return f"{v * 100:.0f}%"


def _svg(parts: list[str], title: str) -> str:
    return (
        f'<svg viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" '
        'font-family="sans-serif" font-size="10" fill="#333" '
        f'aria-label="{html_text(title)}">' + "".join(parts) + "</svg>"
    )


def line_chart(series: Series, title: str, ylabel: str = "", percent: bool = True) -> str:
    """Metric value per round, one line per series, with 95% interval bars."""
    rounds = sorted({r for pts in series.values() for r, _ in pts}) or [0]
    tops = [m.hi if m.hi is not None else m.value for pts in series.values() for _, m in pts]
    y1 = 1.0 if percent else _y_max(tops)
    x0, x1 = rounds[0] - 0.5, rounds[-1] + 0.5
    yfmt = _pct if percent and y1 <= 1.0 else (lambda v: f"{v:.3g}")
    parts, sx, sy = _axes(x0, x1, y1, "round", ylabel, rounds, lambda t: f"{t:g}", yfmt)
    for k, (label, pts) in enumerate(series.items()):
        colour = PALETTE[k % len(PALETTE)]
        pts = sorted(pts, key=lambda p: p[0])
        # Offset tiers a little so their interval bars do not hide each other.
        dx = (k - (len(series) - 1) / 2) * 6
        coords = [(sx(r) + dx, sy(m.value)) for r, m in pts]
        if len(coords) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
            parts.append(
                f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>'
            )
        for (x, y), (_, m) in zip(coords, pts, strict=True):
            if m.lo is not None and m.hi is not None:
                parts.append(
                    f'<line x1="{x:.1f}" y1="{sy(m.lo):.1f}" x2="{x:.1f}" '
                    f'y2="{sy(m.hi):.1f}" stroke="{colour}" stroke-width="1.5"/>'
                )
            parts.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{colour}">'
                f"<title>{html_text(label)}: {html_text(m.format(percent))}</title></circle>"
            )
        parts.append(
            f'<text x="{W - RIGHT - 4}" y="{TOP + 12 + 14 * k}" text-anchor="end" '
            f'style="fill:{colour}">{html_text(label)}</text>'
        )
    return _svg(parts, title)


def tradeoff_chart(points: Sequence[tuple[int, Metric, Metric]], title: str) -> str:
    """Attack success rate (x) against benign refusal rate (y), one point per round.

    The ideal corner is bottom-left: nothing harmful answered, nothing benign refused.
    """
    parts, sx, sy = _axes(
        0.0,
        1.0,
        1.0,
        "attack success rate",
        "benign refusal rate",
        [0, 0.25, 0.5, 0.75, 1.0],
        _pct,
        _pct,
    )
    coords = [(sx(a.value), sy(b.value)) for _, a, b in points]
    if len(coords) > 1:
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
        parts.append(
            f'<polyline points="{path}" fill="none" stroke="#999" stroke-dasharray="4 3"/>'
        )
    for (x, y), (r, a, b) in zip(coords, points, strict=True):
        if a.lo is not None and a.hi is not None:
            parts.append(
                f'<line x1="{sx(a.lo):.1f}" y1="{y:.1f}" x2="{sx(a.hi):.1f}" '
                f'y2="{y:.1f}" stroke="{PALETTE[0]}"/>'
            )
        if b.lo is not None and b.hi is not None:
            parts.append(
                f'<line x1="{x:.1f}" y1="{sy(b.lo):.1f}" x2="{x:.1f}" '
                f'y2="{sy(b.hi):.1f}" stroke="{PALETTE[0]}"/>'
            )
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{PALETTE[0]}"/>')
        parts.append(f'<text x="{x + 6:.1f}" y="{y - 6:.1f}">r{r}</text>')
    return _svg(parts, title)

"""The ledger's chart: verdicts per hour as stacked columns, an inline SVG built on the server.

No script, no CDN, no external resource: it renders with JavaScript off and under the
ledger's ``default-src 'none'`` CSP (inline SVG is markup, not a loaded resource). It scales
with its container (``viewBox``), so it fits a 390 px phone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from markupsafe import Markup, escape

from .verdicts import Verdict

#: Stacking order, bottom up, and colours (GitHub Primer's, readable on white).
COLOURS = {
    Verdict.PAIRED.value: "#1a7f37",
    Verdict.SERVER_ONLY.value: "#54aeff",
    Verdict.TEST.value: "#bf8700",
    Verdict.PENDING.value: "#8c959f",
    Verdict.FAILED.value: "#cf222e",
}
WIDTH, HEIGHT = 480, 160
_LEFT, _BOTTOM, _TOP = 28, 18, 8


def verdict_chart(hours: Sequence[Mapping[str, int]]) -> Markup:
    """Stacked columns of verdict counts, one per hour (oldest first), with a legend."""
    tallest = max((sum(h.values()) for h in hours), default=0)
    scale = max(1, tallest)
    plot_w, plot_h = WIDTH - _LEFT, HEIGHT - _BOTTOM - _TOP
    step = plot_w / max(1, len(hours))
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="chart-title" preserveAspectRatio="xMidYMid meet">',
        '<title id="chart-title">Events per hour over the last day, by verdict</title>',
        f'<line x1="{_LEFT}" y1="{_TOP + plot_h}" x2="{WIDTH}" y2="{_TOP + plot_h}" '
        'stroke="#d1d9e0"/>',
        f'<text x="{_LEFT - 4}" y="{_TOP + 8}" text-anchor="end" font-size="10">{tallest}</text>',
        f'<text x="{_LEFT - 4}" y="{_TOP + plot_h}" text-anchor="end" font-size="10">0</text>',
        f'<text x="{_LEFT}" y="{HEIGHT - 4}" font-size="10">24 h ago</text>',
        f'<text x="{WIDTH}" y="{HEIGHT - 4}" text-anchor="end" font-size="10">now</text>',
    ]
    for index, hour in enumerate(hours):
        x = _LEFT + index * step + step * 0.1
        y = float(_TOP + plot_h)
        for verdict, colour in COLOURS.items():
            count = int(hour.get(verdict, 0))
            if count <= 0:
                continue
            height = plot_h * count / scale
            y -= height
            label = escape(f"{count} {verdict}")
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{step * 0.8:.1f}" height="{height:.1f}" '
                f'fill="{colour}"><title>{label}</title></rect>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))


def legend() -> Markup:
    """The chart's legend as HTML (wraps on a narrow screen, unlike SVG text)."""
    items = "".join(
        f'<li><span class="swatch" style="background:{colour}"></span>{escape(verdict)}</li>'
        for verdict, colour in COLOURS.items()
    )
    return Markup(f'<ul class="legend">{items}</ul>')

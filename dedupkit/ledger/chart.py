"""The ledger's chart: verdicts per hour as stacked columns, an inline SVG built on the server.

No script, no CDN, no external resource: it renders with JavaScript off and under the
ledger's ``default-src 'none'`` CSP (inline SVG is markup, not a loaded resource). It scales
with its container (``viewBox``): drawn :data:`WIDTH` units wide and shown between 330 and
:data:`MAX_SHOWN` pixels, its :data:`FONT_SIZE` text renders at 12 px or more on a 390 px phone
without growing large on a desktop. The legend says every verdict in words, beside its colour.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from markupsafe import Markup, escape

from .verdicts import Verdict

#: Stacking order, bottom up, and colours (GitHub Primer's, readable on white).
COLOURS = {
    Verdict.PAIRED.value: "#1a7f37",
    Verdict.SERVER_ONLY.value: "#0969da",
    Verdict.TAG_ONLY.value: "#8250df",
    Verdict.TEST.value: "#bf8700",
    Verdict.PENDING.value: "#8c959f",
    Verdict.FAILED.value: "#cf222e",
}
WIDTH, HEIGHT = 340, 150
#: The widest the chart is shown (CSS pixels), so that its text stays near its drawn size.
MAX_SHOWN = 460
FONT_SIZE = 13
_LEFT, _BOTTOM, _TOP = 30, 20, 10
_FONT = f'font-size="{FONT_SIZE}" fill="#1f2328"'


def verdict_chart(hours: Sequence[Mapping[str, int]]) -> Markup:
    """Stacked columns of verdict counts, one per hour (oldest first); the legend is
    :func:`legend`."""
    tallest = max((sum(h.values()) for h in hours), default=0)
    scale = max(1, tallest)
    plot_w, plot_h = WIDTH - _LEFT, HEIGHT - _BOTTOM - _TOP
    step = plot_w / max(1, len(hours))
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'style="max-width:{MAX_SHOWN}px" '
        f'aria-labelledby="chart-title" preserveAspectRatio="xMidYMid meet">',
        '<title id="chart-title">Events per hour over the last day, by verdict</title>',
        f'<line x1="{_LEFT}" y1="{_TOP + plot_h}" x2="{WIDTH}" y2="{_TOP + plot_h}" '
        'stroke="#d1d9e0"/>',
        f'<text x="{_LEFT - 4}" y="{_TOP + 10}" text-anchor="end" {_FONT}>{tallest}</text>',
        f'<text x="{_LEFT - 4}" y="{_TOP + plot_h}" text-anchor="end" {_FONT}>0</text>',
        f'<text x="{_LEFT}" y="{HEIGHT - 4}" {_FONT}>24 h ago</text>',
        f'<text x="{WIDTH}" y="{HEIGHT - 4}" text-anchor="end" {_FONT}>now</text>',
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

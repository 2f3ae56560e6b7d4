"""The history's pictures, as SVG written by hand like `connector.chart` (one kind of picture
each, embedded in a self-contained page): the reliability diagram, the movement waterfall and
the forecast accuracy per month."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from html import escape

from connector.chart import _nice_ceiling, _short
from connector.history.movement import bucket_label
from connector.i18n import gettext as _

SIZE, PAD = 360, 48
COLOUR, OUTSIDE, GREY = "#2f5d8a", "#a40000", "#bbb"


def _open(width: int, height: int, title: str, standalone: bool) -> list[str]:
    namespace = 'xmlns="http://www.w3.org/2000/svg" ' if standalone else ""
    return [f'<svg {namespace}viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
            f'role="img" aria-label="{escape(title)}" font-family="sans-serif" font-size="12">',
            f"<title>{escape(title)}</title>",
            f'<text x="{PAD}" y="20" font-size="14" font-weight="bold">{escape(title)}</text>']


def _grid(top: Decimal, width: int, y: Callable[[Decimal], float]) -> list[str]:
    """Five horizontal lines from 0 to `top`, labelled on the left."""
    out = []
    for i in range(5):
        v = top * i / 4
        out.append(f'<line x1="{PAD}" x2="{width - PAD}" y1="{y(v):.1f}" y2="{y(v):.1f}" '
                   'stroke="#eee"/>')
        out.append(f'<text x="{PAD - 4}" y="{y(v) + 4:.1f}" text-anchor="end">{_short(v)}</text>')
    return out


def reliability_svg(points: list[tuple[str, float, float | None, float, float, bool]],
                    standalone: bool = True) -> str:
    """(workflow, said 0..1, observed 0..1 or None, low, high, verdict is 'outside') per
    workflow: the observed rate with its interval against what the workflow says; the
    diagonal is a perfect calibration."""
    title = _("Reliability: what each workflow says vs what was won")
    side = SIZE - 2 * PAD
    parts = _open(SIZE + 140, SIZE, title, standalone)

    def x(v: float) -> float:
        return PAD + v * side

    def y(v: float) -> float:
        return SIZE - PAD - v * side

    for i in range(6):
        v = i / 5
        parts.append(f'<line x1="{x(0)}" x2="{x(1)}" y1="{y(v):.1f}" y2="{y(v):.1f}" '
                     'stroke="#eee"/>')
        parts.append(f'<text x="{x(0) - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{i * 20}%</text>')
        parts.append(f'<text x="{x(v):.1f}" y="{y(0) + 16}" text-anchor="middle">{i * 20}%</text>')
    parts.append(f'<line x1="{x(0)}" y1="{y(0)}" x2="{x(1)}" y2="{y(1)}" stroke="{GREY}" '
                 'stroke-dasharray="4 3"/>')
    point = _("{name}: says {said}, won {won} (interval {low} to {high}, 95%)")
    axis, dot, bar = _("the workflow says"), _("dot: won"), _("bar: interval (95%)")
    red = _("red: outside")
    for name, said, observed, low, high, outside in points:
        if observed is None:
            continue
        colour = OUTSIDE if outside else COLOUR
        parts.append(f'<line x1="{x(said):.1f}" x2="{x(said):.1f}" y1="{y(low):.1f}" '
                     f'y2="{y(high):.1f}" stroke="{colour}" stroke-width="2"/>')
        parts.append(f'<circle cx="{x(said):.1f}" cy="{y(observed):.1f}" r="4" fill="{colour}">'
                     "<title>" + escape(point.format(
                         name=name, said=f"{said:.0%}", won=f"{observed:.1%}",
                         low=f"{low:.1%}", high=f"{high:.1%}")) + "</title></circle>")
    parts.append(f'<text x="{x(0.5)}" y="{SIZE - 8}" text-anchor="middle">'
                 f"{escape(axis)}</text>")
    parts.append(f'<text x="{SIZE - PAD + 12}" y="{PAD + 10}">{escape(dot)}</text>')
    parts.append(f'<text x="{SIZE - PAD + 12}" y="{PAD + 26}">{escape(bar)}</text>')
    parts.append(f'<text x="{SIZE - PAD + 12}" y="{PAD + 42}" fill="{OUTSIDE}">'
                 f"{escape(red)}</text>")
    parts.append("</svg>")
    return "\n".join(parts)


def waterfall_svg(month: str, start: Decimal, steps: list[tuple[str, Decimal]], end: Decimal,
                  title: str, standalone: bool = True) -> str:
    """Start, one bar per bucket (up green, down red, from where the previous left off), end."""
    width = max(640, PAD * 2 + 62 * (len(steps) + 2))
    height = 320
    level = start
    tops = [start, end]
    spans: list[tuple[str, Decimal, Decimal]] = [("start", Decimal(0), start)]
    for name, change in steps:
        spans.append((name, level, level + change))
        level += change
        tops.append(level)
    spans.append(("end", Decimal(0), end))
    top = _nice_ceiling(max(max(tops), Decimal(0)))
    plot_h = height - PAD - 60
    slot = (width - 2 * PAD) / len(spans)
    parts = _open(width, height, f"{title} {month}", standalone)

    def y(v: Decimal) -> float:
        return 36 + plot_h - float(max(v, Decimal(0)) / top) * plot_h

    parts += _grid(top, width, y)
    for i, (name, a, b) in enumerate(spans):
        colour = COLOUR if name in ("start", "end") else ("#2e7d32" if b >= a else OUTSIDE)
        x = PAD + i * slot + slot * 0.15
        hi, lo = y(max(a, b)), y(min(a, b))
        label = bucket_label(name)
        parts.append(f'<rect x="{x:.1f}" y="{hi:.1f}" width="{slot * 0.7:.1f}" '
                     f'height="{max(lo - hi, 1):.1f}" fill="{colour}"><title>{escape(label)}: '
                     f"{(b - a).quantize(Decimal('0.01'))}</title></rect>")
        parts.append(f'<text x="{x + slot * 0.35:.1f}" y="{height - 40}" text-anchor="end" '
                     f'transform="rotate(-35 {x + slot * 0.35:.1f} {height - 40})">'
                     f"{escape(label)}</text>")
    parts.append("</svg>")
    return "\n".join(parts)


def accuracy_svg(rows: list[tuple[str, Decimal, Decimal | None, Decimal]], lag: int,
                 standalone: bool = True) -> str:
    """Per month: the rules' forecast, the CRM's, and what was won (a line of dots)."""
    title = _("Forecast {n} days ahead vs won").format(n=lag)
    width = max(640, PAD * 2 + 56 * len(rows))
    height = 300
    values = [v for _month, f, c, w in rows for v in (f, c, w) if v is not None]
    top = _nice_ceiling(max(values, default=Decimal(0)))
    plot_h = height - PAD - 48
    slot = (width - 2 * PAD) / max(len(rows), 1)
    parts = _open(width, height, title, standalone)

    def y(v: Decimal) -> float:
        return 36 + plot_h - float(max(v, Decimal(0)) / top) * plot_h

    parts += _grid(top, width, y)
    for i, (month, rules, crm, won) in enumerate(rows):
        x = PAD + i * slot + slot / 2
        bar = slot * 0.3
        for offset, value, colour, label in ((-bar, rules, COLOUR, _("rules")),
                                             (0, crm, GREY, "CRM")):
            if value is None:
                continue
            parts.append(f'<rect x="{x + offset:.1f}" y="{y(value):.1f}" width="{bar:.1f}" '
                         f'height="{y(Decimal(0)) - y(value):.1f}" fill="{colour}"><title>'
                         f"{escape(month)} {label}: {value}</title></rect>")
        won_label = _("won")
        parts.append(f'<circle cx="{x:.1f}" cy="{y(won):.1f}" r="4" fill="{OUTSIDE}"><title>'
                     f"{escape(month)} {won_label}: {won}</title></circle>")
        parts.append(f'<text x="{x:.1f}" y="{height - 24}" text-anchor="middle">'
                     f"{escape(month)}</text>")
    legend = escape(_("blue: rules, grey: CRM, red dot: won"))
    parts.append(f'<text x="{PAD}" y="{height - 6}">{legend}</text>')
    parts.append("</svg>")
    return "\n".join(parts)

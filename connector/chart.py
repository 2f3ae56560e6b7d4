"""A small SVG bar chart of the forecast: per month, the open pipeline, what is already won and
the weighted amount; overdue deals in a column of their own, first.

Written by hand rather than with a plotting library: the chart is one kind of picture, it must
embed in a self-contained HTML page and open offline, and a plotting stack (matplotlib: ~40 MB,
fonts, a second of import) would weigh more than the whole connector.
"""

from __future__ import annotations

from decimal import Decimal
from html import escape

from connector.core.forecast import OVERDUE, Bucket
from connector.formatting import format_money, row_label
from connector.i18n import gettext as _

WIDTH, HEIGHT = 760, 320
LEFT, RIGHT, TOP, BOTTOM = 84, 16, 36, 48
AMOUNT_COLOUR, WON_COLOUR, WEIGHTED_COLOUR = "#b8c7dc", "#5a9e6f", "#2f5d8a"
OVERDUE_COLOUR = "#d08770"


def _legend() -> tuple[tuple[str, str], ...]:
    return ((_("open pipeline"), AMOUNT_COLOUR), (_("won"), WON_COLOUR),
            (_("weighted (amount x probability)"), WEIGHTED_COLOUR),
            (_("overdue"), OVERDUE_COLOUR))


def _nice_ceiling(value: Decimal) -> Decimal:
    """The axis top: 1, 2, 2.5 or 5 times a power of ten, at or above the value."""
    if value <= 0:
        return Decimal(1)
    exponent = len(str(int(value))) - 1
    base = Decimal(10) ** exponent
    for step in (1, 2, Decimal("2.5"), 5, 10):
        if base * step >= value:
            return base * step
    return base * 10  # pragma: no cover - the loop always returns


def _short(value: Decimal) -> str:
    for size, suffix in ((Decimal(10) ** 9, "G"), (Decimal(10) ** 6, "M"), (Decimal(1000), "k")):
        if abs(value) >= size:
            return f"{(value / size).normalize():f}{suffix}"
    return f"{value.normalize():f}"


def forecast_svg(buckets: list[Bucket], title: str | None = None,
                 standalone: bool = True, locale: str | None = None) -> str:
    """The chart as an SVG document (`standalone`, for a .svg file) or as markup to put inside
    an HTML page, where the SVG namespace is implied and an `http://` URL, even one that is only
    a namespace name, has no place in a page that must show it refers to nothing outside.
    Amounts in the tooltips as a person reads them in `locale`."""
    title = title or _("Forecast per expected close month")
    namespace = 'xmlns="http://www.w3.org/2000/svg" ' if standalone else ""
    width = max(WIDTH, LEFT + RIGHT + 64 * len(buckets))  # room for every month's label
    plot_w, plot_h = width - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    top = _nice_ceiling(max((max(b.amount - b.won, b.won, b.weighted_amount)
                             for b in buckets), default=Decimal(0)))
    parts = [f'<svg {namespace}viewBox="0 0 {width} {HEIGHT}" '
             f'width="{width}" height="{HEIGHT}" role="img" aria-label="{escape(title)}" '
             'font-family="sans-serif" font-size="12">',
             f'<title>{escape(title)}</title>',
             f'<text x="{LEFT}" y="20" font-size="14" font-weight="bold">{escape(title)}</text>']
    for i in range(5):
        value = top * i / 4
        y = TOP + plot_h - float(value / top) * plot_h
        parts.append(f'<line x1="{LEFT}" x2="{width - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
                     'stroke="#ddd"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
                     f'{_short(value)}</text>')
    if buckets:
        slot = plot_w / len(buckets)
        bar = max(2.0, slot * 0.26)
        open_label, won_label, weighted_label = _("open pipeline"), _("won"), _("weighted")
        for i, b in enumerate(buckets):
            x = LEFT + i * slot + slot / 2
            open_colour = OVERDUE_COLOUR if b.key == OVERDUE else AMOUNT_COLOUR
            name = row_label(b.key)
            for offset, value, colour, label in (
                    (-1.5 * bar, b.amount - b.won, open_colour, open_label),
                    (-0.5 * bar, b.won, WON_COLOUR, won_label),
                    (0.5 * bar, b.weighted_amount, WEIGHTED_COLOUR, weighted_label)):
                h = float(max(value, Decimal(0)) / top) * plot_h
                parts.append(
                    f'<rect x="{x + offset:.1f}" y="{TOP + plot_h - h:.1f}" width="{bar:.1f}" '
                    f'height="{h:.1f}" fill="{colour}"><title>{escape(name)} {escape(label)}: '
                    f'{escape(format_money(value, locale))}</title></rect>')
            parts.append(f'<text x="{x:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle">'
                         f'{escape(name)}</text>')
    else:
        empty = escape(_("no opportunity with a close date and an amount"))
        parts.append(f'<text x="{LEFT + plot_w / 2}" y="{TOP + plot_h / 2}" '
                     f'text-anchor="middle">{empty}</text>')
    legend_y, x = HEIGHT - 14, LEFT
    for label, colour in _legend():
        parts.append(f'<rect x="{x}" y="{legend_y - 10}" width="12" height="12" '
                     f'fill="{colour}"/><text x="{x + 18}" y="{legend_y}">{escape(label)}</text>')
        x += 30 + 7 * len(label)
    parts.append("</svg>")
    return "\n".join(parts)

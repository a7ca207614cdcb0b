"""Plots for the report: PNGs under <report dir>/plots/, drawn with matplotlib's Agg canvas (no display).

Chinese labels need a font with CJK glyphs. One is looked for at run time; without one, plot labels
fall back to English so a plot never shows empty boxes (the report text stays Chinese). pyplot is not
used: figures are built on their own canvas, so no global backend state is touched.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from medtune.report.owned import OwnedFiles

CJK_PROBE = "训练损失验证学习率"


@lru_cache(maxsize=1)
def find_cjk_font() -> str | None:
    """The name of an installed font that has glyphs for Chinese labels, or None."""
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    from medtune.report.document import CJK_FONTS

    hints = ("cjk", "sc", "hei", "song", "kai", "ming", "han", "wenquan", "yahei", "pingfang", "gothic", "noto")
    preferred = {name.lower(): i for i, name in enumerate(CJK_FONTS)}
    fonts = sorted(font_manager.fontManager.ttflist,  # the page's fonts in its order, then likely ones
                   key=lambda f: (preferred.get(f.name.lower(), len(preferred)),
                                  not any(h in f.name.lower() for h in hints)))
    seen = set()
    for f in fonts:
        # matplotlib (3.10+) ships "Last Resort", which maps every character to a placeholder box.
        if f.fname in seen or "last resort" in f.name.lower():
            continue
        seen.add(f.fname)
        try:
            face = FT2Font(f.fname)
        except (OSError, RuntimeError, ValueError):
            continue
        glyphs = [face.get_char_index(ord(c)) for c in CJK_PROBE]
        if all(glyphs) and len(set(glyphs)) == len(set(CJK_PROBE)):  # a real glyph each, not one placeholder
            return f.name
    return None


def label_lang(lang: str, cjk_font: str | None) -> str:
    """The language plot labels can be drawn in: Chinese only with a CJK font."""
    return "zh" if lang == "zh" and cjk_font else "en"


@dataclass
class Line:
    label: str
    xs: list[float]
    ys: list[float]
    style: str = "-"
    marker: str = ""
    color: str | None = None


class Plotter:
    """Writes one PNG per call into out_dir/plots and returns its path relative to out_dir."""

    def __init__(self, out_dir: Path, lang: str, cjk_font: str | None, owned: OwnedFiles | None = None):
        self.out_dir = out_dir
        self.owned = owned
        self.font = cjk_font if label_lang(lang, cjk_font) == "zh" else None
        self.lang = label_lang(lang, cjk_font)
        self.written: list[str] = []

    def _figure(self, width: float = 7.5, height: float = 3.6):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
        FigureCanvasAgg(fig)
        return fig

    def _save(self, fig, name: str) -> str:
        rel = f"plots/{name}.png"
        path = self.owned.claim(rel) if self.owned else self.out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png", metadata={"Software": None})
        self.written.append(rel)
        if self.owned:
            self.owned.wrote(rel)
        return rel

    def _style(self):
        from matplotlib import rc_context

        family = [self.font, "DejaVu Sans"] if self.font else ["DejaVu Sans"]
        return rc_context({"font.family": "sans-serif", "font.sans-serif": family, "axes.unicode_minus": False,
                           "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
                           "axes.spines.right": False, "font.size": 9.5})

    def plain(self, label: str) -> str:
        """A data label (model or arm name) safe for the plot font: CJK characters become '?' without one."""
        return label if self.font else "".join("?" if ord(c) >= 0x2E80 else c for c in label)

    def lines(self, name: str, title: str, xlabel: str, ylabel: str, lines: list[Line],
              hlines: list[tuple[float, str]] = (), log_y: bool = False, integer_x: bool = False) -> str:
        with self._style():
            fig = self._figure()
            ax = fig.add_subplot()
            for ln in lines:
                ax.plot(ln.xs, ln.ys, ln.style, marker=ln.marker or None, markersize=3.5, linewidth=1.4,
                        label=self.plain(ln.label), color=ln.color)
            for y, label in hlines:
                ax.axhline(y, linestyle=":", linewidth=1.2, color="#7f7f7f", label=label)
            if log_y:
                ax.set_yscale("log")
            if integer_x:  # turns, not a continuous axis
                from matplotlib.ticker import MaxNLocator

                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
            if len(lines) + len(hlines) > 1:
                ax.legend(frameon=False)
            return self._save(fig, name)

    def histogram(self, name: str, title: str, xlabel: str, ylabel: str, edges: list[float], counts: list[float],
                  vline: tuple[float, str] | None = None) -> str:
        with self._style():
            fig = self._figure()
            ax = fig.add_subplot()
            widths = [b - a for a, b in zip(edges[:-1], edges[1:])]
            ax.bar(edges[:-1], counts, width=widths, align="edge", color="#4c78a8", edgecolor="white")
            if vline:
                ax.axvline(vline[0], linestyle="--", color="#e45756", label=vline[1])
                ax.legend(frameon=False)
            ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
            return self._save(fig, name)

    def intervals(self, name: str, title: str, xlabel: str, labels: list[str], values: list[float],
                  lows: list[float], highs: list[float]) -> str:
        """Horizontal points with 95% interval bars, one row per label (accuracies, rates)."""
        with self._style():
            fig = self._figure(height=max(2.2, 0.45 * len(labels) + 1.2))
            ax = fig.add_subplot()
            ys = list(range(len(labels)))[::-1]
            err = [[v - lo for v, lo in zip(values, lows)], [hi - v for v, hi in zip(values, highs)]]
            ax.errorbar(values, ys, xerr=err, fmt="o", color="#4c78a8", capsize=4)
            ax.set_yticks(ys, [self.plain(label) for label in labels])
            ax.set_xlim(0, 1)
            ax.set(title=title, xlabel=xlabel)
            return self._save(fig, name)

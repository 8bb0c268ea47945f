"""Figure helpers shared by the studies: pyplot-free matplotlib (no global state, no display).

``matplotlib.figure.Figure`` draws through the Agg canvas when saved to PNG, so the studies never
import ``pyplot`` and never need a display or a backend setting.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from PIL import Image

#: Resolution of saved PNGs: readable labels, files of tens of kB.
DPI = 110
#: Palette size of saved PNGs: line plots need few colours, and a palette PNG is ~3x smaller.
PALETTE_COLORS = 128
#: Values are clipped to this on log axes, so that an exact 0 still shows (and is annotated).
LOG_FLOOR = 1e-17


def figure(ncols: int = 1, *, width_in: float = 6.4, height_in: float = 4.6) -> tuple[Figure, list[Axes]]:
    """A constrained-layout figure with ``ncols`` side-by-side axes."""
    fig = Figure(figsize=(width_in * ncols, height_in), layout="constrained")
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def save(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as a palette PNG (no dithering, so lines and text stay crisp); return the path."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    buffer.seek(0)
    with Image.open(buffer) as image:
        palette = image.convert("RGB").quantize(
            colors=PALETTE_COLORS, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
        )
        palette.save(path, optimize=True)
    return path


def log_grid(ax: Axes) -> None:
    """Major and minor grid lines, faint (log axes span decades)."""
    ax.grid(True, which="major", alpha=0.35)
    ax.grid(True, which="minor", alpha=0.12)


def floor_for_log(values: np.ndarray | list[float]) -> np.ndarray:
    """``values`` with zeros (and anything smaller) raised to :data:`LOG_FLOOR`."""
    return np.maximum(np.asarray(values, dtype=np.float64), LOG_FLOOR)

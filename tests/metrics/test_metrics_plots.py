"""Every plot writes a valid PNG atomically and leaves nothing behind when it fails."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from facemtl.metrics import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _check_png(path) -> None:
    data = path.read_bytes()
    assert len(data) > 1000 and data[:8] == PNG_MAGIC


def _corr_df(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    m = np.corrcoef(rng.normal(size=(n, 20)))
    m[0, 1] = m[1, 0] = np.nan
    names = [f"t{i}" for i in range(n)]
    return pd.DataFrame(m, index=names, columns=names)


CASES = {
    "ced": lambda p: plots.plot_ced({"a": (np.linspace(0, 0.1, 50), np.linspace(0, 1, 50))}, p),
    "roc": lambda p: plots.plot_roc({"a": (np.array([0, 0.1, 1]), np.array([0, 0.8, 1]), None)}, p),
    "roc_log": lambda p: plots.plot_roc({"a": (np.array([0, 1e-3, 0.1, 1]), np.array([0, 0.5, 0.8, 1]))}, p, log_fpr=True),
    "confusion": lambda p: plots.plot_confusion(np.array([[5, 1, 0], [2, 7, 1], [0, 0, 0]]), ["x", "y", "z"], p),
    "heatmap_small": lambda p: plots.plot_heatmap(_corr_df(5), p, "small"),
    "heatmap_large": lambda p: plots.plot_heatmap(_corr_df(40), p, "large"),
    "bars": lambda p: plots.plot_bars(pd.DataFrame({"m": [1.0, 2.0], "s": [0.1, 0.2]}, index=["a", "b"]), "m", "s", p),
    "bars_many": lambda p: plots.plot_bars(pd.DataFrame({"m": np.arange(40.0)}), "m", None, p),
    "curves": lambda p: plots.plot_curves(pd.DataFrame({"step": [0, 1, 2], "w1": [1, 0.5, 0.2], "w2": [0, 0.5, 0.8]}),
                                          "step", ["w1", "w2"], p, logy=False),
    "sweep": lambda p: plots.plot_sweep(np.linspace(0, 1, 11), np.linspace(0.5, 0.9, 11), np.full(11, 0.02), p, "w1", "acc"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_plot_writes_png(tmp_path, name):
    path = tmp_path / "sub" / f"{name}.png"
    CASES[name](path)
    _check_png(path)
    assert [f.name for f in path.parent.iterdir()] == [path.name]  # no temporary left


def test_failed_save_leaves_target_untouched(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    path = tmp_path / "roc.png"
    path.write_bytes(b"old")

    def broken_savefig(self, fname, **kw):
        with open(fname, "wb") as f:
            f.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(RuntimeError, match="disk full"):
        CASES["roc"](path)
    assert path.read_bytes() == b"old"
    assert [f.name for f in tmp_path.iterdir()] == ["roc.png"]


def test_bad_input_raises_and_writes_nothing(tmp_path):
    with pytest.raises(ValueError, match="not in the table"):
        plots.plot_bars(pd.DataFrame({"m": [1.0]}), "missing", None, tmp_path / "b.png")
    with pytest.raises(ValueError, match="at least one curve"):
        plots.plot_ced({}, tmp_path / "c.png")
    with pytest.raises(ValueError, match=r"\(2, 2\)"):
        plots.plot_confusion(np.eye(3), ["a", "b"], tmp_path / "m.png")
    assert list(tmp_path.iterdir()) == []


def test_importing_facemtl_metrics_does_not_import_matplotlib():
    code = "import sys, facemtl.metrics, facemtl.metrics.plots; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- readability (issue 14, item 21) -------------------------------------------------------------
@pytest.fixture
def figures(monkeypatch):
    """The figures the plot functions build, drawn (so that text extents are known), not saved."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    built = []

    def keep(fig, path, dpi=120):
        FigureCanvasAgg(fig).draw()
        built.append(fig)

    monkeypatch.setattr(plots, "_save", keep)
    return built


def _inside(fig, box) -> bool:
    page = fig.bbox
    return box.x0 >= page.x0 - 1 and box.x1 <= page.x1 + 1 and box.y0 >= page.y0 - 1 and box.y1 <= page.y1 + 1


def test_one_epoch_curve_draws_markers(figures):
    plots.plot_curves(pd.DataFrame({"epoch": [1], "loss": [0.7], "val": [0.8]}), "epoch", ["loss", "val"], "x.png")
    lines = figures[0].axes[0].get_lines()
    assert len(lines) == 2 and all(line.get_marker() == "o" for line in lines)


def test_long_titles_and_labels_fit_the_figure(figures):
    title = "validation metrics of landmarks+pose+gender+glasses+smile [tcdcn], seed 0, lower is better"
    plots.plot_curves(pd.DataFrame({"epoch": [1, 2], "loss": [0.7, 0.5]}), "epoch", "loss", "x.png", title=title)
    names = ["landmarks", "landmarks+pose", "landmarks+pose+gender+glasses+smile [ew]"]
    plots.plot_bars(pd.DataFrame({"d": [0.0, 5.0, -2.0]}, index=names), "d", None, "b.png", title=title, value_label="Δm (%)")
    for fig in figures:
        ax = fig.axes[0]
        assert _inside(fig, ax.title.get_window_extent()), ax.title.get_text()
        assert _inside(fig, ax.get_tightbbox(fig.canvas.get_renderer()))  # every drawn label and tick
    bars = figures[1].axes[0]
    assert [t.get_text() for t in bars.get_yticklabels()] == names  # horizontal, full names
    assert bars.get_xlabel() == "Δm (%)"


def test_cell_numbers_are_readable_on_pale_and_dark_cells(figures):
    plots.plot_confusion(np.array([[10, 0], [0, 10]]), ["a", "b"], "c.png")
    colours = {t.get_text(): t.get_color() for t in figures[0].axes[0].texts}
    assert colours["0"] == "black" and colours["10"] == "white"  # 0 % is the palest blue
    df = pd.DataFrame([[1.0, 0.0], [0.0, -1.0]], index=["a", "b"], columns=["a", "b"])
    plots.plot_heatmap(df, "h.png")
    texts = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_color() for t in figures[1].axes[0].texts}
    assert texts[(0, 1)] == "black"  # 0: the white middle of RdBu
    assert texts[(0, 0)] == "white" and texts[(1, 1)] == "white"  # the dark ends

"""radioactive._io.save_png: the one way figures reach disk (report, grids, demo, benchmarks)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from radioactive._io import save_png  # noqa: E402


def _figure(values):
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot(values)
    return fig


def test_same_plot_same_bytes_and_figure_closed(tmp_path):
    first, second = tmp_path / "a" / "plot.png", tmp_path / "b.png"
    fig = _figure([0, 1, 3])
    assert save_png(fig, first) == first  # makes the missing folder
    assert not plt.fignum_exists(fig.number)
    save_png(_figure([0, 1, 3]), second)
    assert first.read_bytes() == second.read_bytes()  # no timestamp or version in the metadata
    assert first.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    save_png(_figure([0, 2, 3]), second)
    assert first.read_bytes() != second.read_bytes()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left behind


def test_dpi_sets_the_pixel_size(tmp_path):
    import struct

    save_png(_figure([1, 2]), tmp_path / "low.png", dpi=50)
    save_png(_figure([1, 2]), tmp_path / "high.png", dpi=100)
    width = [struct.unpack(">I", (tmp_path / n).read_bytes()[16:20])[0] for n in ("low.png", "high.png")]
    assert width == [100, 200]  # a 2-inch figure

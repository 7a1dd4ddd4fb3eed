import numpy as np
import pytest
from PIL import Image

from moonprop import plot

W, H = plot.frame_size(480)
X0, X1, Y0, Y1 = plot.MOONS


def test_grid_is_a_third_of_the_picture_each_way_and_spans_the_plane():
    gw, gh = plot.grid_size(480)
    g = plot.grid(480)
    assert (W, H) == (480, 300) and (gw, gh) == (160, 100) and g.shape == (gw * gh, 2)
    assert X0 < g[:, 0].min() < g[:, 0].max() < X1
    assert g[0, 1] > g[-1, 1]  # row 0 is the top of the picture


def pixel_centres() -> tuple[np.ndarray, np.ndarray]:
    xs = X0 + (np.arange(W) + 0.5) * (X1 - X0) / W
    ys = Y1 - (np.arange(H) + 0.5) * (Y1 - Y0) / H
    return np.meshgrid(xs, ys)


def test_interpolated_scores_are_the_networks_where_it_is_linear():
    """A ReLU network is piecewise linear: interpolating its scores between grid points gives the
    true score at every pixel of a linear piece (the outer half cell is held, not extrapolated)."""
    g = plot.grid(480)
    scores = 0.7 * g[:, 0] - 1.3 * g[:, 1] + 0.2
    x, y = pixel_centres()
    exact = 0.7 * x - 1.3 * y + 0.2
    interpolated = plot.scores_image(scores, 480)
    assert interpolated.shape == (H, W)
    assert np.abs(interpolated - exact)[2:-2, 2:-2].max() < 1e-4


def _render(scores, points=None, labels=None, caption=""):
    points = np.zeros((0, 2)) if points is None else points
    labels = np.zeros(0) if labels is None else labels
    return np.array(plot.Boundary(points, labels, 480).draw(scores, caption))


def test_background_follows_the_score_and_the_zero_level_is_a_smooth_line():
    g = plot.grid(480)
    img = _render((g[:, 0] - 0.5) + 0.3 * (g[:, 1] - 0.25))  # a slanted boundary through (0.5, 0.25)
    row = H // 2
    assert img[row, 5] < plot.LEVELS // 2 <= img[row, W - 5] < plot.LEVELS  # blue shades, then red
    x, y = pixel_centres()
    true_col = np.argmin(np.abs((x[row] - 0.5) + 0.3 * (y[row] - 0.25)))
    dark = np.flatnonzero(img[row] == plot.BLACK)
    assert len(dark) and np.abs(dark - true_col).max() <= 1  # on the zero level, 1-2 px wide
    edge = np.flatnonzero((img[row] >= plot.LEVELS) & (img[row] < 3 * plot.LEVELS))
    assert len(edge) >= 1 and np.abs(edge - true_col).max() <= 2  # blended edges: no staircase


def test_points_are_coloured_by_true_class():
    points = np.array([[0.0, 0.0], [1.5, -0.5]])
    img = _render(np.ones(len(plot.grid(480))), points, np.array([-1.0, 1.0]))
    to_px = lambda x, y: (int((Y1 - y) / 2.5 * H), int((x + 1.5) / 4 * W))  # noqa: E731
    assert img[to_px(0.0, 0.0)] == plot.BLUE
    assert img[to_px(1.5, -0.5)] == plot.RED


def test_text_is_as_tall_as_the_uis_own():
    """Capitals of 11 px and more at 480 px, the size of MLflow's own text at 100%."""
    caption, small = plot.font_sizes(480)
    assert plot.font(small).getbbox("E")[3] - plot.font(small).getbbox("E")[1] >= 11
    assert caption > small
    img = _render(-np.ones(len(plot.grid(480))), caption="epoch 150   test acc 0.999")
    ink = np.argwhere(img == plot.BLACK)
    assert ink[:, 0].max() - ink[:, 0].min() >= 11  # the caption's glyphs, drawn
    assert (img[: ink[:, 0].max()] == plot.ink("black", 1)).any()  # with smoothed edges


def test_animation_frame_adds_curves_with_an_epoch_axis_below(tmp_path):
    top = plot.Boundary(np.zeros((0, 2)), np.zeros(0), 480).draw(np.ones(len(plot.grid(480))), "epoch 3")
    frame = plot.animation_frame(top, [0.5, 0.7, 0.9], [1.0, 0.5, 0.2], num_epochs=150)
    assert frame.width == 480 and frame.height > 300 + 150
    below = np.array(frame)[300:]
    assert (below == plot.GREEN).any() and (below == plot.ORANGE).any() and (below == plot.GREY).any()
    later = plot.animation_frame(top, [0.5, 0.7, 0.9, 0.95], [1.0, 0.5, 0.2, 0.1], num_epochs=150)
    animation = plot.Animation()
    for f in (frame, later, later):
        animation.add(f)
    animation.save(str(tmp_path / "a.gif"))
    gif = Image.open(tmp_path / "a.gif")
    assert gif.n_frames == 3 and gif.info["loop"] == 0
    for i, expected in enumerate((frame, later, later)):  # each frame as drawn, though only its changes are stored
        gif.seek(i)
        assert (np.asarray(gif.convert("RGB")) == np.asarray(expected.convert("RGB"))).all()
    assert gif.info["duration"] == 2000  # the last frame is held


@pytest.mark.parametrize("epochs, every, frames", [(150, 1, 76), (5, 1, 6), (3000, 10, 76), (7, 3, 4)])
def test_the_animation_keeps_at_most_a_hundred_frames_first_and_last_included(epochs, every, frames):
    steps = plot.animation_steps(epochs, every)
    assert len(steps) == frames and {0, epochs} <= steps and len(steps) <= plot.MAX_FRAMES + 1


def test_nice_ticks():
    assert plot.nice_ticks(150) == [0, 50, 100, 150]
    assert plot.nice_ticks(3000) == [0, 1000, 2000, 3000]


def test_small_multiples_label_rows_and_columns_without_cutting_any_label():
    tile = plot.Boundary(np.zeros((0, 2)), np.zeros(0), 480).draw(np.ones(len(plot.grid(480))))
    long = "[32,32,32,32,32,32,32,32]"
    cells = [({"hidden": h, "schedule": s, "alpha": "0.0001"}, "acc 0.990", tile, h == "[8]" and s == "cosine")
             for h in ("[8]", long) for s in ("linear", "cosine")]
    grid = plot.small_multiples(cells)
    assert grid.width >= 2 * 240 and grid.height >= 2 * 150
    header = "schedule=linear alpha=0.0001"
    assert all(plot.text_size(line, 16)[0] <= 240 for line in plot.wrap(header, 16, 240))
    assert plot.wrap(f"hidden={long}", 16, 160) == [f"hidden={long}"]  # a single word stays whole
    pixels = np.array(grid)
    assert (pixels == plot.BEST).all(axis=2).any()  # the best job is framed


def test_curves_zoom_to_where_they_differ_and_name_every_job():
    series = [("schedule=linear", [[0.5] + [0.9, 0.95, 0.99] * 13]),
              ("schedule=cosine", [[0.5] + [0.92, 0.97, 0.98] * 13])]
    pixels = np.array(plot.curves(series))
    frame_top, frame_bottom = 36, 420 - 58  # the plot's frame, as curves() draws it at its default size
    for i, _ in enumerate(series):
        ys, xs = np.nonzero((pixels == plot.SERIES[i]).all(axis=2))
        in_plot = ys[xs < 900]
        assert len(in_plot) and (xs >= 900).any()  # drawn in the plot, and its sample in the legend beside it
        # zoomed to 0.85..1: 0.9 to 0.99 fill most of the frame (from 0 to 1 they would fill a tenth)
        assert in_plot.max() - in_plot.min() > 0.5 * (frame_bottom - frame_top)


def test_curves_draw_each_configurations_mean_and_a_band_over_its_seeds():
    seeds = [[0.5] + [0.90] * 39, [0.5] + [0.96] * 39]  # the mean 0.93, a standard deviation of 0.042
    image = plot.curves([("schedule=linear", seeds)])
    pixels = np.array(image)
    ys, xs = np.nonzero((pixels == plot.SERIES[0]).all(axis=2))
    line_y = int(np.median(ys[(xs > 500) & (xs < 850)]))  # where the mean runs, late in training
    band = pixels[:, 700].astype(int)  # a column through the band: neither white nor the line's colour
    tinted = [y for y in range(36, 420 - 58) if (band[y] != 255).any() and not (band[y] == plot.SERIES[0]).all()
              and abs(band[y] - np.array(plot.SERIES[0])).sum() < 400]
    assert min(tinted) < line_y < max(tinted) and max(tinted) - min(tinted) > 20  # the band either side of it
    assert plot.text_size("schedule=linear  0.930 ± 0.042 (n=2)", 16)[0] < image.width - 900

import numpy as np
from PIL import Image

from moonprop import plot


def test_grid_matches_frame_size_and_spans_the_plane():
    w, h = plot.frame_size(160)
    g = plot.grid(160)
    assert (w, h) == (160, 100) and g.shape == (w * h, 2)
    assert plot.X_RANGE[0] < g[:, 0].min() < g[:, 0].max() < plot.X_RANGE[1]
    assert g[0, 1] > g[-1, 1]  # row 0 is the top of the picture


def _render(scores, points=None, labels=None):
    points = np.zeros((0, 2)) if points is None else points
    labels = np.zeros(0) if labels is None else labels
    return np.array(plot.boundary(scores, points, labels, 160, ""))


def test_background_follows_the_score_and_the_zero_level_is_black():
    g = plot.grid(160)
    scores = g[:, 0] - 0.5  # boundary at x = 0.5: negative (blue) left, positive (red) right
    img = _render(scores)
    w, _ = plot.frame_size(160)
    col = int((0.5 - plot.X_RANGE[0]) / (plot.X_RANGE[1] - plot.X_RANGE[0]) * w)
    row = 60  # below the caption box
    assert img[row, 5] < plot.LEVELS // 2 <= img[row, w - 5] < plot.LEVELS  # blue shades, then red
    assert img[row, col - 1 : col + 2].tolist().count(plot.BLACK) >= 1
    assert (img[row] == plot.BLACK).sum() <= 2  # one thin line, not a band


def test_points_are_coloured_by_true_class():
    scores = np.ones(len(plot.grid(160)))
    points = np.array([[0.0, 0.0], [1.5, -0.5]])
    img = _render(scores, points, np.array([-1.0, 1.0]))
    w, h = plot.frame_size(160)
    to_px = lambda x, y: (int((plot.Y_RANGE[1] - y) / 2.5 * h), int((x + 1.5) / 4 * w))  # noqa: E731
    assert img[to_px(0.0, 0.0)] == plot.BLUE
    assert img[to_px(1.5, -0.5)] == plot.RED


def test_animation_frame_adds_curves_below(tmp_path):
    top = plot.boundary(np.ones(len(plot.grid(160))), np.zeros((0, 2)), np.zeros(0), 160, "epoch 3")
    frame = plot.animation_frame(top, [0.5, 0.7, 0.9], [1.0, 0.5, 0.2], num_epochs=10)
    assert frame.size == (160, 150)
    below = np.array(frame)[100:]
    assert (below == plot.GREEN).any() and (below == plot.ORANGE).any()
    later = plot.animation_frame(top, [0.5, 0.7, 0.9, 0.95], [1.0, 0.5, 0.2, 0.1], num_epochs=10)
    plot.gif([frame, later], str(tmp_path / "a.gif"))
    assert Image.open(tmp_path / "a.gif").n_frames == 2

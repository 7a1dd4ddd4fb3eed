"""Pictures of a run, drawn with numpy and Pillow: a matplotlib figure per frame costs ~100 ms, these
a few ms, and their small palettes keep 150 PNGs and a GIF well under 2 MB.

Every image is in palette mode ("P") with the one palette below, so GIF frames share it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# The plane shown: the moons span x in [-1, 2], y in [-0.5, 1] plus noise.
X_RANGE = (-1.5, 2.5)
Y_RANGE = (-1.0, 1.5)
SCORE_CLIP = 2.0  # the background saturates beyond |f(x)| = 2: the margin is at 1

LEVELS = 16  # background shades: 8 blue (f < 0, upper moon) and 8 red (f > 0, lower moon)
BLACK, WHITE, BLUE, RED, GREY, GREEN, ORANGE = range(LEVELS, LEVELS + 7)


def _palette() -> list[int]:
    half = LEVELS // 2
    blue, red, white = np.array([49, 99, 190]), np.array([200, 55, 45]), np.array([255, 255, 255])
    shades = [blue + (white - blue) * (0.35 + 0.6 * i / (half - 1)) for i in range(half)]  # dark->light
    shades += [red + (white - red) * (0.35 + 0.6 * i / (half - 1)) for i in reversed(range(half))]
    named = [(0, 0, 0), (255, 255, 255), (25, 60, 150), (160, 20, 20), (150, 150, 150),
             (30, 140, 60), (230, 120, 20)]
    flat = [int(c) for rgb in [*shades, *named] for c in rgb]
    return flat + [0] * (768 - len(flat))


PALETTE = _palette()


def frame_size(resolution: int) -> tuple[int, int]:
    """(width, height) of a boundary image `resolution` pixels wide, square pixels."""
    aspect = (Y_RANGE[1] - Y_RANGE[0]) / (X_RANGE[1] - X_RANGE[0])
    return resolution, round(resolution * aspect)


def grid(resolution: int) -> np.ndarray:
    """Centres of the image's pixels in data coordinates, row-major from the top: shape (H*W, 2)."""
    w, h = frame_size(resolution)
    xs = np.linspace(*X_RANGE, w, endpoint=False) + (X_RANGE[1] - X_RANGE[0]) / (2 * w)
    ys = np.linspace(*Y_RANGE[::-1], h, endpoint=False) - (Y_RANGE[1] - Y_RANGE[0]) / (2 * h)
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)


def _to_pixels(points: np.ndarray, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    col = ((points[:, 0] - X_RANGE[0]) / (X_RANGE[1] - X_RANGE[0]) * w).astype(int)
    row = ((Y_RANGE[1] - points[:, 1]) / (Y_RANGE[1] - Y_RANGE[0]) * h).astype(int)
    return row, col


@functools.cache  # loading the font costs as much as drawing a frame's text
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def boundary(scores: np.ndarray, points: np.ndarray, labels: np.ndarray, resolution: int,
             caption: str) -> Image.Image:
    """The decision boundary: background shaded by the raw score f(x), its zero level as a black
    line, the test points coloured by their true class, `caption` in the corner.

    `scores` are the network's outputs on `grid(resolution)`.
    """
    w, h = frame_size(resolution)
    s = np.clip(scores.reshape(h, w), -SCORE_CLIP, SCORE_CLIP - 1e-6)
    img = ((s + SCORE_CLIP) * (LEVELS / (2 * SCORE_CLIP))).astype(np.uint8)
    positive = s > 0
    edge = np.zeros_like(positive)
    edge[:, 1:] |= positive[:, 1:] != positive[:, :-1]
    edge[1:, :] |= positive[1:, :] != positive[:-1, :]
    img[edge] = BLACK

    row, col = _to_pixels(points, w, h)
    for dr in (-1, 0, 1):  # 3x3 dots; the outer ring of a 4x4 would blur 1000 points into a blob
        for dc in (-1, 0, 1):
            r, c = np.clip(row + dr, 0, h - 1), np.clip(col + dc, 0, w - 1)
            img[r, c] = np.where(labels > 0, RED, BLUE)

    im = Image.fromarray(img, mode="P")
    im.putpalette(PALETTE)
    font = _font(max(9, resolution // 18))
    draw = ImageDraw.Draw(im)
    box = draw.textbbox((4, 3), caption, font=font)
    draw.rectangle((box[0] - 2, box[1] - 1, box[2] + 2, box[3] + 1), fill=WHITE)
    draw.text((4, 3), caption, fill=BLACK, font=font)
    return im


def animation_frame(top: Image.Image, acc: Sequence[float], loss: Sequence[float],
                    num_epochs: int) -> Image.Image:
    """The seed post's figure: the boundary above, test accuracy and loss curves below, drawn up
    to the current epoch on axes that span the whole run."""
    w, h = top.size
    ch = max(40, h // 2)
    frame = Image.new("P", (w, h + ch), WHITE)
    frame.putpalette(PALETTE)
    frame.paste(top, (0, 0))
    draw = ImageDraw.Draw(frame)
    x0, x1, y0, y1 = 4, w - 4, h + 4, h + ch - 4  # plot area
    draw.rectangle((x0, y0, x1, y1), outline=GREY)
    loss_top = max(max(loss), 1e-9)

    def points(values: Sequence[float], top_value: float) -> list[tuple[float, float]]:
        return [(x0 + (x1 - x0) * i / max(num_epochs, 1), y1 - (y1 - y0) * min(v / top_value, 1.0))
                for i, v in enumerate(values)]

    if len(acc) > 1:
        draw.line(points(loss, loss_top), fill=ORANGE, width=1)
        draw.line(points(acc, 1.0), fill=GREEN, width=1)
    # the legend sits right of centre, where the curves are not once training settles:
    # accuracy near the top, loss near the bottom
    font = _font(max(8, w // 22))
    line = font.getbbox("Ag")[3] + 1
    labels = [(f"test acc {acc[-1]:.3f}", GREEN), (f"test loss {loss[-1]:.3f}", ORANGE)]
    x = x1 - 3 - max(draw.textlength(text, font=font) for text, _ in labels)
    y = (y0 + y1) // 2 - line
    for i, (text, colour) in enumerate(labels):
        draw.text((x, y + i * line), text, fill=colour, font=font)
    return frame


def gif(frames: Sequence[Image.Image], path: str, frame_ms: int = 60, hold_ms: int = 1500) -> None:
    """Write the animation; the last frame is held so that the final boundary can be read."""
    durations = [frame_ms] * (len(frames) - 1) + [hold_ms]
    frames[0].save(path, format="GIF", save_all=True, append_images=list(frames[1:]),
                   duration=durations, loop=0, disposal=1)


# ---- a sweep's pictures -------------------------------------------------------------------------

SERIES = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
          (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def _swept(labels: Sequence[str]) -> list[dict[str, str]]:
    """Each job's overrides ("a=1 b=2") as a dict, keeping only keys whose values differ."""
    jobs = [dict(o.split("=", 1) for o in label.split() if "=" in o) for label in labels]
    keys = [k for k in dict.fromkeys(k for job in jobs for k in job)
            if len({job.get(k) for job in jobs}) > 1]
    return [{k: job.get(k, "") for k in keys} for job in jobs]


def small_multiples(jobs: Sequence[tuple[str, str, float | None, Image.Image | None]]) -> Image.Image:
    """Every job's final boundary in one picture, one row per value of the first swept key and one
    column per combination of the others, each titled with its values and test accuracy.

    `jobs` are (overrides, status, test accuracy, final boundary or None) in job order.
    """
    swept = _swept([label for label, *_ in jobs])
    row_key = next(iter(swept[0]), None) if swept else None
    rows = list(dict.fromkeys(job.get(row_key, "") for job in swept)) if row_key else [""]
    cols = list(dict.fromkeys(" ".join(f"{k}={v}" for k, v in job.items() if k != row_key) for job in swept))
    size = next((im.size for *_, im in jobs if im is not None), (160, 100))
    font = _font(10)
    title_h, gap = 28, 6
    cell_w, cell_h = size[0] + gap, size[1] + title_h + gap
    canvas = Image.new("RGB", (len(cols) * cell_w + gap, len(rows) * cell_h + gap), "white")
    draw = ImageDraw.Draw(canvas)
    for (label, status, acc, im), job in zip(jobs, swept, strict=True):
        r = rows.index(job.get(row_key, "")) if row_key else 0
        c = cols.index(" ".join(f"{k}={v}" for k, v in job.items() if k != row_key))
        x, y = gap + c * cell_w, gap + r * cell_h
        title = " ".join(f"{k}={v}" for k, v in job.items()) or label
        result = f"acc {acc:.3f}" if status == "FINISHED" and acc is not None else status
        while draw.textlength(title, font=font) > size[0] and len(title) > 4:
            title = title[:-2] + "…"  # noqa: PLW2901
        draw.text((x, y), title, fill="black", font=font)
        draw.text((x, y + 13), result, fill="black" if status == "FINISHED" else (200, 0, 0), font=font)
        if im is not None:
            canvas.paste(im.convert("RGB"), (x, y + title_h))
        else:
            draw.rectangle((x, y + title_h, x + size[0] - 1, y + title_h + size[1] - 1), fill=(225, 225, 225))
    return canvas


def curves(series: Sequence[tuple[str, Sequence[float]]], width: int = 640, height: int = 360) -> Image.Image:
    """The sweep's test-accuracy curves overlaid, one colour per job, with a legend."""
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font = _font(11)
    x0, x1, y0, y1 = 40, width - 10, 10, height - 30 - 12 * min(len(series), 10)
    draw.rectangle((x0, y0, x1, y1), outline=(150, 150, 150))
    longest = max((len(v) for _, v in series), default=1)
    lo = 0.5  # a coin toss: the floor of a useful classifier
    for value in (0.5, 0.75, 1.0):
        y = y1 - (y1 - y0) * (value - lo) / (1 - lo)
        draw.text((4, y - 6), f"{value:.2f}", fill="black", font=font)
    for i, (label, values) in enumerate(series):
        colour = SERIES[i % len(SERIES)]
        points = [(x0 + (x1 - x0) * k / max(longest - 1, 1), y1 - (y1 - y0) * (max(v, lo) - lo) / (1 - lo))
                  for k, v in enumerate(values)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=1)
        if i < 10:
            draw.text((x0, y1 + 18 + 12 * i), f"{label}  ({values[-1]:.3f})" if values else label,
                      fill=colour, font=font)
    draw.text((x0, y1 + 3), "test accuracy per epoch", fill="black", font=font)
    return image

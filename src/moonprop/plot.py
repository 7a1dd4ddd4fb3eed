"""Pictures of a run and of a sweep, drawn with numpy and Pillow: a matplotlib figure per frame
costs tens of times what these do (`make bench` measures a frame).

A run's pictures are in palette mode ("P") with the one palette below, so that GIF frames share it
and PNGs stay small. They are meant to be read at 100% where MLflow shows them (its image card
shows the picture at its natural size, never larger): 480 px wide by default, text with capitals
11 px tall or more, and edges smoothed with blends the palette holds, since a palette image cannot
blend colours by itself.
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
from PIL import GifImagePlugin, Image, ImageDraw, ImageFont

# The plane a picture shows, (x0, x1, y0, y1): by default the moons', which span x in [-1, 2] and
# y in [-0.5, 1] plus noise (each dataset has its own: data.plane).
Plane = tuple[float, float, float, float]
Scale = Callable[[float], float]  # a value to its pixel on one axis
MOONS: Plane = (-1.5, 2.5, -1.0, 1.5)
SCORE_CLIP = 2.0  # the background saturates beyond |f(x)| = 2: the margin is at 1
EVAL_STEP = 3  # the network is scored on every 3rd pixel and the scores interpolated (see `grid`)

# ---- the palette ---------------------------------------------------------------------------------
# 0..15: the background, 8 blue shades (f < 0, upper moon) then 8 red (f > 0, lower moon), dark to
# light to dark; 16..47: each shade one and two thirds of the way to black (the edge of the boundary
# line); then each named colour as three entries, a third, two thirds and all of the way from white
# (the edges of text on a white ground).
LEVELS = 16
_NAMED = {"black": (0, 0, 0), "white": (255, 255, 255), "blue": (25, 60, 150), "red": (165, 25, 20),
          "grey": (120, 120, 120), "green": (30, 140, 60), "orange": (225, 110, 10), "light": (215, 215, 215)}
_NAMES = list(_NAMED)


def ink(name: str, level: int = 3) -> int:
    """The palette index of a named colour over white: level 3 is the colour itself, 1 and 2 blends."""
    return 2 * LEVELS + LEVELS + 3 * _NAMES.index(name) + level - 1


BLACK, WHITE, BLUE, RED, GREY, GREEN, ORANGE, LIGHT = (ink(n) for n in _NAMES)


def _palette() -> list[int]:
    half = LEVELS // 2
    blue, red, white = np.array([49, 99, 190]), np.array([200, 55, 45]), np.array([255, 255, 255])
    shades = [blue + (white - blue) * (0.35 + 0.6 * i / (half - 1)) for i in range(half)]  # dark->light
    shades += [red + (white - red) * (0.35 + 0.6 * i / (half - 1)) for i in reversed(range(half))]
    edges = [shade * (1 - k / 3) for k in (1, 2) for shade in shades]  # toward black
    named = [white + (np.array(c) - white) * k / 3 for c in _NAMED.values() for k in (1, 2, 3)]
    flat = [int(round(c)) for rgb in [*shades, *edges, *named] for c in rgb]
    return flat + [0] * (768 - len(flat))


PALETTE = _palette()


def _new(size: tuple[int, int], colour: int = WHITE) -> Image.Image:
    image = Image.new("P", size, colour)
    image.putpalette(PALETTE)
    return image


# ---- text ----------------------------------------------------------------------------------------

@functools.cache  # loading a font costs as much as drawing a frame's text
def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def font_sizes(width: int) -> tuple[int, int]:
    """(caption, small) font sizes for a picture `width` px wide: 18 and 16 px at 480 px and more,
    whose capitals are 13 and 11 px tall, the size of MLflow's own text; smaller pictures scale down."""
    return max(9, min(18, width * 18 // 480)), max(8, min(16, width * 16 // 480))


def text_size(text: str, size: int) -> tuple[int, int]:
    left, top, right, bottom = font(size).getbbox(text)
    return right, bottom


def write(image: Image.Image, xy: tuple[float, float], text: str, size: int, colour: str = "black",
          anchor: str = "la") -> None:
    """Text on a white ground, its edges smoothed with the colour's blends over white. `anchor` as
    Pillow's: "la" left-ascender, "ra" right, "ma" middle, "lm" left-middle..."""
    left, top, right, bottom = font(size).getbbox(text, anchor=anchor)
    x, y = round(xy[0]) + left, round(xy[1]) + top
    if right <= left or bottom <= top:
        return
    mask = Image.new("L", (right - left, bottom - top), 0)
    ImageDraw.Draw(mask).text((-left, -top), text, fill=255, font=font(size), anchor=anchor)
    box = (x, y, x + mask.width, y + mask.height)
    level = (np.asarray(mask, dtype=np.uint16) * 3 + 127) // 255  # how much of each pixel is ink, in thirds
    region = np.array(image.crop(box))
    region[level > 0] = ink(colour, 1) - 1 + level[level > 0]
    image.paste(Image.fromarray(region.astype(np.uint8), "P"), box[:2])


# ---- a run's boundary ----------------------------------------------------------------------------

def frame_size(resolution: int, plane: Plane = MOONS) -> tuple[int, int]:
    """(width, height) of a boundary image of `plane`, `resolution` pixels wide, square pixels."""
    x0, x1, y0, y1 = plane
    return resolution, round(resolution * (y1 - y0) / (x1 - x0))


def grid_size(resolution: int, plane: Plane = MOONS) -> tuple[int, int]:
    """(width, height) of the grid the network is scored on: a third of the picture's each way."""
    w, h = frame_size(resolution, plane)
    return max(2, round(w / EVAL_STEP)), max(2, round(h / EVAL_STEP))


@functools.cache  # every run's Boundary, and a batched sweep's every picture, share it
def grid(resolution: int, plane: Plane = MOONS) -> np.ndarray:
    """Where the network is scored for a picture `resolution` px wide: the centres of a grid's
    cells in data coordinates, row-major from the top, shape (gw * gh, 2).

    A ReLU network is piecewise linear in its input, so its scores interpolated between points
    3 px apart fall on the true ones except within a pixel or two of a kink: the zero level is
    drawn where the network puts it, and scoring a ninth of the pixels keeps a frame cheap.
    """
    gw, gh = grid_size(resolution, plane)
    x0, x1, y0, y1 = plane
    xs = x0 + (np.arange(gw) + 0.5) * (x1 - x0) / gw
    ys = y1 - (np.arange(gh) + 0.5) * (y1 - y0) / gh
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)


def scores_image(scores: np.ndarray, resolution: int, plane: Plane = MOONS) -> np.ndarray:
    """The scores on `grid(resolution, plane)` interpolated bilinearly to every pixel, shape (h, w).
    Pillow maps cell centres to pixel centres, as `grid` places them."""
    gw, gh = grid_size(resolution, plane)
    coarse = Image.fromarray(np.ascontiguousarray(scores, dtype=np.float32).reshape(gh, gw), "F")
    return np.asarray(coarse.resize(frame_size(resolution, plane), Image.Resampling.BILINEAR))


def _shade(s: np.ndarray) -> np.ndarray:
    """Scores to the background's palette entries: blue below 0, red above, saturated at |f| = 2."""
    return ((np.clip(s, -SCORE_CLIP, SCORE_CLIP - 1e-6) + SCORE_CLIP) * (LEVELS / (2 * SCORE_CLIP))).astype(np.uint8)


def _to_pixels(points: np.ndarray, w: int, h: int, plane: Plane) -> tuple[np.ndarray, np.ndarray]:
    x0, x1, y0, y1 = plane
    col = np.floor((points[:, 0] - x0) / (x1 - x0) * w).astype(int)
    row = np.floor((y1 - points[:, 1]) / (y1 - y0) * h).astype(int)
    return row, col


_DOT = [(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1)]  # 3 x 3 px: 1000 of them stay apart, and compress
_RING = [(dr, dc) for dr in range(-2, 3) for dc in range(-2, 3) if (dr, dc) not in _DOT]  # a training point's


class Boundary:
    """A run's boundary pictures. What every frame shares, the grid the network is scored on and
    where the test points fall, is computed once: a frame then costs little besides the network.

    The background is shaded by the raw score f(x), its zero level drawn as a smooth black line
    2 px wide, the test points coloured by their true class, a caption in the corner. A finite
    training set's points (`train`) are drawn over them ringed in black, as Playground rings them:
    where the boundary bends around one of them, the network has learnt that point.
    """

    def __init__(self, points: np.ndarray, labels: np.ndarray, resolution: int, plane: Plane = MOONS,
                 train: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        self.resolution, self.plane = resolution, plane
        self.size = frame_size(resolution, plane)
        self.grid = grid(resolution, plane)
        w, h = self.size

        def dots(points: np.ndarray, shape: list[tuple[int, int]]) -> np.ndarray:
            row, col = _to_pixels(points, w, h, plane)
            return np.concatenate([np.clip(row + dr, 0, h - 1) * w + np.clip(col + dc, 0, w - 1) for dr, dc in shape])

        self._dots = dots(points, _DOT)
        self._dot_colours = np.tile(np.where(labels > 0, RED, BLUE).astype(np.uint8), len(_DOT))
        if train is not None:  # drawn last, on top: a ring, then the class's colour inside it
            self._dots = np.concatenate([self._dots, dots(train[0], _RING), dots(train[0], _DOT)])
            self._dot_colours = np.concatenate([self._dot_colours, np.full(len(train[0]) * len(_RING), BLACK, np.uint8),
                                                np.tile(np.where(train[1] > 0, RED, BLUE).astype(np.uint8), len(_DOT))])

    def draw(self, scores: np.ndarray, caption: str = "") -> Image.Image:
        """The picture for the network's `scores` on `self.grid`."""
        w, h = self.size
        s = scores_image(scores, self.resolution, self.plane)
        shade = _shade(s)
        # The line: how far each pixel is from the zero level, in pixels (|f| over its slope), turned
        # into how much of the pixel a line 2 px wide covers, in thirds. The slope is the coarse
        # grid's, spread over its cells: that is what the interpolation between its points has.
        gw, gh = grid_size(self.resolution, self.plane)
        dy, dx = np.gradient(np.asarray(scores, dtype=np.float32).reshape(gh, gw))
        slope = Image.fromarray(np.hypot(dx * gw / w, dy * gh / h).astype(np.float32), "F")
        slope = np.asarray(slope.resize(self.size, Image.Resampling.BILINEAR))
        cover = np.rint(np.clip(1.5 - np.abs(s) / np.maximum(slope, 1e-9), 0.0, 1.0) * 3).astype(np.uint8)
        img = np.where(cover == 3, BLACK, np.where(cover > 0, shade + LEVELS * cover, shade)).astype(np.uint8)
        img.ravel()[self._dots] = self._dot_colours
        image = Image.fromarray(img, "P")
        image.putpalette(PALETTE)
        if caption:
            size = font_sizes(w)[0]
            tw, th = text_size(caption, size)
            pad = max(3, size // 3)
            ImageDraw.Draw(image).rectangle((0, 0, tw + 3 * pad, th + 2 * pad), fill=WHITE)
            write(image, (pad + pad // 2, pad), caption, size)
        return image


def features(names: Sequence[str], values: np.ndarray, weights: Sequence[float], signed: bool, resolution: int,
             plane: Plane = MOONS) -> Image.Image:
    """TensorFlow Playground's column of inputs: each feature over the plane (`values` [F, n] on
    `grid(resolution, plane)`), shaded blue where it is negative and red where positive, each by
    its own largest size, with its name and the weight the network gives it beneath: its weight
    into the score (`signed`, a network without hidden layers), else the sum of its weights' sizes
    into the first layer (Playground draws them as the links' widths), so that a feature the
    network learnt to do without reads near 0."""
    w, h = frame_size(resolution, plane)
    size = 14
    gap, line = 12, size + 6
    canvas = _new((len(names) * (w + gap) - gap, h + 2 * line + 4))
    for i, (name, value, weight) in enumerate(zip(names, values, weights, strict=True)):
        scaled = value / max(float(np.abs(value).max()), 1e-12) * SCORE_CLIP
        tile = Image.fromarray(_shade(scores_image(scaled, resolution, plane)), "P")
        tile.putpalette(PALETTE)
        x = i * (w + gap)
        canvas.paste(tile, (x, 0))
        write(canvas, (x + w / 2, h + 4), name, size, anchor="ma")
        write(canvas, (x + w / 2, h + 4 + line), f"weight {weight:+.2f}" if signed else f"sum |w| {weight:.2f}",
              size, "grey", anchor="ma")
    return canvas


# ---- a run's animation ---------------------------------------------------------------------------

def nice_ticks(top: float, count: int = 4) -> list[float]:
    """Round tick values from 0 to `top`: 0, 50, 100, 150 for 150 epochs."""
    if top <= 0:
        return [0.0]
    raw = top / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    return [i * step for i in range(int(top / step + 1e-9) + 1)]


def _label(value: float) -> str:
    return f"{value:g}"


class _Panel(NamedTuple):
    """The curves' panel under a run's boundary: its geometry and what every frame shares."""

    image: Image.Image  # the axes, their ticks and labels
    x0: int
    x1: int
    y0: int
    y1: int
    small: int  # font size

    def x(self, epoch: float, num_epochs: int) -> float:
        return self.x0 + (self.x1 - self.x0) * epoch / max(num_epochs, 1)

    def y(self, fraction: float) -> float:  # 1.0 sits 4 px under the frame, never on it
        return self.y1 - (self.y1 - self.y0 - 4) * min(max(fraction, 0.0), 1.0)


@functools.lru_cache(maxsize=8)  # one per run: drawing the axes' text costs more than the curves
def _panel(width: int, num_epochs: int) -> _Panel:
    caption, small = font_sizes(width)
    height = max(60, round(width * 0.36) + small)
    margin = text_size("0.00", small)[0] + small // 2
    panel = _Panel(_new((width, height)), margin, width - margin, small, height - 2 * small - 12, small)
    image, x, y = panel.image, panel.x, panel.y
    draw = ImageDraw.Draw(image)
    draw.rectangle((panel.x0, panel.y0, panel.x1, panel.y1), outline=LIGHT)
    for epoch in nice_ticks(num_epochs):  # ticks and "epoch" below the axes
        draw.line((x(epoch, num_epochs), panel.y1, x(epoch, num_epochs), panel.y1 + 3), fill=GREY)
        write(image, (x(epoch, num_epochs), panel.y1 + 4), _label(epoch), small, "grey", anchor="ma")
    write(image, (panel.x1, panel.y1 + 4 + small), "epoch", small, "grey", anchor="ra")
    for value in (0.0, 0.5, 1.0):
        write(image, (panel.x0 - 4, y(value)), _label(value), small, "green", anchor="rm")
    write(image, (panel.x1 + 4, y(0.0)), "0", small, "orange", anchor="lm")
    return panel


def animation_frame(top: Image.Image, acc: Sequence[float], loss: Sequence[float], num_epochs: int) -> Image.Image:
    """The seed post's figure: the boundary above, test accuracy and loss per epoch below, drawn up
    to the current epoch on axes that span the whole run. Accuracy is read on the left axis (0 to
    1), loss on the right (0 to its highest so far)."""
    w, h = top.size
    panel = _panel(w, num_epochs)
    frame = _new((w, h + panel.image.height))
    frame.paste(top, (0, 0))
    frame.paste(panel.image, (0, h))
    draw = ImageDraw.Draw(frame)
    small, x1, y0, y1 = panel.small, panel.x1, panel.y0 + h, panel.y1 + h

    def x(epoch: float) -> float:
        return panel.x(epoch, num_epochs)

    def y(fraction: float) -> float:
        return panel.y(fraction) + h

    loss_top = max(max(loss, default=0.0), 1e-9)
    write(frame, (x1 + 4, y(1.0)), f"{loss_top:.2g}", small, "orange", anchor="lm")
    if len(acc) > 1:
        draw.line([(x(i), y(v / loss_top)) for i, v in enumerate(loss)], fill=ORANGE, width=2)
        draw.line([(x(i), y(v)) for i, v in enumerate(acc)], fill=GREEN, width=2)
    # the legend sits right of centre, where the curves are not once training settles:
    # accuracy near the top, loss near the bottom
    labels = [(f"test acc {acc[-1]:.3f}", "green"), (f"test loss {loss[-1]:.3f}", "orange")] if acc else []
    for i, (text, colour) in enumerate(labels):
        write(frame, (x1 - 6, (y0 + y1) / 2 + (i - 1) * (small + 4)), text, small, colour, anchor="ra")
    return frame


MAX_FRAMES = 100  # an animation of 480 x 470 frames: ~20 KB each in a GIF


def animation_steps(num_epochs: int, every: int) -> set[int]:
    """The epochs the animation shows: those pictured (every `every`, the first and the last),
    thinned evenly to at most MAX_FRAMES, the last always."""
    steps = sorted({*range(0, num_epochs + 1, every), num_epochs})
    return {*steps[::math.ceil(len(steps) / MAX_FRAMES)], num_epochs}


def webp(image: Image.Image) -> bytes:
    """A picture as lossless WebP: smaller and quicker to write than a PNG of the same frame."""
    buffer = io.BytesIO()
    image.save(buffer, format="WEBP", lossless=True, quality=0, method=0)
    return buffer.getvalue()


class Animation:
    """A GIF encoded a frame at a time as the run goes (Pillow's getheader/getdata), each frame
    only where it differs from the one before: at the end of the run only the last frame is left
    to encode, and only two frames are kept in memory. The last frame is held, so that the final
    boundary can be read."""

    def __init__(self, frame_ms: int = 80, hold_ms: int = 2000) -> None:
        self.frame_ms, self.hold_ms = frame_ms, hold_ms
        self.chunks: list[bytes] = []
        self._pending: Image.Image | None = None  # the newest frame: its duration is not known yet
        self._previous: np.ndarray | None = None

    def add(self, frame: Image.Image) -> None:
        if self._pending is not None:
            self._encode(self._pending, self.frame_ms)
        self._pending = frame

    def _encode(self, frame: Image.Image, duration_ms: int) -> None:
        pixels = np.asarray(frame)
        if self._previous is None or self._previous.shape != pixels.shape:
            header, _ = GifImagePlugin.getheader(frame, info={"loop": 0, "duration": duration_ms})
            self.chunks += header
            box: tuple[int, int, int, int] | None = (0, 0, *frame.size)
        else:
            changed = np.argwhere(pixels != self._previous)
            box = None if len(changed) == 0 else (int(changed[:, 1].min()), int(changed[:, 0].min()),
                                                  int(changed[:, 1].max()) + 1, int(changed[:, 0].max()) + 1)
        box = box or (0, 0, 1, 1)  # an unchanged frame still takes its time
        self.chunks += GifImagePlugin.getdata(frame.crop(box), offset=box[:2], duration=duration_ms, disposal=1)
        self._previous = pixels

    def save(self, path: str) -> None:
        if self._pending is not None:
            self._encode(self._pending, self.hold_ms)
            self._pending = None
        with open(path, "wb") as f:
            f.writelines(self.chunks)
            f.write(b";")  # the GIF trailer


# ---- a sweep's pictures (RGB: they are drawn once per sweep) --------------------------------------

SERIES = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
          (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
TEXT, MUTED, FRAME, FAILED, BEST = (30, 30, 30), (110, 110, 110), (200, 200, 200), (190, 20, 20), (30, 140, 60)


def wrap(text: str, size: int, width: int) -> list[str]:
    """`text` broken at spaces into lines at most `width` px wide (a word longer stays whole)."""
    lines: list[str] = []
    for word in text.split():
        if lines and text_size(f"{lines[-1]} {word}", size)[0] <= width:
            lines[-1] += f" {word}"
        else:
            lines.append(word)
    return lines or [""]


def small_multiples(cells: Sequence[tuple[dict[str, str], str, Image.Image | None, bool]],
                    tile_width: int = 240) -> Image.Image:
    """Every job's final boundary in one picture, laid out by the swept values.

    `cells` are (the job's swept values {key: value}, its result text, its final boundary or None,
    whether it is the best job). With one swept key the tiles are titled by its value and wrap into
    rows; with more, the first key's values label the rows and the others' the columns. Labels wrap
    to their tile's width, so none is cut off; each tile's result covers the picture's own
    caption (too small at half size); the best job is framed in green.
    """
    size = 16
    keys = list(dict.fromkeys(k for values, *_ in cells for k in values))
    default = frame_size(tile_width)[1]  # the moons' plane, for a sweep of failed jobs only

    def height_of(image: Image.Image) -> int:  # each dataset's picture keeps its plane's aspect
        return round(tile_width * image.height / image.width)

    tile = (tile_width, max((height_of(image) for _, _, image, _ in cells if image is not None), default=default))
    line, gap = size + 5, 12
    heights = [height_of(image) if image is not None else None for _, _, image, _ in cells]

    rows, columns, place, headers, row_names, titles = _grid([values for values, *_ in cells], keys, size, tile[0])
    header_h = max(len(h) for h in headers) * line + (gap if any(headers) else 0)
    left = max((text_size(name, size)[0] for lines in row_names for name in lines), default=0)
    left = left + gap if left else 0
    title_h = max(len(t) for t in titles.values()) * line if titles else 0
    # each row as tall as its tallest picture: a sweep over datasets mixes the moons' plane and square ones
    row_h = [max((h for i, h in enumerate(heights) if place[i][0] == r and h), default=tile[1])
             for r in range(len(rows))]
    row_top = [gap + header_h + sum(title_h + h + gap for h in row_h[:r]) for r in range(len(rows))]
    cell_w = tile[0] + gap
    canvas = Image.new("RGB", (gap + left + len(columns) * cell_w, row_top[-1] + title_h + row_h[-1] + gap), "white")
    draw = ImageDraw.Draw(canvas)
    for c, lines in enumerate(headers):
        for k, text in enumerate(lines):
            draw.text((gap + left + c * cell_w, gap + k * line), text, fill=TEXT, font=font(size))
    for r, lines in enumerate(row_names):
        top = row_top[r] + title_h + (row_h[r] - len(lines) * line) // 2
        for k, text in enumerate(lines):
            draw.text((gap, top + k * line), text, fill=TEXT, font=font(size))
    for i, (_, result, image, best) in enumerate(cells):
        r, c = place[i]
        x, y, tile_h = gap + left + c * cell_w, row_top[r], heights[i] or row_h[r]
        for k, text in enumerate(titles[i]):
            draw.text((x, y + k * line), text, fill=TEXT, font=font(size))
        if image is not None:
            image = image.convert("RGB").resize((tile_width, height_of(image)), Image.Resampling.LANCZOS)
        _tile(canvas, (x, y + title_h, tile[0], tile_h), image, result, best, size)
    return canvas


def _grid(cells: list[dict[str, str]], keys: list[str], size: int, tile_width: int) -> tuple[
        list[str], list[str], dict[int, tuple[int, int]], list[list[str]], list[list[str]], dict[int, list[str]]]:
    """small_multiples' layout of jobs by their swept values: its rows and columns, each job's
    (row, column), the columns' headers, the rows' names and each tile's own title, as wrapped lines."""
    def text_of(values: dict[str, str], names: Sequence[str]) -> str:
        return " ".join(f"{k}={values.get(k, '-')}" for k in names)

    if len(keys) > 1:  # the first key's values label the rows, the others' the columns
        rows = list(dict.fromkeys(values.get(keys[0], "-") for values in cells))
        columns = list(dict.fromkeys(text_of(values, keys[1:]) for values in cells))
        place = {i: (rows.index(values.get(keys[0], "-")), columns.index(text_of(values, keys[1:])))
                 for i, values in enumerate(cells)}
        headers = [wrap(c, size, tile_width) for c in columns]
        row_names = [wrap(f"{keys[0]}={r}", size, 2 * tile_width // 3) for r in rows]
        return rows, columns, place, headers, row_names, {i: [] for i in place}
    columns = [""] * min(len(cells), max(1, math.ceil(math.sqrt(len(cells) * 1.5))))  # titled tiles, wrapped
    rows = [""] * math.ceil(len(cells) / len(columns))
    place = {i: divmod(i, len(columns)) for i in range(len(cells))}
    titles = {i: wrap(text_of(values, keys) or "the job", size, tile_width) for i, values in enumerate(cells)}
    return rows, columns, place, [[] for _ in columns], [[] for _ in rows], titles


def _tile(canvas: Image.Image, box: tuple[int, int, int, int], image: Image.Image | None, result: str, best: bool,
          size: int) -> None:
    """One job's tile at (x, y, width, height): its picture (grey without one), its result where the
    picture's own caption was (too small to read at half size), a green frame if it is the best."""
    x, y, width, height = box
    draw = ImageDraw.Draw(canvas)
    if image is not None:
        canvas.paste(image, (x, y))
    else:
        draw.rectangle((x, y, x + width - 1, y + height - 1), fill=(235, 235, 235))
    label, line = result + ("  best" if best else ""), size + 5
    draw.rectangle((x, y, x + max(text_size(label, size)[0] + 12, width // 2), y + line + 6), fill="white")
    colour = FAILED if not result.startswith("acc") else BEST if best else TEXT
    draw.text((x + 6, y + 4), label, fill=colour, font=font(size))
    if best:
        draw.rectangle((x - 3, y - 3, x + width + 2, y + height + 2), outline=BEST, width=3)


def _mean_curves(groups: Sequence[tuple[str, Sequence[Sequence[float]]]]) -> tuple[
        list[np.ndarray], list[np.ndarray | None], list[str]]:
    """Each configuration's mean curve over its seeds (as long as its shortest), its standard
    deviation (None with one seed), and its legend: name, final mean, spread, number of seeds."""
    means, spreads, legend = [], [], []
    for label, runs in groups:
        steps = min(len(r) for r in runs) if runs else 0
        stacked = np.array([list(r[:steps]) for r in runs], dtype=float).reshape(len(runs), steps)
        mean = stacked.mean(0) if len(runs) else np.zeros(0)
        spread = stacked.std(0, ddof=1) if len(runs) > 1 else None
        final = f"  {mean[-1]:.3f}" if len(mean) else ""
        legend.append(f"{label}{final}" + (f" ± {spread[-1]:.3f} (n={len(runs)})" if spread is not None else ""))
        means.append(mean)
        spreads.append(spread)
    return means, spreads, legend


def curves(groups: Sequence[tuple[str, Sequence[Sequence[float]]]], width: int = 900,
           height: int = 420, train: Sequence[Sequence[Sequence[float]]] | None = None) -> Image.Image:
    """The sweep's test-accuracy curves, a configuration at a time: its mean over its seeds as a
    line, one standard deviation either side as a band (with two seeds or more), over an epoch
    axis; the accuracy axis zoomed to where the curves differ (from their lowest mean after the
    first tenth of training to 1), one colour and dash per configuration, and a legend beside the
    plot naming each with its final mean, spread and number of seeds. With `train` (each
    configuration's runs' train/acc, a finite training set's), its mean is dotted in the same colour:
    where the two part, the network learns its training points rather than the task."""
    size = 16
    means, spreads, legend = _mean_curves(groups)
    trained = _mean_curves([("", runs) for runs in train])[0] if train else []
    if train:
        legend = [f"{text}, train {t[-1]:.3f}" if len(t) else text for text, t in zip(legend, trained, strict=True)]
    longest = max((len(m) for m in means), default=1)
    settled = [x for m in [*means, *trained] for x in m[max(1, len(m) // 10):]] or [0.5]
    lo = max(0.0, math.floor(min(settled) * 20) / 20 - 0.05)  # a multiple of 0.05 below the lowest
    legend_w = max((text_size(t, size)[0] for t in legend), default=0) + 40
    height = max(height, 60 + (size + 6) * len(groups))
    image = Image.new("RGB", (width + legend_w, height), "white")
    draw = ImageDraw.Draw(image)
    x0, x1, y0, y1 = 64, width - 16, 36, height - 58
    banded = any(s is not None for s in spreads)
    title = ("test accuracy (training set's dotted)" if train else "test accuracy") + " per epoch" \
        + (": mean over seeds, band ± 1 standard deviation" if banded else "")
    draw.text((x0, 8), title, fill=TEXT, font=font(size))
    draw.rectangle((x0, y0, x1, y1), outline=FRAME)

    def x(epoch: float) -> float:
        return x0 + (x1 - x0) * epoch / max(longest - 1, 1)

    def y(value: float) -> float:  # 1.0 sits 8 px under the frame, never on it
        return y1 - (y1 - y0 - 8) * (min(max(value, lo), 1.0) - lo) / (1.0 - lo)

    _curve_axes(draw, x, y, longest, lo, (x0, x1, y1), size)
    _bands(image, means, spreads, x, y)
    draw = ImageDraw.Draw(image)
    _lines_and_legend(draw, means, legend, x, y, (width, y0), size)
    for i, mean in enumerate(trained):  # dotted: 3 px drawn every 7, along the curve
        xs, ys = [x(k) for k in range(len(mean))], [y(v) for v in mean]
        for px in np.arange(xs[0], xs[-1] - 3, 7.0) if len(mean) > 1 else []:
            draw.line([(p, float(np.interp(p, xs, ys))) for p in (px, px + 3)], fill=SERIES[i % len(SERIES)], width=2)
    return image


def _curve_axes(draw: ImageDraw.ImageDraw, x: Scale, y: Scale, longest: int, lo: float,
                frame: tuple[int, int, int], size: int) -> None:
    """The epoch axis's ticks and name under the frame, the accuracy axis's grid lines and labels."""
    x0, x1, y1 = frame
    for epoch in nice_ticks(longest - 1, 6):
        draw.line((x(epoch), y1, x(epoch), y1 + 4), fill=MUTED)
        draw.text((x(epoch), y1 + 6), _label(epoch), fill=MUTED, font=font(size), anchor="ma")
    draw.text(((x0 + x1) / 2, y1 + 30), "epoch", fill=MUTED, font=font(size), anchor="ma")
    step = 0.05 if 1 - lo <= 0.3 else 0.1
    for value in (1.0 - k * step for k in range(int((1 - lo) / step + 1e-9) + 1)):
        draw.line((x0, y(value), x1, y(value)), fill=(240, 240, 240))
        draw.text((x0 - 6, y(value)), f"{value:.2f}", fill=MUTED, font=font(size), anchor="rm")


def _bands(image: Image.Image, means: list[np.ndarray], spreads: list[np.ndarray | None], x: Scale,
           y: Scale) -> None:
    """Each configuration's band of one standard deviation, translucent, so that overlapping bands
    stay readable."""
    bands = Image.new("RGBA", image.size, (255, 255, 255, 0))
    band_draw = ImageDraw.Draw(bands)
    for i, (mean, spread) in enumerate(zip(means, spreads, strict=True)):
        if spread is not None and len(mean) > 1:
            upper = [(x(k), y(v + s)) for k, (v, s) in enumerate(zip(mean, spread, strict=True))]
            lower = [(x(k), y(v - s)) for k, (v, s) in enumerate(zip(mean, spread, strict=True))]
            band_draw.polygon(upper + lower[::-1], fill=(*SERIES[i % len(SERIES)], 56))
    image.paste(Image.alpha_composite(image.convert("RGBA"), bands).convert("RGB"))


def _lines_and_legend(draw: ImageDraw.ImageDraw, means: list[np.ndarray], legend: list[str], x: Scale, y: Scale,
                      at: tuple[int, int], size: int) -> None:
    """Each configuration's mean curve, in its colour (dashed once the colours run out), and its
    legend line beside the plot, from `at` (the legend's left edge and top)."""
    left, top = at
    for i, mean in enumerate(means):
        colour, dashed = SERIES[i % len(SERIES)], (i // len(SERIES)) % 2 == 1
        points = [(x(k), y(v)) for k, v in enumerate(mean)]
        segments = [points[k:k + 4] for k in range(0, len(points) - 1, 6)] if dashed else [points]
        for segment in segments:
            if len(segment) > 1:
                draw.line(segment, fill=colour, width=2)
        ly = top + i * (size + 6) + (size + 6) // 2
        sample = [(left, ly), (left + 12, ly)] if dashed else [(left, ly), (left + 28, ly)]
        draw.line(sample, fill=colour, width=3)
        if dashed:
            draw.line([(left + 18, ly), (left + 28, ly)], fill=colour, width=3)
        draw.text((left + 36, ly), legend[i], fill=TEXT, font=font(size), anchor="lm")


def effects(rows: Sequence[dict[str, Any]], panel: tuple[int, int] = (340, 300)) -> Image.Image:
    """A sweep's effects (summary's rows of stats.Effect, with a `task` where the sweep varies it):
    a small panel per swept key, a row of them per task, the key's values along x, each value's
    mean final val_acc (a dot) and test_acc (a square) with their 95% intervals as bars, and the
    share of the variation the key explains in its title. One accuracy axis for every panel, so
    that a tall effect looks tall beside a flat one."""
    size, gap = 16, 14
    line = size + 6
    tasks = list(dict.fromkeys(r.get("task", "") for r in rows))
    keys = list(dict.fromkeys(r["key"] for r in rows))
    ends = [v for r in rows for m in ("val", "test") for v in (r[f"{m}_acc"], r[f"{m}_lo"], r[f"{m}_hi"])
            if v is not None]
    lo, hi = min(ends), max(ends)
    step = next(s for s in (0.005, 0.01, 0.02, 0.05, 0.1, 0.2) if (hi - lo) / s <= 6)
    lo, hi = math.floor(lo / step - 0.3) * step, min(1.0, math.ceil(hi / step + 0.3) * step)  # no accuracy above 1
    width, height = panel
    task_w = max((text_size(t, size)[0] for t in tasks), default=0) + gap if tasks != [""] else 0
    note = ("mean over the other keys' values and the seeds, bars its 95% interval; in each title the key's "
            "share of the variation across configurations (val_acc), the rest being the keys' interactions and the "
            "seeds' noise")
    total_w = max(gap + task_w + len(keys) * (width + gap), 720)
    notes = wrap(note, size, total_w - 2 * gap - task_w)
    legend_h = (1 + len(notes)) * line + gap
    canvas = Image.new("RGB", (total_w, legend_h + len(tasks) * (height + gap) + gap), "white")
    draw = ImageDraw.Draw(canvas)
    x = gap + task_w
    for m, label in enumerate(("val_acc (chooses)", "test_acc (reports)")):
        (draw.ellipse if m == 0 else draw.rectangle)((x, 10, x + 9, 19), fill=SERIES[m])
        draw.text((x + 16, 14), label, fill=TEXT, font=font(size), anchor="lm")
        x += text_size(label, size)[0] + 40
    for k, text in enumerate(notes):
        draw.text((gap + task_w, 14 + (k + 1) * line), text, fill=MUTED, font=font(size), anchor="lm")
    for t, task in enumerate(tasks):
        top = legend_h + t * (height + gap)
        if task:
            draw.text((gap, top + height // 2), task, fill=TEXT, font=font(size), anchor="lm")
        for k, key in enumerate(keys):
            mine = [r for r in rows if r.get("task", "") == task and r["key"] == key]
            if mine:
                _effect_panel(draw, (gap + task_w + k * (width + gap), top, width, height), mine, lo, hi, step, size)
    return canvas


def _effect_panel(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], rows: Sequence[dict[str, Any]],
                  lo: float, hi: float, step: float, size: int) -> None:
    x0, top, width, height = box
    share = rows[0]["share"]
    title = f"{rows[0]['key']}: {share:.0%} of the variation"
    if rows[0]["share_lo"] is not None:
        title += f" [{rows[0]['share_lo']:.0%}, {rows[0]['share_hi']:.0%}]"
    draw.text((x0, top), title, fill=TEXT, font=font(size))
    left, right, y0, y1 = x0 + 52, x0 + width - 8, top + 30, top + height - 48
    draw.rectangle((left, y0, right, y1), outline=FRAME)

    def y(value: float) -> float:  # the top value 8 px under the frame, never on it
        return y1 - (y1 - y0 - 8) * (value - lo) / (hi - lo)

    for k in range(int(round((hi - lo) / step)) + 1):
        value = lo + k * step
        draw.line((left, y(value), right, y(value)), fill=(240, 240, 240))
        draw.text((left - 6, y(value)), f"{value:.3f}".rstrip("0") if step < 0.01 else f"{value:.2f}", fill=MUTED,
                  font=font(size - 2), anchor="rm")
    slot = (right - left) / len(rows)
    for i, row in enumerate(rows):
        centre = left + slot * (i + 0.5)
        for m, metric in enumerate(("val", "test")):
            cx, colour = centre + (m - 0.5) * min(18, slot / 4), SERIES[m]
            if row[f"{metric}_lo"] is not None:
                a, b = y(row[f"{metric}_lo"]), y(row[f"{metric}_hi"])
                draw.line((cx, a, cx, b), fill=colour, width=2)
                draw.line((cx - 4, a, cx + 4, a), fill=colour, width=2)
                draw.line((cx - 4, b, cx + 4, b), fill=colour, width=2)
            cy = y(row[f"{metric}_acc"])
            shape = draw.ellipse if metric == "val" else draw.rectangle
            shape((cx - 4, cy - 4, cx + 4, cy + 4), fill=colour)
        for j, text in enumerate(wrap(row["value"], size - 2, int(slot) - 4)[:2]):
            draw.text((centre, y1 + 6 + j * (size + 2)), text, fill=TEXT, font=font(size - 2), anchor="ma")

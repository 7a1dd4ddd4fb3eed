"""report.html: a sweep you can watch, one self-contained page on its parent run.

Every configuration's boundary side by side (its median seed by final val/acc), laid out by the
swept keys as boundaries.png is, with one slider and a play button that move every panel to the
same epoch; under the grid the sweep's answer: its curves, effects, verdict and table. MLflow's
artifact view shows an HTML artifact in a sandboxed frame, from a `blob:` address: the page
carries everything it shows (the frames as data: URIs, the script inline) and fetches nothing.

The frames are the runs' own pictures (lossless WebP, as logged at `plot.every_n_epochs`), not
drawn again; a sweep whose pictures would pass MAX_BYTES gets every k-th of them (the first and
the last always), and says so on the page.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from mlflow import MlflowClient
from PIL import Image

from moonprop.mlflow_internals import IMAGES, image_step
from moonprop.tracking import local_artifact_dir

MAX_BYTES = 4_500_000  # the frames' share of a page that opens at once in MLflow's artifact view (~5 MB in all)


class Panel(NamedTuple):
    """One configuration's place on the page: the run that shows it, and where."""

    title: str  # its values, as boundaries.png titles a tile (a search's trial: `#3 ...`)
    run_id: str
    run_name: str
    seed: int  # the run's: the median of the configuration's finished seeds by final val/acc
    seeds: int
    values: dict[str, str]  # its values of the swept keys but the seed, by short name: the grid's place


def representative(jobs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The configuration's job of the median final val/acc (the lower middle of an even number):
    a typical seed, not its luckiest."""
    ranked = sorted(jobs, key=lambda r: (r["val_acc"], r["seed"]))
    return ranked[(len(ranked) - 1) // 2]


def frames(client: MlflowClient, run_id: str) -> dict[int, tuple[str, int]]:
    """A run's boundary pictures by step: (artifact name, bytes)."""
    found = {}
    for info in client.list_artifacts(run_id, IMAGES):
        step = image_step(info.path.rpartition("/")[2])
        if step is not None:
            found[step] = (info.path, info.file_size or 0)
    return found


def chosen_steps(sizes: list[dict[int, int]], budget: int = MAX_BYTES) -> tuple[list[int], int]:
    """The steps the slider stops at: every logged one if their pictures fit `budget` (bytes, as
    base64 on the page), else every k-th (the first and the last always); and k."""
    steps = sorted({s for panel in sizes for s in panel})
    total = sum(size for panel in sizes for size in panel.values()) * 4 / 3
    every = max(1, -(-int(total) // budget))
    kept = steps[::every]
    if steps and kept[-1] != steps[-1]:
        kept.append(steps[-1])
    return kept, every


def _read(client: MlflowClient, run_id: str, names: list[str], tmp: Path) -> list[bytes]:
    """The artifacts `names` of a run: from its folder where the store is on this machine, else
    downloaded."""
    folder = local_artifact_dir(client.get_run(run_id).info.artifact_uri)
    if folder is not None and folder.is_dir():
        return [(folder / name).read_bytes() for name in names]
    return [Path(client.download_artifacts(run_id, name, str(tmp))).read_bytes() for name in names]


def _data_uri(data: bytes, kind: str) -> str:
    return f"data:image/{kind};base64,{base64.b64encode(data).decode()}"


def _png(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, "PNG", optimize=True)
    return _data_uri(buf.getvalue(), "png")


def grid(panels: Sequence[Panel], keys: list[str]) -> tuple[list[str], list[str], list[tuple[int, int]]]:
    """Rows, columns and each panel's (row, column): the first key's values the rows, the others'
    the columns, as boundaries.png; one key or none (a search): panels in order, wrapped."""
    if len(keys) > 1:
        rows = list(dict.fromkeys(f"{keys[0]}={p.values.get(keys[0], '-')}" for p in panels))
        columns = list(dict.fromkeys(" ".join(f"{k}={p.values.get(k, '-')}" for k in keys[1:]) for p in panels))
        return rows, columns, [(rows.index(f"{keys[0]}={p.values.get(keys[0], '-')}"),
                                columns.index(" ".join(f"{k}={p.values.get(k, '-')}" for k in keys[1:])))
                               for p in panels]
    width = min(len(panels), max(1, math.ceil(math.sqrt(len(panels) * 1.5))))  # boundaries.png's wrap
    return [""] * -(-len(panels) // width), [""] * width, [divmod(i, width) for i in range(len(panels))]


def build(client: MlflowClient, title: str, panels: Sequence[Panel], keys: list[str], pictures: dict[str, Image.Image],
          verdicts: list[str], table: str) -> str:
    """The page: the panels' frames on one slider, then the sweep's pictures (curves, effects),
    its verdict and its summary table (markdown, shown as it is)."""
    with tempfile.TemporaryDirectory() as tmp:
        logged = [frames(client, p.run_id) for p in panels]
        steps, every = chosen_steps([{s: size for s, (_, size) in f.items()} for f in logged])
        data = []
        for panel, found in zip(panels, logged, strict=True):
            mine = [s for s in steps if s in found]
            read = dict(zip(mine, _read(client, panel.run_id, [found[s][0] for s in mine], Path(tmp)), strict=True))
            history = {m.step: m.value for m in client.get_metric_history(panel.run_id, "val/acc")}
            # at each stop of the slider: the newest picture not after it, and val/acc at it
            shown, at = [], None
            for s in steps:
                at = s if s in read else at
                shown.append(mine.index(at) if at is not None else -1)
            data.append({"frames": [_data_uri(read[s], "webp") for s in mine], "shown": shown,
                         "acc": [history.get(s) for s in steps]})
    rows, columns, places = grid(panels, keys)
    cells = {place: i for i, place in enumerate(places)}
    body = []
    for r, row in enumerate(rows):
        body.append(f"<tr><th class=row>{html.escape(row)}</th>" if any(rows) else "<tr>")
        for c in range(len(columns)):
            i = cells.get((r, c))
            if i is None:
                body.append("<td></td>")
                continue
            p = panels[i]
            said = html.escape(p.title)
            name = "" if any(columns) else f"<div class=name title='{said}'>{said}</div>"
            median = f", the median of {p.seeds}" if p.seeds > 1 else ""
            body.append(f"<td>{name}<img id=f{i} alt='{html.escape(p.run_name)}' title='{html.escape(p.run_name)}'>"
                        f"<div class=acc id=a{i}></div><div class=seed>seed {p.seed}{median}</div></td>")
        body.append("</tr>")
    head = ("<tr>" + ("<th></th>" if any(rows) else "")
            + "".join(f"<th>{html.escape(c)}</th>" for c in columns) + "</tr>") if any(columns) else ""
    sparse = (f" The sweep logged more pictures than a page holds: every {every}th is shown (the first and the last "
              f"always).") if every > 1 else ""
    figures = "".join(f"<h2>{html.escape(name)}</h2><img class=figure src='{_png(image)}' alt='{html.escape(name)}'>"
                      for name, image in pictures.items())
    verdict = "".join(f"<p class=verdict>{html.escape(v)}</p>" for v in verdicts)
    return PAGE.format(title=html.escape(title), sparse=sparse, last=len(steps) - 1, head=head, body="".join(body),
                       figures=figures, verdict=verdict, table=html.escape(table),
                       data=json.dumps({"steps": steps, "panels": data}), count=len(panels), across=len(columns),
                       aside=170 if any(rows) else 40)


PAGE = """<!doctype html>
<html lang=en><head><meta charset=utf-8><title>{title}</title>
<style>
body {{ font: 14px system-ui, sans-serif; color: #1e1e1e; margin: 16px; }}
h1 {{ font-size: 20px; margin: 0 0 4px; }} h2 {{ font-size: 16px; margin: 24px 0 8px; }}
.note {{ color: #6e6e6e; margin: 0 0 12px; }}
.controls {{ position: sticky; top: 0; background: #fff; padding: 8px 0; display: flex; gap: 12px;
             align-items: center; z-index: 1; border-bottom: 1px solid #ddd; }}
.controls input {{ width: 480px; }} #epoch {{ font-variant-numeric: tabular-nums; min-width: 90px; }}
button {{ font-size: 14px; padding: 4px 14px; }}
table.grid {{ border-collapse: separate; border-spacing: 10px 8px; }}
table.grid th {{ font-weight: 500; text-align: left; }} th.row {{ white-space: nowrap; padding-right: 6px; }}
.panels {{ overflow-x: auto; }}
table.grid td {{ vertical-align: top; }}
/* as many panels across as the frame holds, 150 to 240 px each; narrower frames scroll */
table.grid img {{ width: min(240px, max(150px, calc((100vw - {aside}px) / {across} - 14px))); display: block;
                  border: 1px solid #ddd; }}
.name {{ max-width: 240px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }}
.acc {{ font-variant-numeric: tabular-nums; }} .seed {{ color: #6e6e6e; font-size: 12px; }}
img.figure {{ max-width: 100%; }} .verdict {{ max-width: 1000px; }}
pre {{ background: #f6f6f6; padding: 8px; overflow-x: auto; font-size: 12px; }}
</style></head><body>
<h1>{title}</h1>
<p class=note>{count} configurations, each shown by its median seed by final val/acc; one slider moves every
panel to the same epoch.{sparse}</p>
<div class=controls><button id=play>play</button>
<input id=slider type=range min=0 max={last} value={last} step=1 aria-label=epoch><span id=epoch></span></div>
<div class=panels><table class=grid>{head}{body}</table></div>
{figures}
<h2>verdict</h2>{verdict}
<h2>summary</h2><pre>{table}</pre>
<script>
const DATA = {data};
const slider = document.getElementById("slider"), label = document.getElementById("epoch");
function show(k) {{
  label.textContent = "epoch " + DATA.steps[k];
  DATA.panels.forEach((p, i) => {{
    const img = document.getElementById("f" + i), acc = document.getElementById("a" + i);
    if (p.shown[k] >= 0) img.src = p.frames[p.shown[k]];
    acc.textContent = p.acc[k] == null ? "" : "val/acc " + p.acc[k].toFixed(3);
  }});
}}
slider.addEventListener("input", () => show(+slider.value));
let timer = null;
document.getElementById("play").addEventListener("click", (e) => {{
  if (timer) {{ clearInterval(timer); timer = null; e.target.textContent = "play"; return; }}
  if (+slider.value >= DATA.steps.length - 1) slider.value = 0;
  e.target.textContent = "pause";
  timer = setInterval(() => {{
    const k = +slider.value + 1;
    if (k >= DATA.steps.length) {{ clearInterval(timer); timer = null; e.target.textContent = "play"; return; }}
    slider.value = k; show(k);
  }}, 150);
}});
show(+slider.value);
</script></body></html>
"""

"""Regenerate the README's pictures, recorded by moonprop itself and shown as MLflow shows them:

    docs/training.gif         the default experiment's animation
    docs/sweep-boundaries.png `experiment=schedules`: every job's final boundary, schedule x seed
    docs/sweep-curves.png     the same sweep's accuracy curves, each schedule's mean over its seeds
    docs/ui-card.png          the boundary card of a run's Model metrics tab, in Chromium
    docs/ui-groups.png        the same sweep in MLflow's runs view, grouped by moonprop.config
    docs/features-boundaries.png `experiment=features`: dataset x features, no hidden layer
    docs/features-inputs.png  a run's features.png: the circles on all seven features
    docs/overfit-curves.png   `experiment=overfit`: test and training accuracy by training set size
    docs/ui-overfit.png       the over-fitting run (20 points) in its Model metrics tab, in Chromium

    python scripts/make_docs_images.py     # needs Debian's chromium, as the UI tests do

Each picture carries the digest of the code that draws it (`sources_digest`, in a PNG text chunk
or the GIF's comment); tests/test_docs.py fails when the code has changed since.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin

from mlflow_server import serving  # beside this script

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SOURCES = ["src/moonprop/plot.py", "src/moonprop/callbacks.py", "src/moonprop/summary.py", "src/moonprop/report.py",
           "src/moonprop/conf/experiment/schedules.yaml", "src/moonprop/conf/experiment/features.yaml",
           "src/moonprop/conf/experiment/overfit.yaml", "src/moonprop/conf/experiment/penalty.yaml",
           "src/moonprop/stats.py", "scripts/make_docs_images.py"]
ALL_FEATURES = "model.features=[x1,x2,sq_x1,sq_x2,x1x2,sin_x1,sin_x2]"
PICTURES = ("training.gif", "sweep-boundaries.png", "sweep-curves.png", "ui-card.png", "ui-groups.png",
            "features-boundaries.png", "features-inputs.png", "overfit-curves.png", "ui-overfit.png",
            "sweep-effects.png", "ui-report.png")
KEY = "moonprop-sources"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# as root in a container, without the machine's closed network getting in the way
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def sources_digest() -> str:
    """What the pictures depend on: the drawing code, the sweep shown and this script."""
    digest = hashlib.sha256()
    for path in SOURCES:
        digest.update((ROOT / path).read_bytes())
    return digest.hexdigest()[:16]


def recorded_digest(path: Path) -> str | None:
    image = Image.open(path)
    value = image.info.get(KEY) if path.suffix == ".png" else image.info.get("comment", b"").decode()
    return value or None


def save_png(image: Image.Image, path: Path) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text(KEY, sources_digest())
    image.save(path, pnginfo=info, optimize=True)


def save_gif(source: Path, path: Path) -> None:
    gif = Image.open(source)
    frames, durations = [], []
    for i in range(gif.n_frames):
        gif.seek(i)
        frames.append(gif.copy())
        durations.append(gif.info["duration"])
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=durations, loop=0, disposal=1,
                   comment=sources_digest())


def artifact(store: Path, run_name_like: str, name: str, into: Path) -> tuple[Path, str, str]:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{store}")
    experiment = client.get_experiment_by_name("moonprop").experiment_id
    (run,) = client.search_runs([experiment], f"attributes.run_name LIKE '{run_name_like}'")
    return Path(client.download_artifacts(run.info.run_id, name, str(into))), experiment, run.info.run_id


# The image card's picture. MLflow 3.17 points the <img> at the artifact's address, 3.18 at a blob:
# copy it fetched from that address; in both it is antd's Image, the only one on a run's page.
CARD_IMAGE = "img.rc-image-img"


@contextlib.contextmanager
def browser_page() -> Iterator[Any]:
    """A page of a fresh headless Chromium (Debian's; no remembered choices) at 1400 x 1000."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": 1400, "height": 1000})
        finally:
            browser.close()


@contextlib.contextmanager
def ui_page(store: Path) -> Iterator[tuple[Any, str]]:
    """MLflow's UI on `store` and a fresh browser's page (MLflow's assistant panel open, as in a
    fresh browser): the page and the UI's address."""
    with serving("ui", "--backend-store-uri", f"sqlite:///{store}") as url, browser_page() as page:
        yield page, url


def shot(element: Any, path: Path) -> None:
    file = Path(tempfile.mkstemp(suffix=".png")[1])
    element.screenshot(path=str(file))
    save_png(Image.open(file), path)


def model_metrics(page: Any, url: str, experiment: str, run_id: str) -> Any:
    """The run's Model metrics tab, its boundary card's run parameters switched off (see the
    README): the card's title."""
    page.goto(f"{url}/#/experiments/{experiment}/runs/{run_id}/model-metrics?workflowType=machine_learning",
              wait_until="load")
    page.locator(CARD_IMAGE).first.wait_for(timeout=30_000)
    title = page.get_by_text("test/boundary", exact=True).first
    menus = page.locator("[data-testid=experiment-view-compare-runs-card-menu]")
    box = title.bounding_box()
    boxes = [menus.nth(i).bounding_box() for i in range(menus.count())]
    next(menus.nth(i) for i, b in enumerate(boxes) if abs(b["y"] - box["y"]) < 20 and b["x"] > box["x"]).click()
    page.get_by_role("menuitem", name="Configure").click()
    page.get_by_text("Show run parameters").click()
    page.get_by_text("Save changes").click()
    page.wait_for_function(f"() => document.querySelector(\"{CARD_IMAGE}\")?.naturalWidth > 0")
    return title


def card_screenshot(store: Path, experiment: str, run_id: str, path: Path) -> None:
    """The run's boundary card at its default size."""
    with ui_page(store) as (page, url):
        title = model_metrics(page, url, experiment, run_id)
        page.wait_for_timeout(1000)
        shot(title.locator("xpath=ancestor::div[.//input][1]"), path)


def overfit_screenshot(store: Path, experiment: str, run_id: str, path: Path) -> None:
    """The test and train sections of the run's Model metrics tab, its boundary card moved to the
    last epoch with the keyboard, as a user moves it."""
    with ui_page(store) as (page, url):
        model_metrics(page, url, experiment, run_id)
        slider = page.locator("[role=slider]").first
        slider.focus()
        while slider.get_attribute("aria-valuenow") != slider.get_attribute("aria-valuemax"):
            page.keyboard.press("ArrowRight")
        page.wait_for_function(f"() => document.querySelector(\"{CARD_IMAGE}\")?.naturalWidth > 0")
        page.wait_for_timeout(1000)
        tabs = page.get_by_role("tab", name="Overview").bounding_box()
        search = page.get_by_placeholder("Search metric charts").bounding_box()
        # the sections' rows of charts (test, then train), by where their x axes' titles sit
        rows = sorted({round(b["y"] + b["height"]) for b in (label.bounding_box() for label in
                                                               page.get_by_text("Step", exact=True).all()) if b})
        top = search["y"] + search["height"] + 10
        bottom = rows[1] + 16
        file = Path(tempfile.mkstemp(suffix=".png")[1])
        page.screenshot(path=str(file), full_page=True,
                        clip={"x": tabs["x"] - 12, "y": top, "width": 820, "height": bottom - top})
        save_png(Image.open(file), path)


def open_report(page: Any, url: str, experiment: str, parent_id: str) -> Any:
    """A sweep's parent run's Artifacts tab, report.html opened in MLflow's viewer (a sandboxed
    frame): the frame, its panels' pictures loaded."""
    page.goto(f"{url}/#/experiments/{experiment}/runs/{parent_id}/artifacts?workflowType=machine_learning",
              wait_until="load")
    page.get_by_text("report.html", exact=True).first.click()
    frame = page.frame_locator("iframe").first
    frame.locator("table.grid img").first.wait_for(timeout=30_000)
    frame.locator("body").evaluate("() => Promise.all([...document.images].map(i => i.decode()))")
    return frame


def report_screenshot(store: Path, experiment: str, parent_id: str, path: Path, epoch_index: int) -> None:
    """The page as MLflow shows it at 1400 x 1000, its slider moved to an early epoch, as a user
    moves it, while the boundaries still differ."""
    with ui_page(store) as (page, url):
        frame = open_report(page, url, experiment, parent_id)
        page.get_by_role("button", name="Close").last.click()  # MLflow's assistant: the page's width back
        frame.locator("#slider").fill(str(epoch_index))
        page.wait_for_timeout(500)
        file = Path(tempfile.mkstemp(suffix=".png")[1])
        page.screenshot(path=str(file))
        save_png(Image.open(file).quantize(256, dither=Image.Dither.NONE), path)


def group_by_config(page: Any, url: str, experiment: str) -> Any:
    """The runs view grouped by the tag moonprop.config, in its chart view, test/acc's chart
    expanded: MLflow's own mean curve and band per configuration. The expanded dialog."""
    page.goto(f"{url}/#/experiments/{experiment}/runs?workflowType=machine_learning", wait_until="load")
    page.get_by_text("Group by", exact=True).first.click()
    page.get_by_text("moonprop.config", exact=True).first.click()
    page.keyboard.press("Escape")
    page.locator("label:has(input[name=runs-view-mode][value=CHART])").click()
    page.get_by_placeholder("Search metric charts").fill("test/acc")
    title = page.get_by_text("test/acc", exact=True).last
    title.wait_for(timeout=30_000)
    box = title.bounding_box()
    expand = [b for b in page.locator("button").all() if (bb := b.bounding_box()) and abs(bb["y"] - box["y"]) < 20
              and bb["x"] > box["x"]]
    expand[0].click()
    dialog = page.locator("[role=dialog] .du-bois-light-modal-content").first
    dialog.locator("path.js-fill").first.wait_for(state="attached", timeout=30_000)
    page.wait_for_timeout(1000)
    return dialog


def groups_screenshot(store: Path, experiment: str, path: Path) -> None:
    with ui_page(store) as (page, url):
        shot(group_by_config(page, url, experiment), path)


def moonprop(folder: Path, *overrides: str) -> Path:
    """`moonprop OVERRIDES` in `folder` (created): its store."""
    folder.mkdir(exist_ok=True)
    subprocess.run([sys.executable, "-m", "moonprop", *overrides], cwd=folder, check=True)
    return folder / "outputs" / "mlflow.db"


def sweep_picture(store: Path, name: str, into: Path, path: Path) -> None:
    png, *_ = artifact(store, "sweep %", name, into)
    save_png(Image.open(png).quantize(128, dither=Image.Dither.NONE), path)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        moonprop(work / "seed", "tracking.run_name=docs")
        store = moonprop(work / "seed", "experiment=schedules")
        gif, experiment, run_id = artifact(store, "docs", "training.gif", work)
        save_gif(gif, DOCS / "training.gif")
        for name in ("boundaries", "curves"):
            sweep_picture(store, f"{name}.png", work, DOCS / f"sweep-{name}.png")
        card_screenshot(store, experiment, run_id, DOCS / "ui-card.png")
        groups_screenshot(store, experiment, DOCS / "ui-groups.png")
        _, _, parent_id = artifact(store, "sweep %", "report.html", work)
        report_screenshot(store, experiment, parent_id, DOCS / "ui-report.png", 2)

        store = moonprop(work / "features", "experiment=features")
        sweep_picture(store, "boundaries.png", work, DOCS / "features-boundaries.png")
        store = moonprop(work / "features", "data=circles", "model.hidden=[]", ALL_FEATURES, "tracking.run_name=all")
        png, *_ = artifact(store, "all", "features.png", work)
        save_png(Image.open(png), DOCS / "features-inputs.png")

        store = moonprop(work / "overfit", "experiment=overfit")
        sweep_picture(store, "curves.png", work, DOCS / "overfit-curves.png")
        store = moonprop(work / "overfit", "experiment=overfit", "hydra.mode=RUN", "data.train_size=20",
                         "tracking.run_name=overfit")
        _, experiment, run_id = artifact(store, "overfit", "boundary.png", work)
        overfit_screenshot(store, experiment, run_id, DOCS / "ui-overfit.png")

        store = moonprop(work / "penalty", "experiment=penalty", "seed=range(0,10)", "hydra/launcher=batched")
        sweep_picture(store, "effects.png", work, DOCS / "sweep-effects.png")
    for name in PICTURES:
        print(f"written: docs/{name} ({(DOCS / name).stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()

"""Regenerate the README's pictures, recorded by moonprop itself and shown as MLflow shows them:

    docs/training.gif         the default experiment's animation
    docs/sweep-boundaries.png `experiment=schedules`: every job's final boundary, schedule x seed
    docs/sweep-curves.png     the same sweep's accuracy curves
    docs/ui-card.png          the boundary card of a run's Model metrics tab, in Chromium

    python scripts/make_docs_images.py     # needs Debian's chromium, as the UI tests do

Each picture carries the digest of the code that draws it (`sources_digest`, in a PNG text chunk
or the GIF's comment); tests/test_docs.py fails when the code has changed since.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from PIL import Image, PngImagePlugin

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SOURCES = ["src/moonprop/plot.py", "src/moonprop/callbacks.py", "src/moonprop/summary.py",
           "src/moonprop/conf/experiment/schedules.yaml", "scripts/make_docs_images.py"]
KEY = "moonprop-sources"


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


def card_screenshot(store: Path, experiment: str, run_id: str, path: Path) -> None:
    """The run's boundary card at its default size (1400 x 1000, MLflow's assistant panel open, as
    in a fresh browser) once the card's run parameters are switched off (see the README)."""
    from playwright.sync_api import sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mlflow = Path(sys.executable).with_name("mlflow")
    server = subprocess.Popen([str(mlflow), "ui", "--backend-store-uri", f"sqlite:///{store}", "--host", "127.0.0.1",
                               "--port", str(port), "--workers", "1"], start_new_session=True,
                              env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
                "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/#/experiments/{experiment}/runs/{run_id}/model-metrics"
                      "?workflowType=machine_learning", wait_until="load")
            image = "img[src*='test~boundary']"
            page.locator(image).first.wait_for(timeout=30_000)
            title = page.get_by_text("test/boundary", exact=True).first
            menus = page.locator("[data-testid=experiment-view-compare-runs-card-menu]")
            box = title.bounding_box()
            boxes = [menus.nth(i).bounding_box() for i in range(menus.count())]
            next(menus.nth(i) for i, b in enumerate(boxes) if abs(b["y"] - box["y"]) < 20 and b["x"] > box["x"]).click()
            page.get_by_role("menuitem", name="Configure").click()
            page.get_by_text("Show run parameters").click()
            page.get_by_text("Save changes").click()
            page.wait_for_function(f"() => document.querySelector(\"{image}\").naturalWidth > 0")
            page.wait_for_timeout(1000)
            card = title.locator("xpath=ancestor::div[.//input][1]")
            shot = Path(tempfile.mkstemp(suffix=".png")[1])
            card.screenshot(path=str(shot))
            save_png(Image.open(shot), path)
            browser.close()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        run = [sys.executable, "-m", "moonprop"]
        subprocess.run([*run, "tracking.run_name=docs"], cwd=work, check=True)
        subprocess.run([*run, "experiment=schedules"], cwd=work, check=True)
        store = work / "outputs" / "mlflow.db"
        gif, experiment, run_id = artifact(store, "docs", "training.gif", work)
        save_gif(gif, DOCS / "training.gif")
        for name in ("boundaries", "curves"):
            png, *_ = artifact(store, "sweep %", f"{name}.png", work)
            save_png(Image.open(png).quantize(128, dither=Image.Dither.NONE), DOCS / f"sweep-{name}.png")
        card_screenshot(store, experiment, run_id, DOCS / "ui-card.png")
    for name in ("training.gif", "sweep-boundaries.png", "sweep-curves.png", "ui-card.png"):
        print(f"written: docs/{name} ({(DOCS / name).stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()

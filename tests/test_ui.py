"""The MLflow UI, checked in a real headless Chromium against a real run: what a user looks for.

Needs Debian's chromium (scripts/system-deps installs it) and the `playwright` package, which drives
that browser (no browser download). Screenshots land in outputs/ui-test/ for a look after a failure.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .conftest import REPO, default_store, mlflow_command, moonprop, require

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = REPO / "outputs" / "ui-test"
# as root in a container, without the machine's closed network getting in the way
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    """A finished 5-epoch run, and `mlflow ui` on 127.0.0.1 serving its store."""
    require(Path(CHROMIUM).exists(), "no chromium: install Debian's chromium (scripts/system-deps)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        require(False, "the playwright package is not installed (pip install -e '.[test]')")
    work = tmp_path_factory.mktemp("ui")
    moonprop("data.num_batches=5", "tracking.run_name=ui-check", cwd=work)
    client = default_store(work)
    experiment = client.get_experiment_by_name("moonprop").experiment_id
    (run,) = client.search_runs([experiment])
    with mlflow_command("ui", "--backend-store-uri", f"sqlite:///{work}/outputs/mlflow.db", log=work / "ui.log") as url:
        SHOTS.mkdir(parents=True, exist_ok=True)
        yield url, experiment, run.info.run_id


@pytest.fixture
def page(ui):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": 1400, "height": 1000})
        finally:
            browser.close()


def open_page(page, url: str, shot: str, wait_for: str) -> None:
    """Go, wait for `load` and then for the element (the UI keeps polling: never network idle)."""
    page.goto(url, wait_until="load")
    try:
        page.locator(wait_for).first.wait_for(timeout=30_000)
    finally:
        page.screenshot(path=str(SHOTS / shot), full_page=True)


def test_run_is_in_the_experiment_list(ui, page):
    url, experiment, _ = ui
    open_page(page, f"{url}/#/experiments/{experiment}/runs?workflowType=machine_learning", "runs.png",
              "text=ui-check")
    assert page.locator("text=ui-check").first.is_visible()


def test_accuracy_chart_and_boundary_images_with_step_control(ui, page):
    url, experiment, run_id = ui
    open_page(page, f"{url}/#/experiments/{experiment}/runs/{run_id}/model-metrics?workflowType=machine_learning",
              "model-metrics.png", "img[src*='test~boundary']")
    body = page.inner_text("body")
    assert "test/boundary" in body and "acc" in body and "Step" in body  # the test/acc chart beside the images
    image = page.locator("img[src*='test~boundary']").first
    assert "step%2B0%2B" in image.get_attribute("src")
    assert image.evaluate("img => img.complete && img.naturalWidth") == 160  # the picture itself loaded
    slider = page.locator("[role=slider]").first
    assert slider.get_attribute("aria-valuemax") == "5"
    slider.focus()
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    page.wait_for_function("() => document.querySelector(\"img[src*='test~boundary']\").src.includes('step%2B2%2B')")
    page.screenshot(path=str(SHOTS / "model-metrics-step-2.png"), full_page=True)


def test_animation_is_among_the_artifacts(ui, page):
    url, experiment, run_id = ui
    open_page(page, f"{url}/#/experiments/{experiment}/runs/{run_id}/artifacts?workflowType=machine_learning",
              "artifacts.png", "text=training.gif")
    page.locator("text=training.gif").first.click()
    # the viewer shows the GIF (loaded as a blob): the 160 x 150 animation frame, boundary above curves
    page.wait_for_function("() => [...document.images].some(i => i.complete && i.naturalWidth === 160"
                           " && i.naturalHeight === 150)", timeout=30_000)
    page.screenshot(path=str(SHOTS / "artifact-gif.png"))

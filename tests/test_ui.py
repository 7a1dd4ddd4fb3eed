"""The MLflow UI, checked in a real headless Chromium against real runs: what a person looks for.

Needs Debian's chromium (scripts/system-deps installs it) and the `playwright` package, which drives
that browser (no browser download). Each test starts a fresh browser (no remembered choices), at
1400 x 1000. Screenshots land in outputs/ui-test/ for a look after a failure.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import make_docs_images
import ui as ui_script  # scripts/ui.py, what `make ui` runs

from .conftest import REPO, default_store, mlflow_command, moonprop, require

SHOTS = REPO / "outputs" / "ui-test"
IMAGE = make_docs_images.CARD_IMAGE


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    """A finished 5-epoch run and a 4-job sweep, and `mlflow ui` on 127.0.0.1 serving their store."""
    require(Path(make_docs_images.CHROMIUM).exists(), "no chromium: install Debian's chromium (scripts/system-deps)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        require(False, "the playwright package is not installed (pip install -e '.[test]')")
    work = tmp_path_factory.mktemp("ui")
    moonprop("data.num_batches=5", "tracking.run_name=ui-check", cwd=work)
    moonprop("-m", "data.num_batches=3", "model.hidden=[8],[16,16]", "schedule=linear,cosine", cwd=work)
    moonprop("-m", "data.num_batches=6", "seed=0,1,2", "loss=hinge,logistic", cwd=work)  # two configurations
    client = default_store(work)
    experiment = client.get_experiment_by_name("moonprop").experiment_id
    (run,) = client.search_runs([experiment], "attributes.run_name = 'ui-check'")
    store = work / "outputs" / "mlflow.db"
    with mlflow_command("ui", "--backend-store-uri", f"sqlite:///{store}", log=work / "ui.log") as url:
        SHOTS.mkdir(parents=True, exist_ok=True)
        yield url, experiment, run, store


@pytest.fixture
def page(ui):
    with make_docs_images.browser_page() as page:  # the browser the README's pictures are taken in
        yield page


def open_page(page, url: str, shot: str, wait_for: str) -> None:
    """Go, wait for `load` and then for the element (the UI keeps polling: never network idle)."""
    page.goto(url, wait_until="load")
    try:
        page.locator(wait_for).first.wait_for(timeout=30_000)
    finally:
        page.screenshot(path=str(SHOTS / shot), full_page=True)


def card_fetches(page, step: int):
    """Waits until the card has fetched the picture of `step` (both releases fetch it by its name)."""
    return page.expect_response(lambda r: f"test~boundary%2Bstep%2B{step}%2B" in r.url and r.ok, timeout=30_000)


def on_screen(page, selector: str) -> dict:
    """Where the first element of `selector` is, its natural width, and whether the point at its
    centre is the element itself: nothing covers it and no scroll area hides it."""
    return page.locator(selector).first.evaluate(
        "e => { const r = e.getBoundingClientRect(), x = r.left + r.width / 2, y = r.top + r.height / 2;"
        " return {visible: document.elementFromPoint(x, y) === e, natural: e.naturalWidth, width: r.width,"
        " bottom: r.bottom}; }")


def test_the_address_make_ui_prints_opens_on_the_runs_named_by_what_they_vary(ui, page):
    url, experiment, _, store = ui
    assert ui_script.experiments(store) == [(int(experiment), "moonprop")]
    open_page(page, f"{url}/#/experiments/{experiment}/runs?workflowType=machine_learning", "runs.png",
              "text=ui-check")
    assert page.get_by_text("sweep hidden x2, schedule x2", exact=True).first.is_visible()
    # the expander beside the parent's name shows the sweep's jobs
    name_cell = page.get_by_role("gridcell").filter(has_text="sweep hidden x2, schedule x2").first
    name_cell.get_by_role("button").first.click()
    page.get_by_text("hidden=[8] schedule=linear", exact=True).first.wait_for(timeout=30_000)
    page.screenshot(path=str(SHOTS / "runs-sweep.png"))
    for name in ("ui-check", "hidden=[8] schedule=linear", "hidden=[8] schedule=cosine",
                 "hidden=[16,16] schedule=linear", "hidden=[16,16] schedule=cosine"):
        assert page.get_by_text(name, exact=True).first.is_visible()


def test_from_the_root_one_click_on_model_training_leads_to_the_runs(ui, page):
    """MLflow 3.17 lands a fresh browser on its GenAI view (the README shows why nothing recorded
    can change that); its "Model training" switch, once clicked, is remembered by the browser."""
    url, experiment, _, _ = ui
    open_page(page, f"{url}/", "root.png", "text=moonprop")
    page.get_by_text("Model training", exact=True).first.click()
    page.get_by_text("moonprop", exact=True).first.click()
    page.get_by_text("ui-check", exact=True).first.wait_for(timeout=30_000)
    page.screenshot(path=str(SHOTS / "root-then-runs.png"))
    assert "workflowType=genai" not in page.url and "/overview" not in page.url


def test_the_boundary_card_with_its_step_slider(ui, page):
    url, experiment, run, _ = ui
    with card_fetches(page, 0):
        open_page(page, f"{url}/#/experiments/{experiment}/runs/{run.info.run_id}/model-metrics"
                        "?workflowType=machine_learning", "model-metrics.png", IMAGE)
    page.get_by_text("test/boundary", exact=True).first.wait_for(timeout=30_000)  # 3.18 may redraw the page
    body = page.inner_text("body")
    assert "test/boundary" in body and "acc" in body and "Step" in body  # the test/acc chart beside the images
    image = page.locator(IMAGE).first
    image.wait_for(state="visible")
    page.wait_for_function(f"() => document.querySelector(\"{IMAGE}\")?.naturalWidth > 0")
    assert on_screen(page, IMAGE)["natural"] == 480  # the whole picture, shown at most at this size
    # MLflow's card lists every param of the run above the picture (README: why)
    params = ", ".join(f"{k}={v}" for k, v in run.data.params.items())
    assert any(set(params.split(", ")) == set(text.split(", "))
               for text in page.locator("div").all_inner_texts() if text.startswith("data."))
    slider = page.locator("[role=slider]").first
    assert slider.get_attribute("aria-valuemax") == "5"
    first = image.get_attribute("src")
    slider.focus()
    with card_fetches(page, 2):
        page.keyboard.press("ArrowRight")
        page.keyboard.press("ArrowRight")
    assert slider.get_attribute("aria-valuenow") == "2"
    # 3.18 takes the <img> away while it fetches the next picture
    page.wait_for_function(f"() => (i => i && i.src !== {first!r} && i.naturalWidth === 480)"
                           f"(document.querySelector(\"{IMAGE}\"))")
    page.screenshot(path=str(SHOTS / "model-metrics-step-2.png"), full_page=True)


def test_the_picture_is_on_screen_with_the_cards_run_params_off_and_large_when_expanded(ui, page):
    """What the README tells: the card's "Configure" > "Show run parameters" off puts the picture
    where the params were; the expand button shows it at its natural size."""
    url, experiment, run, _ = ui
    open_page(page, f"{url}/#/experiments/{experiment}/runs/{run.info.run_id}/model-metrics"
                    "?workflowType=machine_learning", "card.png", IMAGE)
    card = page.locator("[data-testid=experiment-view-compare-runs-card-menu]")
    title = page.get_by_text("test/boundary", exact=True).first.bounding_box()
    boxes = [card.nth(i).bounding_box() for i in range(card.count())]
    menu = next(card.nth(i) for i, box in enumerate(boxes) if abs(box["y"] - title["y"]) < 20 and box["x"] > title["x"])
    menu.click()
    page.get_by_role("menuitem", name="Configure").click()
    page.get_by_text("Show run parameters").click()
    page.get_by_text("Save changes").click()
    page.wait_for_function(f"() => document.querySelector(\"{IMAGE}\")?.naturalWidth > 0")
    page.wait_for_timeout(500)
    page.screenshot(path=str(SHOTS / "card-without-params.png"))
    assert on_screen(page, IMAGE)["visible"]

    expand = page.locator("button").filter(has=page.locator("svg")).all()
    expand = [b for b in expand if (box := b.bounding_box()) and abs(box["y"] - title["y"]) < 20
              and title["x"] < box["x"] < menu.bounding_box()["x"]]
    expand[0].click()
    page.get_by_role("dialog").locator(IMAGE).first.wait_for(timeout=30_000)
    page.wait_for_timeout(500)
    page.screenshot(path=str(SHOTS / "card-expanded.png"))
    shown = on_screen(page, f"[role=dialog] {IMAGE}")
    assert shown["visible"] and shown["width"] == 480


def test_group_by_configuration_draws_each_ones_mean_curve_with_a_band(ui, page):
    """MLflow's own "Group by" on the tag moonprop.config: each configuration a group of its seeds,
    its test/acc chart a line per configuration and a band over the seeds (README's picture)."""
    url, experiment, _, _ = ui
    dialog = make_docs_images.group_by_config(page, url, experiment)
    page.screenshot(path=str(SHOTS / "grouped.png"))
    legend = dialog.inner_text()
    for config in ("loss=hinge", "loss=logistic"):
        assert f"{config} (test/acc)" in legend
    assert dialog.locator("path.js-fill").count() >= 2  # a band for each configuration


def test_animation_is_among_the_artifacts(ui, page):
    url, experiment, run, _ = ui
    open_page(page, f"{url}/#/experiments/{experiment}/runs/{run.info.run_id}/artifacts"
                    "?workflowType=machine_learning", "artifacts.png", "text=training.gif")
    page.locator("text=training.gif").first.click()
    # the viewer shows the GIF (loaded as a blob): 480 px wide, the boundary above the curves
    page.wait_for_function("() => [...document.images].some(i => i.complete && i.naturalWidth === 480"
                           " && i.naturalHeight > 450)", timeout=30_000)
    page.screenshot(path=str(SHOTS / "artifact-gif.png"))


def test_the_sweeps_report_moves_every_panel_with_one_slider(ui, page):
    """report.html from the parent's Artifacts tab, in MLflow's own viewer: every configuration's
    panel on screen, and the slider moves each one's picture and val/acc to the same epoch."""
    url, experiment, _, store = ui
    client = default_store(store.parent.parent)
    (parent,) = client.search_runs([experiment], "attributes.run_name = 'sweep hidden x2, schedule x2'")
    frame = make_docs_images.open_report(page, url, experiment, parent.info.run_id)
    page.screenshot(path=str(SHOTS / "report.png"))
    panels = frame.locator("table.grid img")
    assert panels.count() == 4 and frame.locator("#epoch").text_content() == "epoch 3"  # opens at the end
    viewport = page.viewport_size
    for i in range(4):
        box = panels.nth(i).bounding_box()
        assert box and box["width"] >= 150 and 0 <= box["x"] and box["x"] + box["width"] <= viewport["width"]
    before = [(panels.nth(i).get_attribute("src"), frame.locator(f"#a{i}").text_content()) for i in range(4)]
    frame.locator("#slider").fill("0")
    assert frame.locator("#epoch").text_content() == "epoch 0"
    after = [(panels.nth(i).get_attribute("src"), frame.locator(f"#a{i}").text_content()) for i in range(4)]
    assert all(b[0] != a[0] for b, a in zip(before, after, strict=True))  # every panel's picture moved
    history = {r.info.run_name: client.get_metric_history(r.info.run_id, "val/acc")
               for r in client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")}
    shown = {f"val/acc {m.value:.3f}" for h in history.values() for m in h if m.step == 0}
    assert {text for _, text in after} <= shown  # each panel's val/acc at epoch 0
    assert frame.get_by_text("verdict", exact=True).count() == 1 and frame.locator("img.figure").count() >= 1

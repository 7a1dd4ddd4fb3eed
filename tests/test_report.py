"""report.html: the sweep one watches. The page's own parts here; in MLflow's UI, tests/test_ui.py."""

from __future__ import annotations

import json
import re

from moonprop import report

from .conftest import default_store, moonprop, sweep_runs


def test_a_big_sweeps_frames_are_thinned_to_fit_the_page_keeping_the_first_and_last():
    sizes = [{step: 8_000 for step in range(151)} for _ in range(24)]  # every epoch's picture, 24 configurations
    steps, every = report.chosen_steps(sizes)
    assert steps[0] == 0 and steps[-1] == 150 and every > 1
    assert len(steps) * 24 * 8_000 * 4 / 3 <= report.MAX_BYTES + 24 * 8_000 * 4 / 3  # the last one added at most
    small = [{step: 8_000 for step in range(0, 151, 10)} | {150: 8_000} for _ in range(24)]
    assert report.chosen_steps(small) == (sorted(small[0]), 1)  # plot.every_n_epochs=10: every picture


def test_a_configuration_is_shown_by_its_median_seed():
    jobs = [{"val_acc": v, "seed": s} for s, v in enumerate([0.91, 0.99, 0.95, 0.93])]
    assert report.representative(jobs)["seed"] == 3  # 0.93: the lower middle of four
    assert report.representative(jobs[:3])["seed"] == 2


def data(page: str) -> dict:
    return json.loads(re.search(r"const DATA = (\{.*?\});\n", page).group(1))


def test_every_sweep_has_its_report_and_moonprop_report_draws_it_again(workdir):
    moonprop("-m", "seed=0,1,2", "model.hidden=[4],[16,16]", "data.num_batches=20", "plot.every_n_epochs=5",
             cwd=workdir)
    client = default_store(workdir)
    parent, children = sweep_runs(client)
    (folder,) = (workdir / "outputs" / "sweeps").iterdir()
    page = (folder / "report.html").read_text()
    assert "report.html" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    shown = data(page)
    assert shown["steps"] == [0, 5, 10, 15, 20] and len(shown["panels"]) == 2
    # it fetches nothing: MLflow's frame is sandboxed, its address a blob:
    assert "http" not in re.sub(r"https?://www\.w3\.org[^\"']*", "", page)
    # each panel's median seed, its val/acc at each stop of the slider
    for panel, hidden in zip(shown["panels"], ("[4]", "[16,16]"), strict=True):
        runs = sorted((c for c in children if c.data.params["model.hidden"] == hidden.replace(",", ", ")),
                      key=lambda c: (c.data.metrics["val/acc"], int(c.data.params["seed"])))
        history = {m.step: m.value for m in client.get_metric_history(runs[1].info.run_id, "val/acc")}
        assert panel["acc"] == [history[s] for s in shown["steps"]] and len(panel["frames"]) == 5
    (folder / "report.html").unlink()
    proc = moonprop("report", str(folder.relative_to(workdir)), cwd=workdir)
    assert (folder / "report.html").is_file() and f"report.html on the parent run {parent.info.run_id}" in proc.stderr
    proc = moonprop("report", parent.info.run_id, cwd=workdir)  # by its parent run, as the UI names it
    assert proc.returncode == 0
    for wrong in (["outputs"], [], ["a", "b"], [str(folder), "seed=1"]):
        proc = moonprop("report", *wrong, cwd=workdir, check=False)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "a sweep's folder" in proc.stderr
    assert "usage: moonprop report" in moonprop("report", "--help", cwd=workdir).stdout


def test_a_searchs_report_shows_its_trials_best_first(workdir):
    moonprop("-m", "hydra/sweeper=search", "hydra.sweeper.n_trials=3", "data.num_batches=10", "plot.every_n_epochs=5",
             "hydra.sweeper.pruner=none", f"hydra.sweeper.storage=sqlite:///{workdir}/optuna.db", cwd=workdir)
    client = default_store(workdir)
    parent, children = sweep_runs(client)
    page = client.download_artifacts(parent.info.run_id, "report.html", str(workdir))
    text = open(page).read()
    by_acc = sorted(children, key=lambda c: -c.data.metrics["val/acc"])
    places = [text.index(f"title='{c.info.run_name}'") for c in by_acc]
    assert places == sorted(places)

"""hydra/launcher=batched: a sweep's jobs trained as one model, each recorded as it would be alone."""

from __future__ import annotations

import io
import shutil
import signal
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from moonprop.batched import BatchedMoonsClassifier, BatchedMoonsData, StackedMLP, stack_key
from moonprop.callbacks import BatchedMlflowCallback, torchscript
from moonprop.config import OPTIMIZERS, ConfigError
from moonprop.model import MLP, loss
from moonprop.module import optimizer as optimizer_of
from moonprop.schedule import learning_rate
from moonprop.train import resumed_batch

from .conftest import check_sweep, default_store, make_config, moonprop, start, sweep_runs, wait_for_step

BATCHED = "hydra/launcher=batched"


def test_stacked_networks_start_and_score_as_each_alone():
    hidden, seeds = [[16, 16], [8, 4], [3, 16]], [0, 5, 7]
    stacked = StackedMLP(hidden, seeds)
    points = torch.randn(3, 100, 2)
    scores = stacked(points)
    for job, (h, seed) in enumerate(zip(hidden, seeds, strict=True)):
        alone = MLP(h, torch.Generator().manual_seed(seed))
        for mine, theirs in zip(stacked.network(job).parameters(), alone.parameters(), strict=True):
            assert torch.equal(mine, theirs)  # the same draws from the job's seed
        torch.testing.assert_close(scores[job], alone(points[job]))
        norm = sum((p * p).sum() for p in alone.parameters())  # the padding adds nothing
        torch.testing.assert_close(sum((p[job] * p[job]).sum() for p in stacked.stacked().values()), norm)


def test_networks_of_one_shape_share_a_trace_each_with_its_own_weights():
    stacked, traced = StackedMLP([[8, 8], [8, 8], [4, 8]], [0, 1, 2]), {}
    points = torch.randn(5, 2)
    for job in range(3):
        network = stacked.network(job)
        loaded = torch.jit.load(io.BytesIO(torchscript(network, traced)))
        torch.testing.assert_close(loaded(points), network(points))
    assert len(traced) == 2


def test_padded_units_stay_zero_and_each_job_steps_as_alone():
    """One SGD step of the batch is each job's own step: its loss, its rate; padding changes nothing."""
    cfgs = [make_config("model.hidden=[16,16]", "seed=0"),
            make_config("model.hidden=[4,8]", "seed=1", "schedule=cosine", "loss.alpha=0.01", "data.noise=0.3")]
    module, data = BatchedMoonsClassifier(cfgs), BatchedMoonsData(cfgs)
    x, y = data.train_batch(0)
    optimizer = module.configure_optimizers()
    module.trainer = None  # not attached: current_epoch is 0
    losses, _ = module.losses(module.net.stacked(), x, y)
    losses.sum().backward()
    optimizer.step()
    for job, cfg in enumerate(cfgs):
        alone = MLP(cfg.model.hidden, torch.Generator().manual_seed(cfg.seed))
        xj, yj = data.jobs[job].train_batch(0)
        value = loss(alone(xj), yj, list(alone.parameters()), cfg.loss.alpha)
        torch.testing.assert_close(losses[job], value)
        value.backward()
        rate = learning_rate(cfg.schedule, 0, cfg.data.num_batches)
        with torch.no_grad():
            for p in alone.parameters():
                p -= rate * p.grad
        for mine, theirs in zip(module.net.network(job).parameters(), alone.parameters(), strict=True):
            torch.testing.assert_close(mine, theirs)
    stacked = module.net.stacked()
    narrow = stacked["0.weight"][1]  # job 1's first layer: 4 of 16 units are its own
    assert narrow.shape == (16, 2) and torch.all(narrow[4:] == 0)
    assert torch.all(stacked["2.weight"][1][8:, :] == 0) and torch.all(stacked["2.weight"][1][:, 4:] == 0)


STEPS = {
    "sgd": ["optimizer.weight_decay=0", "optimizer.weight_decay=0.05"],
    "momentum": ["optimizer.momentum=0.9", "optimizer.momentum=0.5 optimizer.dampening=0.3",
                 "optimizer.momentum=0.8 optimizer.nesterov=true optimizer.weight_decay=0.01"],
    "adam": ["optimizer.betas=[0.9,0.999]", "optimizer.betas=[0.5,0.9] optimizer.amsgrad=true",
             "optimizer.eps=1e-3 optimizer.weight_decay=0.1"],
    "adamw": ["optimizer.weight_decay=0.01", "optimizer.weight_decay=0.3 optimizer.amsgrad=true"],
}


def test_every_optimizer_has_a_stacked_step_tested_against_torchs():
    """An optimizer added to config.py trains alone through torch; a batched sweep needs its step
    written for stacked jobs, and this test's comparison with torch's below."""
    assert set(STEPS) == set(OPTIMIZERS)


@pytest.mark.parametrize("kind, settings", STEPS.items())
def test_each_job_steps_as_its_own_torch_optimizer_would(kind, settings):
    """Jobs of one kind of optimizer, each with its own values, loss, penalty, init, dataset and
    rate, stack; five steps of the batch are each job's five steps under torch's own optimizer."""
    jobs = [["loss=hinge", "schedule=constant", "schedule.lr=0.05"],
            ["loss=logistic", "loss.penalty=l1", "model.init=kaiming", "data=circles", "schedule=constant",
             "schedule.lr=0.02", "model.hidden=[8,4]", "seed=3"],
            ["loss=squared_hinge", "loss.penalty=none", "model.init=xavier", "data=xor", "schedule=constant",
             "schedule.lr=0.1", "seed=5"]]
    cfgs = [make_config(f"optimizer={kind}", *settings[i % len(settings)].split(), *job) for i, job in enumerate(jobs)]
    assert len({stack_key(cfg, i) for i, cfg in enumerate(cfgs)}) == 1
    module, data = BatchedMoonsClassifier(cfgs), BatchedMoonsData(cfgs)
    optimizer = module.configure_optimizers()  # each job at its constant rate
    alone = [MLP(c.model.hidden, torch.Generator().manual_seed(c.seed), init=c.model.init) for c in cfgs]
    steps = [optimizer_of(c.optimizer, net.parameters()) for c, net in zip(cfgs, alone, strict=True)]
    for c, step in zip(cfgs, steps, strict=True):
        step.param_groups[0]["lr"] = c.schedule.lr  # what LambdaLR sets at every step
    for epoch in range(5):
        x, y = data.train_batch(epoch)
        optimizer.zero_grad()
        module.losses(module.net.stacked(), x, y)[0].sum().backward()
        optimizer.step()
        for job, (cfg, net, step) in enumerate(zip(cfgs, alone, steps, strict=True)):
            xj, yj = data.jobs[job].train_batch(epoch)
            step.zero_grad()
            loss(net(xj), yj, list(net.parameters()), cfg.loss.alpha, cfg.loss.name, cfg.loss.penalty).backward()
            step.step()
    for job, net in enumerate(alone):
        for mine, theirs in zip(module.net.network(job).parameters(), net.parameters(), strict=True):
            torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)


def test_what_cannot_be_stacked_forms_separate_batches():
    def key(*overrides: str, job: int = 0) -> tuple:
        return stack_key(make_config(*overrides), job)

    assert key("seed=0") == key("seed=1", "model.hidden=[8,32]", "data.noise=0.2", "loss=logistic", "data=spiral",
                                "model.init=kaiming", "optimizer.weight_decay=0.1", job=1)
    for other in ("model.hidden=[16]", "data.batch_size=20", "data.num_batches=20", "model.activation=tanh",
                  "optimizer=adam", "trainer.precision=64"):
        assert key() != key(other), other
    # alone, as in-process: its own callbacks, or gradients clipped by their norm over the batch
    assert key("callbacks=[early_stopping]", job=0) != key("callbacks=[early_stopping]", job=1)
    assert key("trainer.gradient_clip_val=1", job=0) != key("trainer.gradient_clip_val=1", job=1)
    assert key("trainer.gradient_clip_val=1", "+trainer.gradient_clip_algorithm=value", job=0) == \
        key("trainer.gradient_clip_val=1", "+trainer.gradient_clip_algorithm=value", job=1)


def runs_by_name(client: MlflowClient, sweep_number: int) -> dict[str, object]:
    exp = client.get_experiment_by_name("moonprop").experiment_id
    parents = client.search_runs([exp], "attributes.run_name LIKE 'sweep %'", order_by=["attributes.start_time"])
    parent = parents[sweep_number].info.run_id
    return {r.info.run_name: r for r in client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent}'")}


def artifact_names(client: MlflowClient, run_id: str, path: str = "") -> list[str]:
    names = []
    for item in client.list_artifacts(run_id, path):
        names += artifact_names(client, run_id, item.path) if item.is_dir else [item.path.split("+timestamp")[0]]
    return sorted(names)


@pytest.mark.parametrize("varied, batches", [
    (("seed=0,1", "model.hidden=[16,16],[4,8]", "schedule=linear,cosine", "data.noise=0.1"), "in 1 batched model"),
    # what people vary next: one batch where the stacked model can express it (datasets, losses,
    # inits, an optimizer's values), separate batches where it cannot (activations)
    (("optimizer=momentum", "optimizer.momentum=0.5,0.9", "loss=hinge,logistic", "data=moons,circles",
      "model.init=kaiming", "schedule.start=0.3"), "in 1 batched model"),
    (("optimizer=adam", "schedule.start=0.05", "model.activation=tanh,relu", "loss.penalty=l1,none",
      "data=xor,spiral"), "in 2 batched models"),
    # Playground's knobs: feature sets and training sets (none, or 30 to 60 points) in one model
    (("model.features=[x1,x2],[sq_x1,sq_x2,x1x2,sin_x2]", "data.train_size=null,30,45,60", "data.batch_size=20"),
     "in 1 batched model"),
])
def test_every_job_keeps_the_record_it_has_in_process(workdir, varied, batches):
    """The same sweep in process and batched: the same runs, params, tags, artifacts, steps, and
    the same numbers within float32 rounding."""
    sweep = ("-m", "data.num_batches=20", "plot.every_n_epochs=5", *varied)
    moonprop(*sweep, cwd=workdir)
    proc = moonprop(*sweep, BATCHED, cwd=workdir)
    assert f"8 jobs {batches}" in proc.stderr
    client = default_store(workdir)
    alone, batched = runs_by_name(client, 0), runs_by_name(client, 1)
    assert sorted(alone) == sorted(batched) and len(alone) == 8
    ignored = {"sweep.id", "mlflow.parentRunId", "hydra.output_dir", "mlflow.runName"}
    for name, a in alone.items():
        b = batched[name]
        assert b.info.status == "FINISHED" and b.data.params == a.data.params
        assert {k: v for k, v in a.data.tags.items() if k not in ignored} == \
               {k: v for k, v in b.data.tags.items() if k not in ignored}
        assert artifact_names(client, a.info.run_id) == artifact_names(client, b.info.run_id)
        assert b.data.metrics["test/acc"] == pytest.approx(a.data.metrics["test/acc"], abs=0.002)
        assert b.data.metrics.keys() == a.data.metrics.keys()  # train/acc with a training set
        for key in a.data.metrics:
            ha = {m.step: m.value for m in client.get_metric_history(a.info.run_id, key)}
            hb = {m.step: m.value for m in client.get_metric_history(b.info.run_id, key)}
            assert sorted(ha) == sorted(hb)
            assert max(abs(ha[s] - hb[s]) for s in ha) < 1e-3, (name, key)
    # the sweep's own record as for any launcher: summary, pictures, best job
    parent = client.search_runs([client.get_experiment_by_name("moonprop").experiment_id],
                                "attributes.run_name LIKE 'sweep %'", order_by=["attributes.start_time DESC"])[0]
    assert parent.info.status == "FINISHED"
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"summary.csv", "boundaries.png", "curves.png"} <= artifacts
    if any(v.startswith("data=") and "," in v for v in varied):  # sweep.within: a best for each dataset
        tasks = [best.partition(": ")[0] for best in parent.data.tags["best_config"].split("; ")]
        assert len(tasks) == 2 and all(t.startswith("data=") for t in tasks) and "best_run_id" not in parent.data.tags
    else:
        assert parent.data.tags["best_run_id"] in {r.info.run_id for r in batched.values()}


def test_a_batched_sweep_is_a_sweep_like_any_other(workdir):
    moonprop("-m", "data.num_batches=3", "seed=0,1", "schedule=linear,cosine", BATCHED,
             "hydra.launcher.recorders=2", cwd=workdir)  # the runs shared by two recorder processes
    client = default_store(workdir)
    check_sweep(client, 4)
    _, children = sweep_runs(client)
    for child in children:  # each job's own network, as its MLflow model
        (output,) = client.get_run(child.info.run_id).outputs.model_outputs
        assert client.get_logged_model(output.model_id).status == "READY"
    assert len({client.get_logged_model(c.outputs.model_outputs[0].model_id).artifact_location
                for c in map(lambda r: client.get_run(r.info.run_id), children)}) == 4


def test_jobs_of_other_shapes_train_as_separate_batches(workdir):
    proc = moonprop("-m", "data.num_batches=3,4", "model.hidden=[8],[8,8]", "seed=0,1", BATCHED, cwd=workdir)
    assert "8 jobs in 4 batched models" in proc.stderr
    _, children = sweep_runs(default_store(workdir))
    assert {c.info.status for c in children} == {"FINISHED"}
    for child in children:
        steps = len(default_store(workdir).get_metric_history(child.info.run_id, "test/acc"))
        assert steps == int(child.data.params["data.num_batches"]) + 1


def test_a_diverging_job_fails_alone_and_the_others_go_on(workdir):
    proc = moonprop("-m", "data.num_batches=30", "schedule.start=1.0,1e6", BATCHED, cwd=workdir, check=False)
    assert proc.returncode == 1  # a job failed: the sweep says so
    _, children = sweep_runs(default_store(workdir))
    by_start = {c.data.params["schedule.start"]: c for c in children}
    diverged, fine = by_start["1000000.0"], by_start["1.0"]
    assert diverged.info.status == "FAILED" and diverged.info.end_time
    error = diverged.data.tags["error"]
    assert error.startswith("NonFiniteLoss: loss is") and "at epoch" in error
    assert len(default_store(workdir).get_metric_history(diverged.info.run_id, "test/acc")) < 30
    assert fine.info.status == "FINISHED"
    assert len(default_store(workdir).get_metric_history(fine.info.run_id, "test/acc")) == 31


def test_sigterm_kills_every_job_and_the_same_command_continues_them(workdir):
    args = ["-m", "seed=0,1,2", "data.num_batches=2000", "plot.every_n_epochs=500", BATCHED]
    proc = start(*args, cwd=workdir)
    wait_for_step(workdir, 3, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err[-2000:]
    parent, children = sweep_runs(default_store(workdir))
    assert parent.info.status == "KILLED" and [c.info.status for c in children] == ["KILLED"] * 3
    hint = err.strip().splitlines()[-1]
    assert "continue with: moonprop -m" in hint and "hydra.sweep.dir=" in hint
    stopped = {max(m.step for m in default_store(workdir).get_metric_history(c.info.run_id, "test/acc"))
               for c in children}
    assert len(stopped) == 1 and stopped.pop() < 2000  # all stopped at the same epoch's end
    moonprop(*_argv(hint.split("continue with: ")[1]), cwd=workdir, timeout=600)
    parent, children = sweep_runs(default_store(workdir))  # the same parent and runs, continued
    assert parent.info.status == "FINISHED"
    for child in children:
        history = default_store(workdir).get_metric_history(child.info.run_id, "test/acc")
        assert child.info.status == "FINISHED" and sorted(m.step for m in history) == list(range(2001))


def test_a_batch_continues_only_with_the_settings_it_was_trained_with(tmp_path):
    checkpoint = tmp_path / "sweep" / "checkpoints" / "batch-0.ckpt"
    checkpoint.parent.mkdir(parents=True)
    saved = {"run_ids": ["a", "b"], "params": [{"seed": "0"}, {"seed": "1"}], "test_acc": [None, None], "errors": {}}
    torch.save({"callbacks": {BatchedMlflowCallback.__qualname__: saved}}, checkpoint)
    assert resumed_batch(checkpoint, [{"seed": "0"}, {"seed": "1"}]) == saved
    with pytest.raises(ConfigError, match="seed=2: must be 1, as in job 1 of the interrupted sweep"):
        resumed_batch(checkpoint, [{"seed": "0"}, {"seed": "2"}])
    with pytest.raises(ConfigError, match="its interrupted batch has 2 jobs, this one 1"):
        resumed_batch(checkpoint, [{"seed": "0"}])


def _argv(command: str) -> list[str]:
    import shlex

    return shlex.split(command)[1:]



def test_a_job_whose_run_the_store_refuses_fails_alone(workdir):
    """A job's artifact folder broken while its batch trains (its `images` folder replaced by a
    file): the store refuses that run's next picture, so the job leaves the batch FAILED with the
    store's error; the other job finishes."""
    args = ["-m", "seed=0,1", "data.num_batches=3000", "plot.every_n_epochs=1000", BATCHED]
    proc = start(*args, cwd=workdir)
    wait_for_step(workdir, 3, proc)
    client = default_store(workdir)
    doomed = next(c for c in sweep_runs(client)[1] if c.data.params["seed"] == "0")
    images = Path(doomed.info.artifact_uri.removeprefix("file://")) / "images"
    shutil.rmtree(images)
    images.write_text("not a folder")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err[-3000:]  # one job failed
    assert "job 0 (seed=0) FAILED: RecorderError: MLflow" in err
    runs = {c.data.params["seed"]: c for c in sweep_runs(client)[1]}
    assert runs["0"].info.status == "FAILED" and "RecorderError" in runs["0"].data.tags["error"]
    assert runs["1"].info.status == "FINISHED"
    assert len(client.get_metric_history(runs["1"].info.run_id, "test/acc")) == 3001


@pytest.mark.parametrize("setting", ["max_batch=0", "recorders=0", "recorders=two"])
def test_bad_launcher_settings_are_refused_in_one_line(workdir, setting):
    proc = moonprop("-m", "seed=0,1", BATCHED, f"hydra.launcher.{setting}", cwd=workdir, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"moonprop: invalid config: hydra.launcher.{setting}: a positive integer"
    assert not (workdir / "outputs").exists()


def test_jobs_with_callbacks_of_their_own_train_alone_and_their_callbacks_act(workdir):
    proc = moonprop("-m", "seed=0,1", "callbacks=[early_stopping]", "callbacks.early_stopping.patience=2",
                    "data.num_batches=200", "plot.every_n_epochs=50", BATCHED, cwd=workdir)
    assert "2 jobs in 2 batched models" in proc.stderr
    _, children = sweep_runs(default_store(workdir))
    client = default_store(workdir)
    for child in children:
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val/acc")]
        assert child.info.status == "FINISHED" and max(steps) < 200  # EarlyStopping stopped it on val/acc


def test_networks_that_see_different_features_stack_as_each_alone():
    """A first layer over all the jobs' features: each job's weights in its own features' columns."""
    features = [("x1", "x2"), ("sq_x1", "sq_x2"), ("x1", "x1x2", "sin_x2")]
    stacked = StackedMLP([[8], [4], [8]], [0, 1, 2], features=features)
    assert stacked.features == ("x1", "x2", "sq_x1", "sq_x2", "x1x2", "sin_x2")
    points = torch.randn(3, 50, 2)
    scores = stacked(points)
    for job, (f, h) in enumerate(zip(features, [[8], [4], [8]], strict=True)):
        alone = MLP(h, torch.Generator().manual_seed(job), features=f)
        network = stacked.network(job)
        assert network.features == f
        for mine, theirs in zip(network.parameters(), alone.parameters(), strict=True):
            assert torch.equal(mine, theirs)
        torch.testing.assert_close(scores[job], alone(points[job]))

"""The recorder process: calls into summary.py and files written straight into a local store."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from moonprop.recorder import Recorder, RecorderError
from moonprop.tracking import local_artifact_dir


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    yield rec
    rec.close()


def test_a_sweeps_parent_run_is_opened_and_ended_in_the_recorder(tmp_path: Path, recorder: Recorder):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ticket = recorder.ask("open_parent", uri=uri, experiment="e", name="sweep seed (s1)", sweep_id="s1", keys=["seed"],
                          overrides="seed=1,2")
    parent = recorder.answer(ticket)
    run = MlflowClient(uri).get_run(parent)
    assert (run.info.run_name, run.info.status, run.data.tags["sweep.overrides"]) == ("sweep seed (s1)", "RUNNING",
                                                                                      "seed=1,2")

    client = MlflowClient(uri)
    orphan = client.create_run(run.info.experiment_id, tags={"mlflow.parentRunId": parent}).info.run_id
    recorder.call("end_parent", uri=uri, parent=parent, status="KILLED", reason="stopped by SIGTERM", orphans=True)
    assert client.get_run(parent).info.status == "KILLED"
    assert client.get_run(parent).data.tags["error"] == "stopped by SIGTERM"
    assert client.get_run(orphan).info.status == "KILLED"
    assert client.get_run(orphan).data.tags["error"] == "the sweep ended KILLED while this job ran: stopped by SIGTERM"


def test_a_failed_call_raises_its_error_and_the_recorder_goes_on(tmp_path: Path, recorder: Recorder):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(RecorderError, match=r"^MLflow: MlflowException: Run .*no-such-run.* not found"):
        recorder.call("end_parent", uri=uri, parent="no-such-run", status="FAILED", reason="", orphans=False)
    assert recorder.call("open_parent", uri=uri, experiment="e", name="sweep s2", sweep_id="s2", keys=[], overrides="")


@pytest.mark.parametrize("uri, expected", [
    ("file:///tmp/store/1/abc/artifacts", Path("/tmp/store/1/abc/artifacts")),
    ("file:///tmp/with%20space/artifacts", Path("/tmp/with space/artifacts")),
    ("/tmp/plain/artifacts", Path("/tmp/plain/artifacts")),
    ("mlflow-artifacts:/1/abc/artifacts", None),  # a tracking server's proxied store: uploaded
    ("s3://bucket/1/abc/artifacts", None),
])
def test_files_are_written_in_place_only_for_a_local_artifact_store(uri: str, expected: Path | None):
    assert local_artifact_dir(uri) == expected


def test_a_trainer_killed_in_the_middle_of_a_message_leaves_the_run_failed(tmp_path: Path):
    """The recorder's side of a SIGKILL: the pipe ends within a message, not only between two."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    reply_r, reply_w = os.pipe()
    proc = subprocess.Popen([sys.executable, "-m", "moonprop.recorder", str(reply_w)], stdin=subprocess.PIPE,
                            stderr=subprocess.PIPE, pass_fds=(reply_w,))
    os.close(reply_w)
    start = {"uri": uri, "experiment": "e", "run_name": "killed", "params": {}, "tags": {}, "texts": {}}
    proc.stdin.write(pickle.dumps(("start", 1, start)))
    proc.stdin.flush()
    with os.fdopen(reply_r, "rb") as replies:
        _, op, kind, (run_id, _) = pickle.load(replies)
    assert (op, kind) == ("start", "ok")
    message = pickle.dumps(("metrics", {"test/acc": 0.5}, 0, 0))
    proc.stdin.write(message[: len(message) // 2])
    proc.stdin.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0, err[-2000:]
    run = MlflowClient(uri).get_run(run_id)
    assert run.info.status == "FAILED" and "ended without closing" in run.data.tags["error"]


def test_parallel_runs_log_the_same_dataset(tmp_path: Path):
    """Parallel jobs of one sweep share their test set: MLflow's store looks a dataset up, then
    inserts it, so one of two simultaneous inserts breaks the unique constraint; a second try
    finds the other's row."""
    import threading

    from mlflow.entities import Dataset, DatasetInput

    from moonprop.tracking import log_inputs

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("e")
    runs = [client.create_run(experiment).info.run_id for _ in range(8)]
    start, errors = threading.Barrier(len(runs)), []

    def log(run_id: str) -> None:
        start.wait()
        try:
            log_inputs(MlflowClient(uri), run_id, [DatasetInput(Dataset("moons-test", "abc", "code", "{}"))])
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=log, args=(run,)) for run in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and all(len(client.get_run(r).inputs.dataset_inputs) == 1 for r in runs)

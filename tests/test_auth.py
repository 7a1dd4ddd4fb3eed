"""A team's tracking server that lets no one in who does not belong: the README's recipe, `mlflow
server --app-name basic-auth` on PostgreSQL (its users in PostgreSQL too), and moonprop as a client
of it, whose credentials come from MLflow's own variables, reach every process that writes and are
never recorded. Users and permissions are made through MLflow's own client, as an admin would."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from mlflow_server import MlflowServer

from .conftest import ADMIN_PASSWORD, moonprop, signed_in, team_server
from .test_server import check_every_record

USERS = {"alice": ("alice-pw-Vn3Kq8", "EDIT"), "bob": ("bob-pw-Zr5Tw2", "READ")}
EXPERIMENT = "team"


def env_of(user: str) -> dict[str, str]:
    return {"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": USERS[user][0]}


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[MlflowServer]:
    """The recipe's server with two users: alice may EDIT the team's experiment, bob only READ it."""
    passwords = {user: password for user, (password, _) in USERS.items()}
    with team_server(tmp_path_factory.mktemp("auth"), passwords) as served:
        from mlflow.server import get_app_client

        with signed_in("admin", ADMIN_PASSWORD):
            admin = get_app_client("basic-auth", tracking_uri=served.url)
            experiment = MlflowClient(served.url).create_experiment(EXPERIMENT)
            for user, (_, permission) in USERS.items():
                admin.grant_user_permission(user, "experiment", experiment, permission)
        yield served


def refused(proc, expected: str, workdir: Path) -> None:
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr[-2000:]
    assert proc.stderr.startswith("moonprop: invalid config: ") and expected in proc.stderr, proc.stderr
    assert list(workdir.iterdir()) == []  # no run folder, no store


def all_runs(url: str) -> list:
    with signed_in("admin", ADMIN_PASSWORD):
        client = MlflowClient(url)
        return client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=1000)


def test_a_user_who_may_edit_records_a_run_and_a_batched_sweep(server, workdir):
    uri = f"tracking.uri={server.url}"
    moonprop("data.num_batches=3", uri, f"tracking.experiment={EXPERIMENT}", "tracking.run_name=alone", cwd=workdir,
             env=env_of("alice"))
    moonprop("-m", "data.num_batches=3", "seed=0,1", "hydra/launcher=batched", "hydra.launcher.recorders=2", uri,
             f"tracking.experiment={EXPERIMENT}", cwd=workdir, env=env_of("alice"), timeout=600)
    with signed_in("alice", USERS["alice"][0]):
        client = MlflowClient(server.url)
        team = client.get_experiment_by_name(EXPERIMENT).experiment_id
        (run,) = client.search_runs([team], "attributes.run_name = 'alone'")
        assert run.info.status == "FINISHED" and len(client.get_metric_history(run.info.run_id, "test/acc")) == 4
        (parent,) = client.search_runs([team], "attributes.run_name LIKE 'sweep %'")
        children = client.search_runs([team], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
        check_every_record(client, parent, children, jobs=2, epochs=3, pictures=4)
    # the password is nowhere: not in the store's runs, not in any file the runs left
    for recorded in all_runs(server.url):
        assert USERS["alice"][0] not in str(recorded.data.params) + str(recorded.data.tags)
    for path in workdir.rglob("*"):
        if path.is_file():
            assert USERS["alice"][0].encode() not in path.read_bytes(), path


@pytest.mark.parametrize("env, said", [
    ({}, "the tracking server refused no credentials: set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD: 401"),
    ({"MLFLOW_TRACKING_USERNAME": "alice", "MLFLOW_TRACKING_PASSWORD": "wrong"},
     "the tracking server refused these credentials (alice): 401"),
])
def test_missing_or_wrong_credentials_are_refused_before_anything_starts(server, workdir, env, said):
    before = len(all_runs(server.url))
    for args in (["data.num_batches=3"], ["-m", "seed=0,1", "data.num_batches=3", "hydra/launcher=batched"]):
        proc = moonprop(*args, f"tracking.uri={server.url}", f"tracking.experiment={EXPERIMENT}", cwd=workdir,
                        check=False, env=env, timeout=120)
        refused(proc, said, workdir)
    assert len(all_runs(server.url)) == before


def test_a_reader_is_refused_plainly_and_can_still_read(server, workdir):
    alice_runs = len(all_runs(server.url))
    for args in (["data.num_batches=3"], ["-m", "seed=0,1", "data.num_batches=3"]):
        proc = moonprop(*args, f"tracking.uri={server.url}", f"tracking.experiment={EXPERIMENT}", cwd=workdir,
                        check=False, env=env_of("bob"), timeout=120)
        refused(proc, f"tracking.experiment={EXPERIMENT}: an experiment bob may write to: the tracking server lets bob "
                      "only READ it and refuses its runs (403); ask its admin for EDIT", workdir)
    runs = all_runs(server.url)
    assert len(runs) == alice_runs and "RUNNING" not in {r.info.status for r in runs}
    with signed_in("admin", ADMIN_PASSWORD):
        team = MlflowClient(server.url).get_experiment_by_name(EXPERIMENT).experiment_id
    import mlflow

    with signed_in("bob", USERS["bob"][0]):
        mlflow.set_tracking_uri(server.url)
        try:
            found = mlflow.search_runs(experiment_names=[EXPERIMENT])
        finally:
            mlflow.set_tracking_uri(None)
    assert len(found) == len([r for r in runs if r.info.experiment_id == team]) > 0  # alice's, by bob

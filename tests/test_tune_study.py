"""asd tune end to end on a tiny synthetic store: runs, resuming, workers, kill -9, pruning.

The command is registered on a throwaway Typer app with the CLI's own error handling, as the
CLI package registers it; subprocess tests run the same app from a script.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import scipy.stats
import typer
from optuna.trial import TrialState
from rich.console import Console
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from asdcli.cli.render import studies_table
from asdcli.cli.tune import default_storage, tune
from asdcli.errors import DataError, SettingsError, UserError
from asdcli.featurize import featurize
from asdcli.runs import load_run
from asdcli.settings import load_settings
from asdcli.store import FeatureStore
from asdcli.synth import synthesize
from asdcli.tune.holdout import split_holdout
from asdcli.tune.objective import Objective
from asdcli.tune.settings import TuneSettings
from asdcli.tune.storage import JOURNAL_NAME, open_storage
from asdcli.tune.study import list_studies, plan_study, run_study

optuna.logging.set_verbosity(optuna.logging.ERROR)

CONFIG = """\
features: {sample_rate: 8000, n_fft: 512, hop_length: 256, n_mels: 32}
paths: {store: features.h5, runs: runs}
"""
JOURNAL = Path("studies") / JOURNAL_NAME
APP_SCRIPT = """\
import typer
from asdcli.cli import _Group, _root
from asdcli.cli.render import studies_table
from asdcli.cli.tune import default_storage, tune

app = typer.Typer(cls=_Group, pretty_exceptions_enable=False, add_completion=False)
app.callback()(_root)
app.command("tune")(tune)
if __name__ == "__main__":
    app()
"""


def cli() -> typer.Typer:
    from asdcli.cli import _Group, _root

    app = typer.Typer(cls=_Group, pretty_exceptions_enable=False, add_completion=False)
    app.callback()(_root)
    app.command("tune")(tune)
    return app


runner = CliRunner()


def asd(*args: str):
    return runner.invoke(cli(), list(args))


@pytest.fixture(scope="session")
def synthetic_store(tmp_path_factory) -> Path:
    """Two machine types, 20 training and 16 test clips each (1 s at 8 kHz), featurized."""
    root = tmp_path_factory.mktemp("tune-data")
    synthesize(
        root / "data",
        machines=["fan", "valve"],
        n_train=20,
        n_test=16,
        seconds=1.0,
        sample_rate=8000,
        difficulty=0.3,
        target_train=3,
    )
    (root / "config.yaml").write_text(CONFIG)
    settings, _ = load_settings(root / "config.yaml")
    featurize([root / "data"], settings.features, root / "features.h5")
    return root / "features.h5"


@pytest.fixture
def project(synthetic_store, tmp_path) -> Path:
    """The working folder (conftest chdirs there): conf/config.yaml and a copy of the store."""
    shutil.copy(synthetic_store, tmp_path / "features.h5")
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.yaml").write_text(CONFIG)
    (tmp_path / "asd_tune.py").write_text(APP_SCRIPT)
    return tmp_path


def settings():
    return load_settings(None)[0]


def load(name: str, storage: str = str(JOURNAL)) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(storage))


def tagged_runs(root: Path = Path("runs")) -> dict[int, Path]:
    """Trial number -> run folder, from the runs' manifests."""
    out = {}
    for path in sorted(root.iterdir()):
        tag = json.loads((path / "manifest.json").read_text()).get("tune")
        assert tag is not None, path
        assert tag["trial"] not in out, f"two runs for trial {tag['trial']}"
        out[tag["trial"]] = path
    return out


def official_by_hand(scores_csv: Path, keys: set[str]) -> float:
    """The DCASE official score of the clips named in ``keys``, computed from scratch."""
    rows = [r for r in csv.DictReader(scores_csv.open()) if f"{r['machine']}/{r['file']}" in keys]
    values = []
    for machine in sorted({r["machine"] for r in rows}):
        mine = [r for r in rows if r["machine"] == machine]
        y = [int(r["label"] == "anomaly") for r in mine]
        s = [float(r["score"]) for r in mine]
        for domain in ("source", "target"):
            sel = [i for i, r in enumerate(mine) if r["domain"] == domain or y[i] == 1]
            values.append(roc_auc_score([y[i] for i in sel], [s[i] for i in sel]))
        values.append(roc_auc_score(y, s, max_fpr=0.1))
    return float(scipy.stats.hmean(values))


@pytest.mark.slow
def test_tune_writes_runs_best_yaml_figures_and_the_holdout_score_then_resumes(project):
    result = asd("tune", "lof", "--trials", "8")
    assert result.exit_code == 0, result.output
    assert "Objective: the DCASE official score on 24 labelled test clips" in result.output
    runs = tagged_runs()
    assert sorted(runs) == list(range(8))
    for path in runs.values():
        run = load_run(path)
        assert run.status == "complete" and run.manifest["tune"]["study"] == "lof"
        assert (path / "metrics.json").is_file()  # evaluated: `asd report --compare` ranks it

    study = load("lof")
    best = study.best_trial
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 8
    # the value is the official score on the search clips only; the holdout is left out
    split = split_holdout(FeatureStore("features.h5").clips(settings().features.key()), 0.3, 0)
    assert len(split.search) == 24 and len(split.holdout) == 8
    scores_csv = runs[best.number] / "scores" / "scores.csv"
    assert best.value == pytest.approx(official_by_hand(scores_csv, set(split.search)))
    everything = set(split.search) | set(split.holdout)
    assert best.value != pytest.approx(official_by_hand(scores_csv, everything))
    # The trial's own metrics (what `asd report --compare` ranks) see the search clips only.
    metrics = json.loads((runs[best.number] / "metrics.json").read_text())
    assert metrics["official_score"] == pytest.approx(best.value)
    assert metrics["counts"]["evaluated"] == 24 and metrics["counts"]["left_out"] == 8
    held_out = study.user_attrs["asd_best"]["holdout"]
    assert held_out["n_clips"] == 8
    assert held_out["official_score"] == pytest.approx(
        official_by_hand(scores_csv, set(split.holdout))
    )
    assert f"{held_out['official_score']:.4f} on the 8 held-out clips" in result.output
    for t in study.trials:
        assert t.user_attrs["search"]["n_clips"] == 24

    best_yaml = Path("studies/lof/best.yaml")
    tuned, _ = load_settings(best_yaml)  # --config accepts it as it is
    assert tuned.detectors.lof.n_neighbors == best.params["detectors.lof.n_neighbors"]
    for name in ("optimization_history.png", "param_importances.png"):
        data = (Path("studies/lof") / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000

    # the same command with more trials continues the study
    again = asd("tune", "lof", "--trials", "12")
    assert again.exit_code == 0, again.output
    assert "4 finished in this call" in again.output
    study = load("lof")
    assert [t.number for t in study.trials if t.state == TrialState.COMPLETE] == list(range(12))
    assert sorted(tagged_runs()) == list(range(12))
    assert asd("tune", "lof", "--trials", "12").exit_code == 0
    assert len(list(Path("runs").iterdir())) == 12  # a finished study runs nothing more

    rows = list_studies(str(JOURNAL))
    assert [(r.name, r.detector, r.complete, r.failed) for r in rows] == [("lof", "lof", 12, 0)]
    assert rows[0].best_value == pytest.approx(load("lof").best_value)


def test_bad_input_exits_2_with_a_message(project):
    result = asd("tune", "no-such-detector", "--trials", "2")
    assert result.exit_code == 2 and "unknown detector" in result.output
    result = asd("tune", "lof", "--holdout", "1.5")
    assert result.exit_code == 2
    result = asd("tune", "lof", "--study", "a/b")
    assert result.exit_code == 2 and "--study" in result.output
    result = asd("tune", "ensemble", "--trials", "2")
    assert result.exit_code == 2 and "no hyper-parameters to search" in result.output
    assert not Path("runs").exists()


def test_a_study_is_continued_only_for_the_same_detector_and_clips(project):
    assert list_studies(default_storage(settings())) == []
    assert not JOURNAL.exists()  # listing creates nothing
    run_study(settings(), "knn", trials=1, study="shared")
    assert default_storage(settings()) == str(JOURNAL)
    [row] = list_studies(default_storage(settings()))
    assert (row.name, row.detector, row.complete, row.best_trial) == ("shared", "knn", 1, 0)
    console = Console(record=True, width=200)
    console.print(studies_table([row]))
    text = console.export_text()
    assert "shared" in text and "knn" in text
    with pytest.raises(UserError, match="tunes knn, not lof"):
        run_study(settings(), "lof", trials=2, study="shared")
    with pytest.raises(UserError, match="holds out 0.3"):
        run_study(settings(), "knn", trials=2, study="shared", holdout=0.5)
    with pytest.raises(DataError, match="No training clips for machine pump"):
        run_study(settings(), "knn", trials=2, machines=["pump"])
    with pytest.raises(SettingsError, match="no hyper-parameters"):
        run_study(
            settings(),
            "knn",
            trials=2,
            tune=TuneSettings(spaces={"knn": {"k": None, "metric": None}}),
        )


def test_pruning_stops_a_neural_trial_and_keeps_its_run_incomplete(project):
    tune_settings = TuneSettings(spaces={"train": {"epochs": {"low": 6, "high": 6}}})
    base = settings().model_copy(deep=True)
    base.detectors.dcase_ae.hidden = 16
    plan, _ = plan_study(base, "dcase-ae", trials=1, tune=tune_settings)
    assert plan.prune
    assert not plan_study(base, "lof", trials=1)[0].prune
    assert not plan_study(base, "emb-knn", trials=1)[0].prune  # its loss is searched
    # a pruner that prunes at once: the reported value (the negated loss) is below 0
    study = optuna.create_study(
        direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=0.0)
    )
    study.optimize(Objective(plan), n_trials=1)
    trial = study.trials[0]
    assert trial.state == TrialState.PRUNED
    assert list(trial.intermediate_values) == [1]
    run = load_run(Path(trial.user_attrs["run"]), require_complete=False)
    assert run.status == "incomplete" and "pruned by asd tune at epoch 1" in run.manifest["reason"]
    history = run.history()
    assert list(history) == ["fan"] and len(history["fan"]) == 1  # the others were not trained
    assert -trial.intermediate_values[1] == pytest.approx(history["fan"][0]["val_loss"])


@pytest.mark.slow
def test_two_worker_processes_finish_a_ten_trial_study(project):
    result = asd("tune", "gmm", "--trials", "10", "--jobs", "2")
    assert result.exit_code == 0, result.output
    study = load("gmm")
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 10 and len({t.number for t in complete}) == 10
    # anything else is a surplus trial that was never run (two workers started the last one)
    assert all(t.user_attrs.get("surplus") for t in study.trials if t not in complete)
    assert sorted(tagged_runs()) == sorted(t.number for t in complete)
    pids = {t.user_attrs["worker"]["pid"] for t in complete}
    assert len(pids) == 2 and os.getpid() not in pids


def running_trial(storage: str, study: str) -> optuna.trial.FrozenTrial | None:
    try:
        trials = load(study, storage).get_trials(states=(TrialState.RUNNING,))
    except KeyError:
        return None  # not created yet
    return next((t for t in trials if "worker" in t.user_attrs), None)


def training(pid: int) -> bool:
    """A run folder of process ``pid`` is training (mid-trial, between storage writes)."""
    for manifest in Path("runs").glob("*/manifest.json"):
        with contextlib.suppress(OSError, ValueError):
            m = json.loads(manifest.read_text())
            if m.get("pid") == pid and m.get("status") == "running":
                return True
    return False


def kill_mid_trial(proc: subprocess.Popen, storage: str, study: str) -> int:
    """SIGSTOP the worker training a trial, check the trial is still running, SIGKILL it."""
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        trial = running_trial(storage, study)
        if trial is None or not training(trial.user_attrs["worker"]["pid"]):
            time.sleep(0.01)
            continue
        pid = trial.user_attrs["worker"]["pid"]
        os.kill(pid, signal.SIGSTOP)
        still = running_trial(storage, study)
        if still is not None and still.number == trial.number:
            os.kill(pid, signal.SIGKILL)
            return trial.number
        os.kill(pid, signal.SIGCONT)
    raise AssertionError(f"no trial to kill: {proc.communicate()}")


@pytest.mark.slow
def test_kill_9_loses_only_the_running_trial_and_the_study_continues(project):
    command = [sys.executable, "asd_tune.py", "tune", "lof", "--trials", "6"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    killed = kill_mid_trial(proc, str(JOURNAL), "lof")
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert load("lof").trials[killed].state == TrialState.RUNNING  # nobody could say otherwise

    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    study = load("lof")
    assert study.trials[killed].state == TrialState.FAIL
    complete = [t.number for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 6 and killed not in complete
    assert "1 failed" in done.stdout


@pytest.mark.slow
def test_ctrl_c_marks_the_running_trial_failed_and_the_same_command_continues(project):
    command = [sys.executable, "asd_tune.py", "tune", "lof", "--trials", "5"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while (trial := running_trial(str(JOURNAL), "lof")) is None or not training(proc.pid):
        assert time.time() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output
    assert "Run the same command to continue" in output
    study = load("lof")
    assert study.trials[trial.number].state == TrialState.FAIL
    assert study.trials[trial.number].user_attrs["error"] == "interrupted (Ctrl-C)"
    interrupted = load_run(
        Path(study.trials[trial.number].user_attrs["run"]), require_complete=False
    )
    assert interrupted.status == "incomplete"
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sum(t.state == TrialState.COMPLETE for t in load("lof").trials) == 5


@pytest.mark.slow
def test_a_killed_worker_process_fails_its_trial_while_the_other_finishes(project):
    command = [sys.executable, "asd_tune.py", "tune", "knn", "--trials", "6", "--jobs", "2"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    killed = kill_mid_trial(proc, str(JOURNAL), "knn")
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output
    assert "ended by signal 9" in output
    study = load("knn")
    assert study.trials[killed].state == TrialState.FAIL
    assert sum(t.state == TrialState.COMPLETE for t in study.trials) == 6


@pytest.mark.slow
def test_a_lock_left_by_a_killed_journal_writer_is_removed(project):
    """kill -9 in the middle of a journal write leaves its lock file: the next process waits
    out the grace period, then goes on (Optuna's default lock never did, for relative paths)."""
    run_study(settings(), "knn", trials=1)
    Path(f"{JOURNAL}.lock").touch()  # what a writer killed mid-write leaves
    started = time.monotonic()
    result = run_study(settings(), "knn", trials=2)
    assert result.finished == 2 and not Path(f"{JOURNAL}.lock").exists()
    assert time.monotonic() - started < 60


# --------------------------------------------------------------------------------------------
# PostgreSQL: a real server on loopback, as several machines would share it
# --------------------------------------------------------------------------------------------


def postgres_bin() -> Path | None:
    """The folder of initdb and pg_ctl (Debian puts them under /usr/lib/postgresql/N/bin)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb and shutil.which("pg_ctl") else None


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def postgres_url():
    """A throwaway PostgreSQL cluster on 127.0.0.1, stopped and removed afterwards."""
    import pwd
    import tempfile

    bindir = postgres_bin()
    if bindir is None:
        pytest.skip(
            "PostgreSQL server binaries (initdb, pg_ctl) are not installed; on Debian: "
            "apt-get install -y postgresql"
        )
    prefix: list[str] = []
    base = Path(tempfile.mkdtemp(prefix="asd-pg-"))  # pytest's tmp_path is root-only
    if os.geteuid() == 0:  # the server refuses to run as root: use the package's user
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail("running as root needs the `postgres` user (Debian's package makes it)")
        os.chown(base, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    data, port = base / "data", free_port()
    subprocess.run(
        [*prefix, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "asd", "-N"],
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
    ctl = [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-w", "-t", "60"]
    subprocess.run(
        [*ctl, "-l", str(base / "server.log"), "-o", options, "start"],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql://asd@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*ctl, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
def test_two_workers_share_one_study_through_postgresql(project, postgres_url):
    command = [sys.executable, "asd_tune.py", "tune", "lof", "--trials", "10"]
    command += ["--study", "shared", "--storage", postgres_url]
    workers = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    outputs = [w.communicate(timeout=300)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    study = load("shared", postgres_url)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    # none lost: exactly the 10 asked for, none left running; none duplicated: each trial
    # number once, each with its own run folder
    assert len(complete) == 10 and len({t.number for t in complete}) == 10
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    assert all(t.user_attrs.get("surplus") for t in study.trials if t not in complete)
    runs = tagged_runs()
    assert sorted(runs) == sorted(t.number for t in complete)
    assert {str(runs[t.number].resolve()) for t in complete} == {
        t.user_attrs["run"] for t in complete
    }
    assert len({t.user_attrs["worker"]["pid"] for t in complete}) == 2  # both took part
    assert "postgresql://asd@127.0.0.1" in outputs[0]  # the storage, named in the output
    assert list_studies(postgres_url)[0].complete == 10

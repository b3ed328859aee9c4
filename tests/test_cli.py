"""The CLI surface: help, exit codes, messages without tracebacks."""

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from asdcli.cli import app

runner = CliRunner()


def run(*args, env=None):
    return runner.invoke(app, list(args), env=env)


def test_help_lists_every_command():
    r = run("--help")
    assert r.exit_code == 0
    for cmd in (
        "synth",
        "featurize",
        "train",
        "score",
        "evaluate",
        "report",
        "tune",
        "serve",
        "watch",
        "history",
        "demo",
        "config",
    ):
        assert cmd in r.output


def test_help_does_not_import_torch_or_h5py():
    code = (
        "import sys; from asdcli.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = {'torch', 'h5py', 'sklearn', 'scipy', 'matplotlib', 'optuna', 'fastapi'}\n"
        "assert not heavy & set(sys.modules), heavy & set(sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_featurize_then_cached(dataset, tmp_path):
    store = tmp_path / "f.h5"
    r = run("featurize", str(dataset), "--store", str(store))
    assert r.exit_code == 0, r.output
    assert "20 computed" in r.output
    r = run("featurize", str(dataset), "--store", str(store))
    assert "All 20 clips were cached" in r.output


@pytest.mark.parametrize(
    "args, env, needle",
    [
        (["featurize", "nope"], None, "nope does not exist"),
        (["featurize", "."], None, "No .wav files"),
        (["featurize", "."], {"ASD_FEATURES__HOP_LENGTH": "4096"}, "larger than n_fft"),
        (["featurize", "."], {"ASD_TRAIN__EPOCHS": "-3"}, "train.epochs"),
        (["--config", "missing.yaml", "config"], None, "missing.yaml does not exist"),
    ],
)
def test_user_errors_exit_2_with_one_message_and_no_traceback(args, env, needle):
    r = run(*args, env=env)
    assert r.exit_code == 2
    assert needle in r.output
    assert "Traceback" not in r.output


def test_store_that_is_not_hdf5_is_refused_untouched(dataset, tmp_path):
    store = tmp_path / "f.h5"
    store.write_text("precious notes")
    r = run("featurize", str(dataset), "--store", str(store))
    assert r.exit_code == 2 and "not an HDF5 feature store" in r.output
    assert store.read_text() == "precious notes"


def test_config_shows_where_values_came_from(tmp_path):
    (tmp_path / "my.yaml").write_text("train:\n  epochs: 3\n")
    r = run("--config", "my.yaml", "config", "--changed", env={"ASD_FEATURES__N_MELS": "64"})
    assert r.exit_code == 0
    assert "train.epochs" in r.output and "my.yaml" in r.output
    assert "ASD_FEATURES__N_MELS" in r.output
    assert "paths.runs" not in r.output  # --changed hides defaults


def test_python_dash_m_entry_point():
    done = subprocess.run(
        [sys.executable, "-m", "asdcli", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0 and "featurize" in done.stdout


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--train", "0"], "--train must be an integer >= 1"),
        (["--test", "6"], "--test must be a multiple of 4"),
        (["--target-train", "500"], "--target-train must be between 0"),
        (["--machines", "pump"], "--machines names unknown type(s) 'pump'"),
    ],
)
def test_synth_errors_name_the_flag_not_the_argument(tmp_path, args, needle):
    r = run("synth", str(tmp_path / "out"), *args)
    assert r.exit_code == 2, r.output
    assert needle in r.output
    assert "n_train" not in r.output and "target_train" not in r.output
    assert not (tmp_path / "out").exists()


def test_commands_are_registered_in_one_place():
    """Every command module's functions are in the app; nothing registers on import."""
    import asdcli.cli as cli

    names = {c.name for c in cli.app.registered_commands}
    assert names == {
        "synth",
        "featurize",
        "train",
        "score",
        "evaluate",
        "report",
        "tune",
        "serve",
        "watch",
        "history",
        "demo",
        "config",
    }


@pytest.mark.parametrize(
    "argv, command",
    [
        (["featurize", "data"], "featurize"),
        (["--log-level", "DEBUG", "train", "fc-ae"], "train"),
        (["--log-level=INFO", "-c", "my.yaml", "score"], "score"),
        (["--config=my.yaml", "config"], "config"),
        (["-cmy.yaml", "demo"], "demo"),
        (["--config", "featurize", "synth"], "synth"),  # a config file named like a command
        (["--help"], None),
        (["--log-level", "DEBUG"], None),
        (["fetaurize", "data"], None),  # a typo: the full app says which commands exist
        (["--bogus", "featurize"], None),
        ([], None),
    ],
)
def test_invoked_command_skips_the_root_options(argv, command):
    from asdcli.cli import invoked_command

    assert invoked_command(argv) == command


def test_a_one_command_app_parses_and_helps_as_the_full_one():
    """`main` runs the invoked command in an app of its own (a faster start): its help and
    its usage errors are the full app's."""
    from asdcli.cli import COMMANDS, build_app

    for name in COMMANDS:
        alone = build_app(name)
        assert [c.name for c in alone.registered_commands] == [name]
        for args in ([name, "--help"], [name, "--no-such-option"]):
            want, got = runner.invoke(app, args), runner.invoke(alone, args)
            assert (got.exit_code, got.output) == (want.exit_code, want.output), args


def test_main_runs_the_command_and_maps_user_errors(tmp_path, capsys):
    from asdcli.cli import main

    with pytest.raises(SystemExit) as done:
        main(["--log-level", "INFO", "featurize", str(tmp_path / "missing")])
    assert done.value.code == 2
    assert "missing" in capsys.readouterr().err
    with pytest.raises(SystemExit) as done:
        main(["fetaurize"])
    assert done.value.code == 2
    assert "featurize" in capsys.readouterr().err  # click's "did you mean"


def test_invoked_command_knows_every_root_option_that_takes_a_value():
    """A root option added later must be added to the list that skips its value."""
    import typer.main

    from asdcli.cli import _ROOT_VALUED

    group = typer.main.get_command(app)
    valued = {o for p in group.params if not getattr(p, "is_flag", False) for o in p.opts}
    assert valued == set(_ROOT_VALUED)

"""Broken installs and broken pipes are not "bugs in asd"; the help shows the real defaults."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import pytest
from conftest import write_clip
from typer.testing import CliRunner

from asdcli.cli import app
from asdcli.environment import diagnose, pinned_requirements
from asdcli.settings import Settings, default_value

runner = CliRunner()

# Makes `import torchaudio` fail as a torchaudio built for another torch does.
_BROKEN_TORCHAUDIO = textwrap.dedent(
    """
    import sys
    from importlib.abc import MetaPathFinder

    class Broken(MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torchaudio" or name.startswith("torchaudio."):
                raise OSError(
                    "Could not load this library: /venv/lib/python3.11/site-packages/"
                    "torchaudio/lib/libtorchaudio.so: undefined symbol: "
                    "torch_exception_get_what_without_backtrace"
                )
            return None

    sys.meta_path.insert(0, Broken())
    from asdcli.cli import main
    main(sys.argv[1:])
    """
)


def _asd_with_broken_torchaudio(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _BROKEN_TORCHAUDIO, *args], capture_output=True, text=True
    )


@pytest.mark.parametrize("command", ["demo", "featurize"])
def test_broken_torchaudio_gives_the_short_environment_message(command, dataset, tmp_path):
    if command == "demo":  # checks its imports before any work
        args = ["demo", "--out", str(tmp_path / "demo")]
    else:  # imports torchaudio only to resample a clip at another rate
        write_clip(dataset / "fan" / "test" / "section_00_source_test_normal_0099.wav", sr=22050)
        args = ["featurize", str(dataset), "--store", str(tmp_path / "f.h5")]
    done = _asd_with_broken_torchaudio(*args)
    text = done.stdout + done.stderr
    assert done.returncode == 1, text
    assert "torchaudio cannot be loaded" in text
    assert "installation problem" in text and "pip install" in text
    assert "This is a bug in asd" not in text
    assert "Traceback" not in text
    assert len(text.strip().splitlines()) <= 4  # two lines, soft-wrapped at most once each


def test_debug_log_level_shows_the_traceback_of_an_environment_error(dataset, tmp_path):
    done = _asd_with_broken_torchaudio(
        "--log-level", "DEBUG", "demo", "--out", str(tmp_path / "demo")
    )
    assert done.returncode == 1
    assert "Traceback" in done.stderr and "torchaudio cannot be loaded" in done.stderr


def test_the_fix_names_the_pinned_pair():
    pins = pinned_requirements()
    exc = OSError("Could not load this library: /x/torchaudio/lib/libtorchaudio.so: undefined")
    message = diagnose(exc)
    assert message is not None
    # The fix installs exactly the versions asd declares, both of the pair.
    assert pins["torchaudio"] in message and pins["torch"] in message
    assert re.fullmatch(r"torch==\d+\.\d+\.\d+", pins["torch"])  # one exact version, no range


@pytest.mark.parametrize(
    "exc, package",
    [
        (ModuleNotFoundError("No module named 'h5py'", name="h5py"), "h5py"),
        (ImportError("cannot load", name="soundfile"), "soundfile"),
        (OSError("cannot load library 'libsndfile.so'"), None),  # no package named: not ours
        (OSError(28, "No space left on device"), None),
        (ValueError("torchaudio/"), None),  # not an import failure at all
        (ModuleNotFoundError("No module named 'yaml'", name="yaml"), None),
    ],
)
def test_diagnose_recognises_only_the_compiled_dependencies(exc, package):
    message = diagnose(exc)
    if package is None:
        assert message is None
    else:
        assert message is not None and message.startswith(f"{package} cannot be loaded")


def test_train_help_shows_defaults_from_the_settings_model():
    r = runner.invoke(app, ["train", "--help"], terminal_width=200)
    assert r.exit_code == 0
    assert default_value("train.epochs") == Settings().train.epochs == 30
    lines = {line.split()[1]: line for line in r.output.splitlines() if line[2:4] == "--"}
    for flag, key in [
        ("--epochs", "train.epochs"),
        ("--batch-size", "train.batch_size"),
        ("--lr", "train.learning_rate"),
        ("--seed", "train.seed"),
        ("--store", "paths.store"),
    ]:
        assert f"[default: {default_value(key)}]" in lines[flag], lines[flag]
    assert "Maximum epochs ." not in r.output  # the bracket was once swallowed as markup


@pytest.mark.parametrize("args", [["train", "--help"], ["--help"], ["config"]])
def test_a_closed_pipe_ends_quietly(args, tmp_path):
    cmd = " ".join([sys.executable, "-m", "asdcli", *args]) + " | head -1 > /dev/null"
    done = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, cwd=tmp_path)
    assert done.stderr == "", done.stderr

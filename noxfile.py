"""Project checks: `nox -s tests`, `nox -s lint`, `nox -s typecheck`; `nox -s tests_latest` by hand.

Every session installs from `constraints.txt`, the tested versions of every dependency, so a new
release upstream cannot break CI or a contributor's run. `tests_latest` is the exception: it runs
the suite against the newest versions that pyproject.toml allows, to see drift before users do.
Refresh the lock with `nox -s lock` after a dependency change, then run `nox -s tests`.
"""

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True

PYPROJECT = nox.project.load_toml("pyproject.toml")
CONSTRAINTS = ("-c", "constraints.txt")


def _group(name: str) -> list[str]:
    return nox.project.dependency_groups(PYPROJECT, name)


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite; extra arguments go to pytest (e.g. `nox -s tests -- -m "not slow"`)."""
    session.install(*CONSTRAINTS, "-e", ".", *_group("test"))
    session.run("pytest", *session.posargs)


@nox.session
def tests_latest(session: nox.Session) -> None:
    """The suite against the newest releases pyproject.toml admits (not run in CI)."""
    session.install("--upgrade", "--upgrade-strategy", "eager", "-e", ".", *_group("test"))
    session.run("pip", "list", silent=False)
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and format check."""
    session.install(*CONSTRAINTS, "ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy (strict) over the package."""
    session.install(*CONSTRAINTS, "-e", ".", *_group("typecheck"))
    session.run("mypy", "asdcli", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks (`nox -s bench -- --quick` is the smoke test CI runs)."""
    session.install(*CONSTRAINTS, "-e", ".", *_group("bench"))
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session(venv_backend="venv", reuse_venv=False)
def lock(session: nox.Session) -> None:
    """Rewrite constraints.txt from a fresh install of the package and every dependency group."""
    groups = [g for name in ("test", "bench", "typecheck", "lint") for g in _group(name)]
    session.install("-e", ".", *groups)
    frozen = session.run("pip", "freeze", "--exclude-editable", silent=True) or ""
    lines = sorted(
        line for line in frozen.splitlines() if line and not line.startswith(("-e", "asdcli"))
    )
    header = (
        "# Tested versions of every dependency; CI and every nox session install with -c.\n"
        "# Written by `nox -s lock`; do not edit by hand.\n"
    )
    with open("constraints.txt", "w", encoding="utf-8") as fh:
        fh.write(header + "\n".join(lines) + "\n")

"""`asd tune`: hyper-parameter search with Optuna, resumable and parallel.

* :mod:`asdcli.tune.study`: :func:`~asdcli.tune.study.run_study` (the study runner, the
  objective, worker processes, the holdout score and the outputs) and
  :func:`~asdcli.tune.study.list_studies` (for `asd report`);
* :mod:`asdcli.tune.space`: a detector's search space and one trial's settings;
* :mod:`asdcli.tune.holdout`: the stratified holdout and scores over a clip subset;
* :mod:`asdcli.tune.storage`: the Optuna storage a string names, and trials whose process died;
* :mod:`asdcli.tune.settings`: the ``tune:`` settings section (no optuna import);
* :mod:`asdcli.cli.tune`: the ``asd tune`` command and the study table of `asd report`.

Nothing is imported here, so that the CLI can register the command without loading optuna.
"""

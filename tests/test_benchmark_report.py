"""The benchmark's report (`python -m benchmarks`): what it says about where it ran."""

from benchmarks.__main__ import _cpu_model, load_warning, markdown


def test_the_report_names_the_machine_and_warns_of_background_load():
    run = {
        "machine": {"cpu": "Example CPU 9000", "cpus": 2, "python": "3.11.7"},
        "background_load_cores": {"featurize": 0.0, "end": 0.0},
    }
    assert markdown(run).startswith("Machine: Example CPU 9000, 2 CPUs, Python 3.11.7.")
    assert load_warning(run) == ""
    busy = {**run, "background_load_cores": {"featurize": 0.9, "end": 0.0}}
    assert "unreliable" in markdown(busy)
    assert "Machine:" not in markdown({"background_load_cores": {}})  # older results


def test_the_cpu_model_is_read_from_linux():
    model = _cpu_model()
    try:
        with open("/proc/cpuinfo") as f:
            listed = "model name" in f.read()
    except OSError:
        listed = False
    assert bool(model) == listed
    assert "\n" not in model and not model.startswith(" ")

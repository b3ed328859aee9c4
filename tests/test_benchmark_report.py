"""The benchmark's report (`python -m benchmarks`): what it says about where it ran."""

from benchmarks.__main__ import cpu_model, load_warning, markdown


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


def test_the_cpu_model_is_read_from_linux(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Example CPU @ 2.30GHz\n"
        "\nprocessor\t: 1\nmodel name\t: Example CPU @ 2.30GHz\n"
    )
    assert cpu_model(info) == "Example CPU @ 2.30GHz"
    info.write_text("processor\t: 0\nvendor_id\t: ARM\n")  # no model name line
    assert cpu_model(info) == ""
    assert cpu_model(tmp_path / "missing") == ""


def test_the_report_shows_how_far_the_interleaved_runs_lay_apart():
    from benchmarks.__main__ import _spread_line

    f = {
        "workers_2": {"clips_per_s": 544.0, "all_clips_per_s": [449.4, 514.6, 544.0]},
        "librosa_reference": {"clips_per_s": 173.0, "all_clips_per_s": [121.9, 173.0]},
        "command_workers_2": {"clips_per_s": 483.0},  # an older result: one run, no list
    }
    assert _spread_line(f) == (
        "Runs (clips/s, slowest-fastest): 2 workers 449-544, librosa 122-173."
    )
    assert _spread_line({}) == ""


def test_the_detector_table_counts_page_faults_where_the_run_did():
    from benchmarks.__main__ import DETECTOR_COLUMNS, _detector_rows

    scored = {"fit_s": 3.0, "epoch_s": 1.5, "latency_ms_median": 12.34, "latency_ms_p95": 20.0}
    run = {
        "detectors": {
            "fc-ae": {**scored, "faults_per_clip": 1675.4},
            "lstm-ae": scored,  # an older result, from before faults were counted
            "ensemble": {"skipped": "made of trained runs"},
        }
    }
    rows = _detector_rows(run)
    assert rows[0] == ["fc-ae", "3.0", "1.50", "12.3", "20.0", "1675"]
    assert rows[1][-1] == "-"
    assert rows[2] == ["ensemble"] + ["-"] * (len(DETECTOR_COLUMNS) - 1)
    assert all(len(r) == len(DETECTOR_COLUMNS) for r in rows)

"""The line a chapter prints next to its timings: date, CPU, cores, versions."""
import datetime as dt
import re

from sparse_core.course.machine import cpu_model, measured_on


def test_cpu_model_reads_the_model_name(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\nflags\t: fpu\n")
    assert cpu_model(info) == "AMD EPYC 7B13"


def test_cpu_model_without_cpuinfo_is_still_a_name(tmp_path):
    assert cpu_model(tmp_path / "missing")


def test_measured_on_names_the_utc_date_the_cores_and_the_versions():
    import numpy
    import torch

    when = dt.datetime(2026, 12, 3, 23, 30, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    line = measured_on(when)
    assert line.startswith("measured on 2026-12-04 (UTC), on ")  # 23:30 at UTC-5 is the next day in UTC
    assert re.search(r", \d+ CPU cores?; Python \d+\.\d+", line)
    assert f"numpy {numpy.__version__}" in line and f"torch {torch.__version__.split('+')[0]}" in line

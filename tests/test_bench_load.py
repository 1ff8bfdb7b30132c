"""advisor.bench.load without a server: the phase driver, its figures, quantiles, connection-string helpers."""

from __future__ import annotations

import threading

import psycopg
import pytest

from advisor.bench.load import (
    Phase,
    add_options,
    conninfo_params,
    latency_quantiles,
    rounded,
    run_phase,
    scrubber,
)
from advisor.bench.quiet import Logging, quiet_dsn
from advisor.errors import AdvisorError


def test_quantiles_are_exact():
    p50, p95, p99, mx = latency_quantiles([i / 1000 for i in range(1, 101)])  # 1..100 ms
    assert (round(p50, 6), round(p95, 6), round(p99, 6), mx) == (50.5, 95.05, 99.01, 100.0)
    assert latency_quantiles([]) == (None, None, None, None)
    assert latency_quantiles([0.002]) == (2.0, 2.0, 2.0, 2.0)
    assert rounded(None) is None and rounded(1.23456) == 1.235


def test_a_request_budget_is_shared_by_the_threads_and_every_argument_comes_from_its_rng():
    seen: list[int] = []
    lock = threading.Lock()

    def request(x: int) -> None:
        with lock:
            seen.append(x)

    phase = run_phase(request, 3, 30.0, 10, lambda rng: rng.randint(1, 5), 5.0)
    assert len(phase.latencies) == 10 and len(seen) == 10 and set(seen) <= {1, 2, 3, 4, 5}
    assert (phase.errors, phase.timeouts, phase.first_error, phase.stuck) == (0, 0, None, 0)
    assert phase.elapsed_s < 30.0


def test_failures_are_counted_never_raised_and_timeouts_apart():
    calls = iter(range(1000))

    def request(_: None) -> None:
        i = next(calls)
        if i == 0:
            raise ValueError("first\nsecond line")
        if i == 1:
            raise psycopg.errors.QueryCanceled("canceling statement due to statement timeout")

    phase = run_phase(request, 1, 30.0, 5, lambda rng: None, 5.0)
    assert (len(phase.latencies), phase.errors, phase.timeouts) == (3, 1, 1)
    assert phase.first_error == "ValueError: first"


def test_a_phase_ends_with_its_duration():
    phase = run_phase(lambda _: None, 2, 0.05, None, lambda rng: None, 5.0)
    assert len(phase.latencies) > 0 and 0.05 <= phase.elapsed_s < 2.0 and phase.stuck == 0


def test_figures_are_the_arm_fields():
    assert Phase([0.001, 0.003], 0, 0, 2.0, None, 0).figures() == {
        "requests": 2, "elapsed_s": 2.0, "ops_per_s": 1.0,
        "p50_ms": 2.0, "p95_ms": 2.9, "p99_ms": 2.98, "max_ms": 3.0}
    assert Phase([], 1, 0, 0.0, "x", 0).figures() == {
        "requests": 0, "elapsed_s": 0.0, "ops_per_s": 0.0,
        "p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}


def test_connection_string_helpers():
    params = conninfo_params("host=h dbname=d options='-c a=1'")
    assert params == {"host": "h", "dbname": "d", "options": "-c a=1"}
    assert add_options(params, "-c b=2")["options"] == "-c a=1 -c b=2"
    assert add_options({"host": "h"}, "-c b=2") == {"host": "h", "options": "-c b=2"}
    assert params["options"] == "-c a=1"  # not changed in place
    with pytest.raises(AdvisorError) as err:
        conninfo_params("postgresql://u:pw-xyz@h/d?nosuch=1")
    assert "pw-xyz" not in str(err.value)
    scrub = scrubber("postgresql://u:pw-one@h/d", None, "host=h password=pw-two")
    assert "pw-one" not in scrub("a pw-one b pw-two") and "pw-two" not in scrub("pw-two")


def test_what_statement_logging_is_left_on_and_how_it_is_turned_off():
    on = {"log_min_duration_statement": "0", "log_statement": "mod", "log_duration": "off",
          "auto_explain.log_min_duration": "250"}
    plain = Logging("app user", on, frozenset())
    # mod logs no SELECT; 0 ms logs every statement; auto_explain logs the plans over 250 ms
    assert plain.quieted == {} and set(plain.left_on) == {"log_min_duration_statement", "auto_explain.log_min_duration"}
    assert plain.logs_all and plain.grant() == (
        'GRANT SET ON PARAMETER log_min_duration_statement, auto_explain.log_min_duration TO "app user"')
    granted = Logging("app", on, frozenset({"log_min_duration_statement"}))
    assert granted.quieted == {"log_min_duration_statement": "-1"} and not granted.logs_all
    assert granted.threshold_ms == 250 and granted.describe() == "auto_explain.log_min_duration = 250 ms"
    superuser = Logging("postgres", on, frozenset(on))
    assert superuser.left_on == {} and set(superuser.quieted) == set(on) - {"log_duration"}
    dsn = quiet_dsn("postgresql://u@h/d?options=-c%20work_mem%3D8MB", superuser)
    assert conninfo_params(dsn)["options"] == ("-c work_mem=8MB -c log_min_duration_statement=-1 "
                                               "-c log_statement=none -c auto_explain.log_min_duration=-1")
    assert quiet_dsn("postgresql://u@h/d", plain) == "postgresql://u@h/d"

"""Suite-wide settings: which tests are the slow ones.

``pytest -m "not slow"`` is the edit loop (well under a minute): everything that runs in this
process, including whole stations over loopback (redline.testing.StationPair). The README's test
command runs everything, the slow ones too: real station processes, kill -9, chaos runs, the
browser. A module is slow as a whole when most of its tests start real processes; single slow
tests elsewhere carry ``@pytest.mark.slow`` themselves.
"""

from __future__ import annotations

import pytest
from hypothesis import settings

from tests.pg import pg_url, postgres_server  # noqa: F401  (a real PostgreSQL server: tests/pg.py)

SLOW_MODULES = {
    "test_attacks", "test_chaos", "test_cli", "test_clock_skew", "test_console", "test_crash",
    "test_e2e_attacks_ops", "test_e2e_kill", "test_e2e_line", "test_e2e_notices", "test_e2e_ops",
    "test_e2e_ops_crash", "test_e2e_scenario", "test_storage_faults", "test_store_locks", "test_backup",
    "test_metrics", "test_startup", "test_console_voice", "test_doctor", "test_verify_parallel",
}  # fmt: skip
# Single tests that start real processes in otherwise fast modules.
SLOW_TESTS = {
    "test_real_traffic_validates_against_the_schemas", "test_cli_export_and_verify_on_another_machine",
    "test_cli_verify_exits_0_on_a_good_store_and_2_on_a_tampered_one",
    "test_input_errors_exit_1_and_say_so_in_one_line",
}  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = item.module.__name__.rpartition(".")[2] if item.module is not None else ""
        if module in SLOW_MODULES or getattr(item, "originalname", item.name) in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)


# Hypothesis fails an example that takes over 200 ms by default: a timed assertion, which this
# project's tests do not make (timings live in bench/). On a loaded machine it failed
# test_canonical's random-bytes test with nothing wrong in the code.
settings.register_profile("redline", deadline=None)
settings.load_profile("redline")

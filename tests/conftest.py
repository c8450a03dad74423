"""Test-session setup shared by every test module."""

import faulthandler
import os
import signal

import pytest

# A test run started in the background of a non-interactive shell (`make test &`, a CI
# step launched that way) inherits SIGINT as ignored; Python then installs no
# KeyboardInterrupt handler, `_thread.interrupt_main()` does nothing, and every child
# process inherits the ignored signal. The Ctrl-C tests need the default back.
signal.signal(signal.SIGINT, signal.default_int_handler)


# --- tiers -----------------------------------------------------------------------------------
# `make unit` runs the tests marked `unit`: every test without one of these markers, that is
# one that needs nothing beyond the virtual environment (no Java, TorchServe, Chromium, wrk
# or Ray). A test that starts one of them carries its marker (pyproject.toml lists them).
NEEDS_MORE = ("e2e", "java", "chromium", "wrk", "ray")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if not any(item.get_closest_marker(name) for name in NEEDS_MORE):
            item.add_marker(pytest.mark.unit)


@pytest.fixture(autouse=True)
def _unit_tests_start_no_torchserve(request, monkeypatch):
    """A test of the unit tier that gets as far as starting a real TorchServe (its fake
    patched where the code no longer looks, after a refactor) fails there instead of
    starting one on a machine that may have no Java."""
    if request.node.get_closest_marker("unit") is None:
        return
    try:
        from sweeper.torchserve.process import TorchServe
    except ImportError:
        return

    def refuse(self):
        raise AssertionError("a test of the unit tier started a real TorchServe: fake it, or mark the test e2e")

    monkeypatch.setattr(TorchServe, "start", refuse)


# --- a backstop behind pytest-timeout ---------------------------------------------------------
# pytest-timeout's signal method (pyproject.toml) fails a test that runs too long, and its
# teardown still stops what it started. A test stuck where SIGALRM's handler never runs (a
# thread that holds the GIL in C, a main thread blocked in C code that retries on EINTR) would
# still hang the run: faulthandler's watchdog, a C thread that needs no GIL, then writes every
# thread's stack to the terminal and ends pytest BACKSTOP_S after the test's own timeout.
# (faulthandler has one such timer per process: pytest's faulthandler_timeout option would
# share it, so it stays unset.)
BACKSTOP_S = 60
_terminal = None  # the real stderr, not pytest's capture of it


def pytest_configure(config):
    global _terminal
    capman = config.pluginmanager.getplugin("capturemanager")
    if capman is not None:
        capman.suspend_global_capture()
    try:
        _terminal = os.fdopen(os.dup(2), "w")
    finally:
        if capman is not None:
            capman.resume_global_capture()


def _timeout_of(item) -> float:
    """The test's pytest-timeout timeout (marker, --timeout, PYTEST_TIMEOUT or the ini
    value); 0 when there is none or the plugin is not installed."""
    try:
        import pytest_timeout

        return float(pytest_timeout._get_item_settings(item).timeout or 0)
    except Exception:  # no plugin, or another version of its internals: no backstop
        return 0.0


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    timeout = _timeout_of(item)
    if timeout > 0 and _terminal is not None:
        faulthandler.dump_traceback_later(timeout + BACKSTOP_S, exit=True, file=_terminal)
    try:
        yield
    finally:
        if timeout > 0 and _terminal is not None:
            faulthandler.cancel_dump_traceback_later()

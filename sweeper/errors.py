"""The exception tree of the sweeper.

    SweeperError                  base: everything the CLI turns into one line + exit code
    ├── SpecError                 a sweep file is malformed or breaks a rule (exit 2)
    ├── EnvironmentProblem        something outside Python is missing or unusable:
    │                             no java, port in use, unwritable output dir (exit 2)
    ├── ServerError               TorchServe did not start, became unhealthy or died
    │   └── ServerNotReady        readiness timed out
    ├── ManagementError           the management API refused a request
    ├── LoadError                 the load engine failed (not: requests that failed)
    ├── RequestsFailed            too few requests got the expected answer (a failed trial)
    └── Interrupted               SIGINT/SIGTERM arrived during a sweep

A failed *trial* is data (a row with status=failed), not an exception that escapes
run_sweep. Programming errors (TypeError, ...) are never caught and propagate.
"""

from __future__ import annotations


class SweeperError(Exception):
    """Base class. ``str(err)`` is the one line the user sees."""

    exit_code = 1


class SpecError(SweeperError):
    exit_code = 2

    def __init__(self, source: str, key: str, rule: str):
        self.source, self.key, self.rule = source, key, rule
        super().__init__(f"{source}: {key}: {rule}" if key else f"{source}: {rule}")


class EnvironmentProblem(SweeperError):
    exit_code = 2


class ServerError(SweeperError):
    def __init__(self, message: str, log_tail: str = "", partial_row: dict | None = None):
        super().__init__(message)
        self.log_tail = log_tail
        self.partial_row = partial_row  # what a trial measured before it failed, if anything


class ServerNotReady(ServerError):
    pass


class ManagementError(SweeperError):
    pass


class LoadError(SweeperError):
    pass


class Interrupted(SweeperError):
    exit_code = 130

    def __init__(self, signum: int = 2):
        self.signum = signum
        super().__init__(f"interrupted by signal {signum}")
        self.exit_code = 128 + signum


class RequestsFailed(SweeperError):
    """The server answered, but not as the sweep expects (settings.min_success_rate)."""

    def __init__(self, message: str, partial_row: dict | None = None):
        super().__init__(message)
        self.partial_row = partial_row

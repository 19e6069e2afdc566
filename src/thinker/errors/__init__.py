"""User-facing errors: one line, a stage-specific exit code, no traceback.

Every error a user can cause by input (a bad override, a missing file, a missing credential) is raised as
a ThinkerError. The entry points print `[thinker] error: <what>, <where>, <what to do>` and exit with the
code of the stage that failed, so scripts and CI can tell a data problem from a training crash.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0
    CONFIG = 2  # composing or checking the config (types, ranges, cross-field rules, credentials)
    VALIDATE = 3  # dataset schema or pytest gate failed
    TRAIN = 4
    EVAL = 5
    RECORD = 6  # writing the run record or registry
    NOT_AVAILABLE = 7  # the chosen option composes but its implementation has not landed yet
    INTERRUPTED = 130  # SIGINT / SIGTERM (128 + SIGINT, the shell convention)


STAGE_EXIT_CODES = {
    "config": ExitCode.CONFIG,
    "validate": ExitCode.VALIDATE,
    "train": ExitCode.TRAIN,
    "eval": ExitCode.EVAL,
    "record": ExitCode.RECORD,
}


ERROR_PREFIX = "[thinker] error: "


class ThinkerError(Exception):
    """An error the user can fix. `what`, `where` and `fix` make up the one-line message."""

    def __init__(self, what: str, where: str, fix: str, *, stage: str = "config", code: ExitCode | None = None):
        self.what = what
        self.where = where
        self.fix = fix
        self.stage = stage
        self.exit_code = code if code is not None else STAGE_EXIT_CODES.get(stage, ExitCode.CONFIG)
        super().__init__(self.line())

    def line(self) -> str:
        return f"{ERROR_PREFIX}{self.what}, {self.where}, {self.fix}"


class NotAvailableYet(ThinkerError):
    """A config option that composes but whose code comes in a later release. Never pretend to run."""

    def __init__(self, option: str, what: str, fix: str):
        super().__init__(
            f"{what} is not available yet in this version of thinker",
            option,
            fix,
            stage="config",
            code=ExitCode.NOT_AVAILABLE,
        )

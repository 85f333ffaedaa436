"""Errors a user can act on. The CLI prints their message and exits 2; anything else is a bug."""


class OctbenchError(Exception):
    """Invalid input: a suite, a plugin, a parameter or a data file. The message names the problem and the fix."""


class SuiteError(OctbenchError):
    """The suite file is malformed or names something that does not exist."""


class PluginError(OctbenchError):
    """A plugin failed to load, registered something invalid, or got bad parameters."""


class DataError(OctbenchError):
    """A data file is missing, unreadable, or fails its checksum."""


class CellFailed(Exception):
    """A cell could not finish (plugin error, NaN loss, out of memory); recorded, the suite goes on."""


class Interrupted(BaseException):
    """The whole run was asked to stop (Ctrl-C or SIGTERM). Like KeyboardInterrupt, no ``except Exception`` stops it:
    finished cells are kept, the run is marked interrupted, and the command exits 128 + the signal number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

"""The package's own error type: bad input is reported with the argument it concerns."""


class InputError(ValueError):
    """Invalid input. ``argument`` names the offending argument; the message says how to fix it."""

    def __init__(self, argument: str, message: str):
        self.argument = argument
        super().__init__(f"{argument}: {message}")


class DivergenceError(RuntimeError):
    """A run blew up. ``step`` is the first step with a non-finite or runaway value and
    ``partial`` holds everything computed before it (a Trajectory or SimResult)."""

    def __init__(self, message: str, step: int, partial=None):
        self.step, self.partial = step, partial
        super().__init__(message)

"""The package's own error type: bad input is reported with the argument it concerns."""


class InputError(ValueError):
    """Invalid input. ``argument`` names the offending argument; the message says how to fix it."""

    def __init__(self, argument: str, message: str):
        self.argument = argument
        super().__init__(f"{argument}: {message}")

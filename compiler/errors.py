"""Errors shared by every stage.

`TradyError` is the one exception the CLI turns into a single line on stderr and exit code 2.
Its message must name the file, layer or field that is wrong, and what was expected.
"""


class TradyError(Exception):
    """Bad input or a failed check, reported to the user as one line."""

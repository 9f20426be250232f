"""The one exception type that the command line reports as a single line, without a traceback."""


class DnnprobeError(Exception):
    """Bad input or environment: the message names the file, row, key or value at fault."""

"""The one exception type for mistakes a user can fix (a bad flag, path or file)."""


class UserInputError(ValueError):
    """A problem with the user's input: the message names the flag or path, what was found and what
    was expected. Entry scripts print it without a traceback and exit with status 2."""

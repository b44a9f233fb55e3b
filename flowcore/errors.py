"""Errors a user can fix (bad flags, unwritable folders): the CLI prints them as one line."""


class UserError(Exception):
    """A problem with the user's input: printed as `error: <message>`, exit code 2."""

"""The one exception type layergraft raises for problems the user can fix."""


class LayergraftError(Exception):
    """A user-facing error whose message is one line saying what went wrong and what to do.

    The CLI prints these without a traceback, so anything raised as a LayergraftError must be
    actionable on its own; programming errors stay ordinary exceptions.
    """

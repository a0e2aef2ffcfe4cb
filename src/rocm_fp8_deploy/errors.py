"""The one exception the deploy side raises for conditions a user must fix."""


class DeployError(Exception):
    """A refusal with one message saying what is missing and how to fix it.

    ``tasks.py`` turns it into ``invoke.Exit`` so the user sees the message, not a traceback.
    """

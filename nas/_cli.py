"""Shared CLI plumbing: turn library errors into one stderr line and exit code 2."""
import functools
import sys

import click

from .errors import OneShotError

EXIT_USER_ERROR = 2


def handle_errors(func):
    """Decorator for click commands: ``OneShotError`` -> ``error: <message>``, exit 2."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except OneShotError as err:
            click.echo('error: %s' % err, err=True)
            sys.exit(EXIT_USER_ERROR)
    return wrapper

"""Shared CLI plumbing: turn library errors into one stderr line and exit code 2."""
import functools
import re
import sys

import click

from nas.errors import OneShotError

EXIT_USER_ERROR = 2
_SUFFIX = {'': 1.0, 'K': 1e3, 'M': 1e6, 'G': 1e9}


def parse_amount(value, what):
    """'300M' -> 3e8, '3.5M' -> 3.5e6 (suffixes K, M, G); None stays None."""
    if value is None:
        return None
    match = re.match(r'^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([kKmMgG]?)\s*$', str(value))
    if not match:
        raise OneShotError('cannot read %s limit %r; write e.g. 300M or 3.5M' % (what, value))
    return float(match.group(1)) * _SUFFIX[match.group(2).upper()]


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

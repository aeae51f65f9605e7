"""What every command shares, so that one rule holds for all eight of them:

- any error a user can cause -- a library ``OneShotError`` or click's own (a bad option value, a
  missing argument) -- is one ``error: ...`` line on stderr and exit code 2 (``Command``,
  ``Group``);
- numeric options take their values through the ranged types below: 0, negatives, NaN and
  infinities are refused where they make no sense, and "use the default" is the option's
  absence, never 0.
"""
import contextlib
import functools
import math
import re

import click

from nas.errors import OneShotError
from zoo.loading import PRETRAINED

EXIT_USER_ERROR = 2
_SUFFIX = {'': 1.0, 'K': 1e3, 'M': 1e6, 'G': 1e9}
_SIZE_MULTIPLE = 32  # five stride-2 stages (SPEC §1.1)


class UserError(click.ClickException):
    """The one way an error reaches the user: ``error: <message>``, exit code 2."""
    exit_code = EXIT_USER_ERROR

    def show(self, file=None):
        click.echo('error: %s' % self.format_message(), err=True)


@contextlib.contextmanager
def _one_line():
    try:
        yield
    except click.exceptions.NoArgsIsHelpError:
        raise  # a bare group name prints its help
    except click.UsageError as err:
        raise UserError(err.format_message()) from None
    except OneShotError as err:
        raise UserError(str(err)) from err


class _OneLineErrors:
    """Parsing (``make_context``) and running (``invoke``) both end in one line on error."""

    def make_context(self, info_name, args, parent=None, **extra):
        with _one_line():
            return super().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx):
        with _one_line():
            return super().invoke(ctx)


class Command(_OneLineErrors, click.Command):
    """``@click.command(cls=Command)``."""


class Group(_OneLineErrors, click.Group):
    """``@click.group(cls=Group)``; its subcommands are ``Command``s."""
    command_class = Command


def weights_options(func):
    """``--params FILE`` / ``--pretrained``, passed to the command as the one ``weights``
    argument of ``zoo.load_model``; with neither, the store's weights when it has the model's,
    else random weights with a warning naming the model."""
    @functools.wraps(func)
    def wrapper(*args, params=None, pretrained=False, **kwargs):
        if params and pretrained:
            raise click.UsageError('give either --pretrained or --params, not both')
        return func(*args, weights=PRETRAINED if pretrained else params, **kwargs)
    wrapper = click.option('--pretrained', is_flag=True,
                           help="Require the model store's verified weights.")(wrapper)
    return click.option('--params', type=click.Path(dir_okay=False), default=None,
                        help='Weights file for MODEL (checked against its architecture) '
                             "[default: the store's, else random with a warning].")(wrapper)


# ------------------------------------------------------------------ numeric option types


class Real(click.FloatRange):
    """``click.FloatRange`` that also refuses NaN and infinities (range checks let NaN by)."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail('%s is not a finite number' % value, param, ctx)
        return number


class InputSize(click.ParamType):
    """Image height = width: a multiple of 32 from 32 to 2048."""
    name = 'size'

    def convert(self, value, param, ctx):
        size = click.INT.convert(value, param, ctx)
        if not _SIZE_MULTIPLE <= size <= 2048 or size % _SIZE_MULTIPLE:
            self.fail('%s is not a multiple of %d from %d to 2048; use e.g. 224'
                      % (value, _SIZE_MULTIPLE, _SIZE_MULTIPLE), param, ctx)
        return size


class Amount(click.ParamType):
    """A positive count such as 300M or 3.5M (suffixes K, M, G) -> float."""
    name = 'amount'

    def convert(self, value, param, ctx):
        try:
            return parse_amount(value, 'the')
        except OneShotError:
            self.fail('%r is not a positive amount; write e.g. 300M or 3.5M' % (value,),
                      param, ctx)


def parse_amount(value, what):
    """'300M' -> 3e8, '3.5M' -> 3.5e6 (suffixes K, M, G); None stays None; 0 is refused."""
    if value is None:
        return None
    match = re.match(r'^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([kKmMgG]?)\s*$', str(value))
    amount = float(match.group(1)) * _SUFFIX[match.group(2).upper()] if match else math.nan
    if not 0 < amount < math.inf:
        raise OneShotError('cannot read %s limit %r; write a positive amount such as 300M or '
                           '3.5M' % (what, value))
    return amount


COUNT = click.IntRange(min=1)  # how many of something, at least one
OFF_OR_COUNT = click.IntRange(min=0)  # 0 switches the feature off (documented per option)
SEED = click.IntRange(0, 2 ** 32 - 1)  # numpy's seed range
BATCH = click.IntRange(1, 4096)
THREADS = click.IntRange(1, 1024)
RUNS = click.IntRange(1, 10000)  # timed runs: beyond 10^4 a measurement never ends
INPUT_SIZE = InputSize()
POSITIVE = Real(min=0, min_open=True)
NON_NEGATIVE = Real(min=0)
PROBABILITY = Real(0, 1)
AMOUNT = Amount()

# The same option spelled once for every command that has it.
json_option = click.option('--json', 'as_json', is_flag=True, help='Print JSON.')
root_option = click.option('--root', default=None,
                           help='Model store / user zoo directory (default $MXNET_HOME/models).')

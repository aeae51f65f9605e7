"""One rule for every command: each numeric option of the eight commands (subcommands included)
is fed 0, -1, NaN and a huge value. Each value is either refused while the options are parsed --
one ``error:`` line naming the option, exit code 2, no traceback, nothing written, before any
work starts -- or accepted because it means something, decided below option by option."""
import importlib
import os
import re

import click
import pytest
from click.testing import CliRunner

from cli.common import Amount, Command, Group, InputSize

SETUP = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'setup.py')
VALUES = {'zero': '0', 'negative': '-1', 'nan': 'nan', 'huge': '1000000000000'}

# What each accepted value means; every other (option, value) pair must be refused.
ACCEPTED = {
    ('nas-train', '--seed'): {'zero'},
    ('nas-train', '--lr'): {'huge'},  # the run diverges and stops with one error line
    ('nas-train', '--wd'): {'zero', 'huge'},  # 0: no weight decay
    ('nas-train', '--warmup-epochs'): {'zero', 'huge'},  # 0: no warm-up
    ('nas-train', '--label-smoothing'): {'zero'},  # 0: plain cross-entropy
    ('nas-train', '--epochs'): {'huge'},
    ('nas-train', '--checkpoint-every'): {'zero', 'huge'},  # 0: only at epoch ends
    ('nas-train', '--keep'): {'huge'},
    ('nas-train', '--data-workers'): {'zero'},  # 0: load in the training process
    ('nas-train', '--epoch-start-cs'): {'zero', 'huge'},  # 0: channel selection from the start
    ('nas-train', '--val-paths'): {'huge'},
    ('nas-train', '--recal-images'): {'huge'},  # capped by the training split
    ('nas-train', '--max-flops'): {'huge'},  # limits that every path meets
    ('nas-train', '--min-flops'): {'huge'},  # an infeasible box is refused before training
    ('nas-train', '--max-params'): {'huge'},
    ('nas-train', '--min-params'): {'huge'},
    ('nas-search', '--seed'): {'zero'},
    ('nas-search', '--max-flops'): {'huge'},
    ('nas-search', '--max-params'): {'huge'},
    ('nas-search', '--max-latency-ms'): {'huge'},
    ('nas-search', '--max-micronet'): {'huge'},
    ('nas-search', '--mutation-prob'): {'zero'},  # 0: crossover only
    ('nas-search', '--recalib-batches'): {'zero', 'huge'},  # 0: no BN recalibration
    ('nas-search', '--val-batches'): {'huge'},  # capped by the val split
    ('nas-search', '--generations'): {'huge'},
    ('nas-search', '--iterations'): {'huge'},
    ('nas-search', '--top-k'): {'huge'},  # every candidate
    ('nas-search', '--population'): {'huge'},  # the search library checks it against --elite
    ('nas-search', '--elite'): {'huge'},
    ('nas-search', '--max-combined'): {'huge'},
    ('nas-search', '--max-flop-ratio'): {'huge'},
    ('nas-search', '--max-param-ratio'): {'huge'},
    ('nas-search', '--balance-r'): {'huge'},  # fitness all cost, a choice of the user's
    ('nas-export', '--channel-block'): {'zero'},  # 0: no channel padding
    ('nas-export', '--opset'): {'huge'},  # export.onnx.check_opset names the supported range
    ('nas-quantize', '--opset'): {'huge'},
    ('nas-quantize', '--num-calib'): {'huge'},  # capped by the calibration data
    ('nas-quantize', '--eval-images'): {'huge'},  # capped by the val split
    ('nas-profile', '--warmup'): {'zero', 'huge'},  # 0: no untimed runs
    ('nas-profile', '--chunks'): {'huge'},
    ('nas-profile', '--calibration'): {'zero'},  # 0: no correction fitted
    ('nas-demo', '--seed'): {'zero'},
    ('nas-demo', '--max-flops'): {'huge'},
    ('nas-demo', '--supernet-epochs'): {'huge'},
    ('nas-demo', '--subnet-epochs'): {'huge'},
    ('nas-demo', '--population'): {'huge'},
    ('nas-demo', '--generations'): {'huge'},
}


def _entry_points():
    """``nas-x = cli.x:main`` from setup.py (the source of truth, installed or not)."""
    text = open(SETUP).read()
    return sorted(re.findall(r"'(nas-[a-z]+)=(cli\.[a-z_]+):main'", text))


def _commands(command, path):
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            yield from _commands(sub, path + [name])


def _is_numeric(param):
    kind = param.type
    if isinstance(kind, click.Choice):
        return all(isinstance(choice, (int, float)) for choice in kind.choices)
    return isinstance(kind, (click.types.IntParamType, click.types.FloatParamType, Amount,
                             InputSize))


def _numeric_options():
    for prog, module in _entry_points():
        main = importlib.import_module(module).main
        for path, command in _commands(main, []):
            for param in command.params:
                if isinstance(param, click.Option) and _is_numeric(param):
                    yield prog, main, path, max(param.opts, key=len), param


OPTIONS = list(_numeric_options())


def test_all_eight_commands_are_walked_and_report_errors_in_one_line():
    entry_points = _entry_points()
    assert len(entry_points) == 8
    for prog, module in entry_points:
        for path, command in _commands(importlib.import_module(module).main, []):
            assert isinstance(command, (Command, Group)), (prog, path)
    walked = {(prog, option) for prog, _, _, option, _ in OPTIONS}
    assert len(walked) >= 40
    assert set(ACCEPTED) <= walked, set(ACCEPTED) - walked  # no decision about a lost option


@pytest.mark.parametrize('prog,main,path,option,param', OPTIONS,
                         ids=['%s %s %s' % (o[0], ' '.join(o[2]), o[3]) for o in OPTIONS])
def test_numeric_option_refuses_what_makes_no_sense(tmp_path, prog, main, path, option, param):
    accepted = ACCEPTED.get((prog, option), set())
    runner = CliRunner()
    for kind, value in VALUES.items():
        if kind in accepted:
            param.type.convert(value, param, None)  # parses; what it means is tested elsewhere
            continue
        with runner.isolated_filesystem(temp_dir=tmp_path) as folder:
            result = runner.invoke(main, path + ['%s=%s' % (option, value)])
            written = os.listdir(folder)
        lines = result.stderr.strip().splitlines()
        case = '%s %s %s=%s' % (prog, ' '.join(path), option, value)
        assert result.exit_code == 2, (case, result.output)
        assert len(lines) == 1 and lines[0].startswith('error: '), (case, result.stderr)
        assert "'%s'" % option in lines[0], (case, lines[0])
        assert 'Traceback' not in result.output and not written, case


def test_click_errors_and_library_errors_are_one_line():
    from cli.train import main as train
    from cli.zoo import main as zoo_cli
    for cli, args, text in ((train, ['subnet', '--arch', 'oneshot'], "Missing option '-o'"),
                            (train, ['nope'], "No such command 'nope'"),
                            (zoo_cli, ['info', 'oneshot_s'], 'unknown model')):
        result = CliRunner().invoke(cli, args)
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1, (args, result.stderr)
        assert lines[0].startswith('error: ') and text in lines[0], lines

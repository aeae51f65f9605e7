"""Bad input across the CLIs, as one table: each case must end with exit code 2, exactly one
``error: ...`` line on stderr, no traceback, and no output file left behind."""
import json
import os
import pickle

import pytest
from click.testing import CliRunner

from cli.export import main as export_cli
from fixtures import write_image_folder, write_recordio
from nas.data import load_digits
from cli.train import main as train_cli
from cli.profile import main as profile_cli
from cli.score import main as score_cli
from cli.search import main as search_cli
from cli.zoo import main as zoo_cli


def _weights(tmp, name='oneshot'):
    import zoo
    net = zoo.get_model(name, input_size=32, classes=10)
    path = os.path.join(tmp, 'w.params')
    net.save_parameters(path)
    return path


def _corrupt(tmp):
    path = os.path.join(tmp, 'corrupt.params')
    with open(path, 'wb') as handle:
        handle.write(os.urandom(4096))
    return path


def _truncated(tmp):
    path = _weights(tmp)
    data = open(path, 'rb').read()
    with open(path, 'wb') as handle:
        handle.write(data[:len(data) // 2])
    return path


def _tampered_store(tmp):
    import zoo
    root = os.path.join(tmp, 'store')
    stored = zoo.import_weights('oneshot', _weights_full(tmp), root=root)
    data = bytearray(open(stored, 'rb').read())
    data[100] ^= 0xFF
    open(stored, 'wb').write(bytes(data))
    return root


def _weights_full(tmp):
    import zoo
    path = os.path.join(tmp, 'full.params')
    zoo.get_model('oneshot').save_parameters(path)
    return path


def _bad_arch(tmp):
    path = os.path.join(tmp, 'bad_arch.json')
    json.dump({'blocks': [0] * 7 + [4] + [0] * 12, 'channels': [0] * 20}, open(path, 'w'))
    return path


def _empty_dir(tmp):
    path = os.path.join(tmp, 'empty')
    os.makedirs(path)
    return path


def _empty_class(tmp):
    images, labels = load_digits(32, 'val')
    root = write_image_folder(os.path.join(tmp, 'folder'), images[:8], labels[:8] % 2)
    os.makedirs(os.path.join(root, 'zz_empty_class'))
    return root


def _only_non_images(tmp):
    root = os.path.join(tmp, 'texts', 'cls0')
    os.makedirs(root)
    open(os.path.join(root, 'notes.txt'), 'w').write('not an image')
    return os.path.dirname(root)


def _truncated_rec(tmp):
    images, labels = load_digits(32, 'val')
    rec = write_recordio(os.path.join(tmp, 'data'), images[:4], labels[:4])
    with open(rec, 'r+b') as handle:
        handle.truncate(10)
    return rec


def _broken_json(tmp):
    path = os.path.join(tmp, 'broken.json')
    with open(path, 'w') as handle:
        handle.write('{"blocks": [0, 1,')  # cut off, as by a full disk
    return path


def _supernet_run(tmp):
    """An untrained supernet run directory at 32 x 32 (space.json + supernet.params)."""
    from dataclasses import asdict
    from nas.network import OneShotNet
    from nas.space import SearchSpace
    space = SearchSpace(use_se=True, last_conv_after_pooling=True, input_size=32, classes=10)
    run = os.path.join(tmp, 'supernet')
    os.makedirs(run)
    net = OneShotNet(space=space)
    net.initialize()
    net.save_parameters(os.path.join(run, 'supernet.params'))
    with open(os.path.join(run, 'space.json'), 'w') as handle:
        json.dump(asdict(space), handle)
    return run


def _broken_search(tmp):
    """A search output folder whose state file was cut off."""
    out = os.path.join(tmp, 'search')
    os.makedirs(out)
    with open(os.path.join(out, 'search_state.json'), 'w') as handle:
        handle.write('{"config": {"strategy": "gen')
    return out


def _broken_checkpoint(tmp):
    """A training run whose newest checkpoint's state.json was cut off."""
    run = os.path.join(tmp, 'run')
    os.makedirs(os.path.join(run, 'checkpoints', 'ckpt-000000001'))
    with open(os.path.join(run, 'checkpoints', 'ckpt-000000001', 'state.json'), 'w') as handle:
        handle.write('{"epoch": 0, "ba')
    return run


def _fake_onnx(tmp):
    path = os.path.join(tmp, 'fake.onnx')
    open(path, 'w').write('this is not a protobuf')
    return path


OUT = '{tmp}/out.onnx'
CASES = [
    ('unknown model', zoo_cli, ['info', 'oneshot_s'], 'unknown model'),
    ('bad choice vector', score_cli, ['flops', '{bad_arch}'], 'position 7'),
    ('corrupt .params', zoo_cli, ['import', 'oneshot', '{corrupt}', '--root', '{tmp}/s'],
     'not an MXNet .params'),
    ('truncated .params', export_cli, ['--onnx', 'oneshot', '--params', '{truncated}',
                                       '--input-size', '32', '-o', OUT], 'truncated'),
    ('sha1 mismatch', export_cli, ['--onnx', 'oneshot', '--pretrained', '--root', '{tampered}',
                                   '-o', OUT], 'sha1 mismatch'),
    ('missing weights', export_cli, ['--onnx', 'oneshot', '--pretrained', '--root',
                                     '{tmp}/nothing', '-o', OUT], 'nas-zoo import'),
    ('unwritable output', export_cli, ['--onnx', 'oneshot', '--input-size', '32', '-o',
                                       '/proc/no/such/dir/x.onnx'], ''),
    ('empty dataset', train_cli, ['subnet', '--arch', 'oneshot', '--data', '{empty_dir}',
                                  '--epochs', '1', '-o', '{tmp}/run'], ''),
    ('class folder without images', train_cli, ['subnet', '--arch', 'oneshot', '--data',
                                                '{empty_class}', '--epochs', '1', '-o',
                                                '{tmp}/run'], 'zz_empty_class'),
    ('only non-image files', train_cli, ['subnet', '--arch', 'oneshot', '--data',
                                         '{non_images}', '--epochs', '1', '-o', '{tmp}/run'],
     ''),
    ('wrong input size', export_cli, ['--onnx', 'oneshot', '--input-size', '33', '-o', OUT],
     'multiple of 32'),
    ('unsupported opset', export_cli, ['--onnx', 'oneshot', '--opset', '9', '--input-size',
                                       '32', '-o', OUT], 'opset 9'),
    ('infeasible constraints', train_cli, ['supernet', '--sampler', 'constrained',
                                           '--max-flops', '1K', '--epochs', '1', '-o',
                                           '{tmp}/run'], 'infeasible'),
    ('bad flag value', profile_cli, ['--op-by-op', 'oneshot', '--runs', '0', '--quiet'], 'runs'),
    ('truncated .rec', train_cli, ['subnet', '--arch', 'oneshot', '--data', '{truncated_rec}',
                                   '--epochs', '1', '-o', '{tmp}/run'], ''),
    ('ONNX file that is not a model', score_cli, ['flops', '{fake_onnx}'], ''),
    ('wrong weights for the architecture', export_cli, ['--onnx', 'oneshot_s_plus', '--params',
                                                        '{weights}', '--input-size', '32',
                                                        '-o', OUT], 'does not fit'),
    ('damaged architecture JSON', score_cli, ['flops', '{broken_json}'], 'broken.json'),
    ('damaged quantization record', score_cli, ['micronet', 'oneshot', '--quant-record',
                                                '{broken_json}'], 'broken.json'),
    ('damaged latency table', search_cli, ['{supernet}', '-o', '{tmp}/s', '--latency-table',
                                           '{broken_json}', '--max-latency-ms', '5'],
     'broken.json'),
    ('damaged search state', search_cli, ['{supernet}', '-o', '{broken_search}', '--resume'],
     'search_state.json'),
    ('missing latency table', search_cli, ['{supernet}', '-o', '{tmp}/s', '--latency-table',
                                           '{tmp}/none.json', '--max-latency-ms', '5'],
     'none.json'),
    ('damaged checkpoint on --resume', train_cli, ['subnet', '--arch', 'oneshot', '--epochs',
                                                   '1', '--resume', '--no-progress', '-o',
                                                   '{broken_checkpoint}'], 'ckpt-000000001'),
]


@pytest.mark.parametrize('kind,cli,args,fragment', CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_line_exit_2_and_no_output(tmp_path, kind, cli, args, fragment):
    tmp = str(tmp_path)
    makers = {'bad_arch': _bad_arch, 'corrupt': _corrupt, 'truncated': _truncated,
              'tampered': _tampered_store, 'empty_dir': _empty_dir,
              'empty_class': _empty_class, 'non_images': _only_non_images,
              'truncated_rec': _truncated_rec, 'fake_onnx': _fake_onnx, 'weights': _weights,
              'broken_json': _broken_json, 'supernet': _supernet_run,
              'broken_search': _broken_search, 'broken_checkpoint': _broken_checkpoint}
    values = {'tmp': tmp}
    for key, make in makers.items():
        if any('{%s}' % key in a for a in args):
            values[key] = make(tmp)
    argv = [a.format(**values) for a in args]
    before = set(_files(tmp))
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 2, (kind, result.output, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), (kind, result.stderr)
    assert fragment in lines[0], (kind, lines[0])
    assert 'Traceback' not in result.output + result.stderr
    assert not os.path.exists(os.path.join(tmp, 'out.onnx'))
    new = set(_files(tmp)) - before
    assert not [f for f in new if f.endswith(('.onnx', '.params', '.tmp'))], (kind, new)


def _files(root):
    for folder, _, names in os.walk(root):
        for name in names:
            yield os.path.join(folder, name)


def test_weight_and_architecture_files_are_data_only(tmp_path):
    """Loading never executes code: .params go through mx.nd.load, architectures through json."""
    import zoo
    from nas.errors import ArchError, WeightsError
    from nas.space import Arch
    evil = tmp_path / 'evil.params'
    marker = tmp_path / 'pwned'
    evil.write_bytes(pickle.dumps(_Exploit(str(marker))))
    with pytest.raises(WeightsError):
        zoo.import_weights('oneshot', str(evil), root=str(tmp_path / 's'))
    arch = tmp_path / 'evil.json'
    arch.write_text('{"blocks": "__import__(\\"os\\").system(\\"touch %s\\")"}' % marker)
    with pytest.raises(ArchError):
        Arch.load(str(arch))
    assert not marker.exists()


class _Exploit:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, 'w'))

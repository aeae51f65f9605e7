"""MXNet symbol export: reload equality and all-or-nothing writing."""
import os

import mxnet as mx
import numpy as np
import pytest

from conftest import assert_parity
from export.merge_bn import merge_bn
from export.mxnet_symbol import export_mxnet
from nas.errors import ExportError
from toy_nets import TOY_SHAPE, toy_net


@pytest.mark.parametrize('merge', [False, True])
def test_export_reloads_with_symbolblock_imports(tmp_path, merge):
    net = toy_net()
    source = merge_bn(net, TOY_SHAPE) if merge else net
    sym_path, params_path = export_mxnet(source, str(tmp_path / 'toy'), TOY_SHAPE)
    assert sym_path == str(tmp_path / 'toy-symbol.json')
    assert params_path == str(tmp_path / 'toy-0000.params')
    assert sorted(os.listdir(tmp_path)) == ['toy-0000.params', 'toy-symbol.json']
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(params_path).st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
    loaded = mx.gluon.SymbolBlock.imports(sym_path, ['data'], params_path)
    x = mx.nd.array(np.random.default_rng(1).normal(size=(2,) + TOY_SHAPE[1:]))
    assert_parity(net(x), loaded(x), atol=1e-5)


def test_failed_write_leaves_no_files(tmp_path, monkeypatch):
    def broken_save(path, data):
        with open(path, 'wb') as handle:
            handle.write(b'partial')
        raise mx.MXNetError('disk full')

    monkeypatch.setattr(mx.nd, 'save', broken_save)
    with pytest.raises(ExportError, match='cannot write .*toy-0000.params: disk full'):
        export_mxnet(toy_net(), str(tmp_path / 'toy'), TOY_SHAPE)
    assert os.listdir(tmp_path) == []


def test_failed_rename_removes_the_partner_file(tmp_path, monkeypatch):
    real_replace = os.replace

    def replace_once(src, dst):
        if dst.endswith('.json'):
            raise OSError('read-only file system')
        real_replace(src, dst)

    monkeypatch.setattr(os, 'replace', replace_once)
    with pytest.raises(ExportError, match='read-only'):
        export_mxnet(toy_net(), str(tmp_path / 'toy'), TOY_SHAPE)
    assert os.listdir(tmp_path) == []


def test_missing_directory_is_an_export_error(tmp_path):
    with pytest.raises(ExportError, match='cannot write'):
        export_mxnet(toy_net(), str(tmp_path / 'absent' / 'toy'), TOY_SHAPE)
    assert os.listdir(tmp_path) == []

"""Packaging facts a user meets before any model runs."""
import subprocess
import sys

import pytest


@pytest.mark.parametrize('package', ['nas', 'zoo', 'export', 'quantization', 'profiling'])
def test_import_without_mxnet_names_both_extras(package):
    code = ("import sys; sys.modules['mxnet'] = None\n"
            "try:\n    import %s\nexcept ImportError as err:\n    print(err)\n" % package)
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert 'pip install -e .[cpu]' in out.stdout and 'pip install -e .[gpu]' in out.stdout


def test_console_scripts_are_installed():
    from importlib.metadata import entry_points
    names = {ep.name for ep in entry_points(group='console_scripts')
             if ep.value.split('.')[0] == 'cli'}
    assert {'nas-zoo', 'nas-score', 'nas-train', 'nas-search', 'nas-export', 'nas-quantize',
            'nas-profile', 'nas-demo'} <= names

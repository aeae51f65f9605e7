"""The README's first command, at the smallest sizes: every step runs, the report links plots that
exist, and its numbers are the run's own (summary.json)."""
import json
import os
import re

import pytest
from click.testing import CliRunner

from cli.demo import main


@pytest.mark.slow
@pytest.mark.integration
def test_demo_end_to_end_writes_a_report_from_its_own_numbers(tmp_path):
    out = tmp_path / 'demo'
    result = CliRunner().invoke(main, ['-o', str(out), '--supernet-epochs', '1',
                                       '--subnet-epochs', '1', '--population', '4',
                                       '--generations', '1', '--latency-runs', '2'])
    assert result.exit_code == 0, result.output + result.stderr
    report = (out / 'report.md').read_text()
    with open(out / 'summary.json') as handle:
        summary = json.load(handle)
    images = re.findall(r'!\[[^\]]*\]\(([^)]+)\)', report)
    assert len(images) == 4  # supernet curve, Pareto front, winner curve, per-block latency
    for image in images:
        with open(out / image, 'rb') as handle:
            assert handle.read(8) == b'\x89PNG\r\n\x1a\n', image
    assert summary['winner']['arch'] in report
    with open(out / 'zoo_page' / 'zoo_page.json') as handle:  # the page beside the report
        page = {row['name']: row for row in json.load(handle)['rows']}
    winner = page[summary['winner']['name']]
    assert winner['arch'] == summary['winner']['arch'] and winner['measured_data'] == 'digits'
    assert winner['measured_top1'] == pytest.approx(100 * summary['winner']['val_top1'])
    assert winner['pareto_plot'] and winner['block_plot'] and 'oneshot_s_plus' in page
    assert '(zoo_page/index.html)' in report and summary['zoo_page'].endswith('index.html')
    assert '%.4f' % summary['micronet']['int8_mxnet'] in report
    scores = summary['micronet']
    assert scores['int8_onnx'] < scores['32'] and scores['int8_mxnet'] < scores['32']
    for name in ('demo_searched.onnx', 'demo_searched.int8.onnx', 'demo_searched_int8.quant.json'):
        assert os.path.isfile(out / name), name
    assert 'report: ' in result.stdout

"""``nas-zoo page``: the static page in a real headless Chromium (loads from disk without console
errors, one row per model, sorting, every image and link resolves, numbers equal their sources)
and its bad input (a foreign output folder, a damaged results file).

The browser test runs wherever Chromium and its driver are installed; in CI (``CI`` set) they
must be (.ci/run installs them), so there it fails instead of skipping.
"""
import json
import os
import shutil
from urllib.parse import unquote, urlparse

import mxnet as mx
import pytest
from click.testing import CliRunner

from cli.zoo import main as zoo_cli
from nas.network import OneShotNet
from nas.plots import plot_pareto
from nas.search import Candidate
from profiling.zoo_page import GLUONCV_PEERS, MARKER, write_zoo_page
from profiling.zoo_page_plots import pareto_names
from zoo import import_weights, list_models, register_model, store
from zoo.registry import get_card, model_info

USER = 'tiny_searched'
# a small benchmark result: three models of the zoo and its peers, one user model, distinct figures
RESULTS = {'deployment': {
    'machine': {'cpu': 'Test CPU 9000', 'threads': 2, 'date': '2026-01-02 03:04 UTC',
                'load_average': [0.5, 0.6, 0.7]},
    'input_size': 224,
    'models': {
        'oneshot': {'micronet_fp32': 1.059, 'micronet_ort_int8': 0.4862,
                    'ort_fp32': {'b1': {'median_ms': 5.25}, 'b32': {'median_ms': 181.5}},
                    'ort_int8': {'b1': {'median_ms': 3.75}, 'b32': {'median_ms': 98.25}}},
        'oneshot_s_plus': {'micronet_fp32': 1.0174, 'micronet_ort_int8': 0.4542,
                           'ort_fp32': {'b1': {'median_ms': 6.5}, 'b32': {'median_ms': 197.0}},
                           'ort_int8': {'b1': {'median_ms': 5.5}, 'b32': {'median_ms': 96.0}}},
        'mobilenetv2_1.0': {'micronet_fp32': 1.0249, 'micronet_ort_int8': 0.4641,
                            'ort_fp32': {'b1': {'median_ms': 4.75}, 'b32': {'median_ms': 150.0}},
                            'ort_int8': {'b1': {'median_ms': 3.0}, 'b32': {'median_ms': 81.0}}},
        'resnet18_v1': {'micronet_fp32': 4.7984, 'micronet_ort_int8': 2.3641,
                        'ort_fp32': {'b1': {'median_ms': 18.5}, 'b32': {'median_ms': 552.0}}},
        USER: {'ort_fp32': {'b1': {'median_ms': 0.25}, 'b32': {'median_ms': 2.5}}}}}}


@pytest.fixture(scope='module')
def zoo_setup(tmp_path_factory):
    """A user zoo with one searched model (stored weights, measured top-1, its search's Pareto
    plot) and a results file."""
    from nas.space import Arch, SearchSpace
    folder = tmp_path_factory.mktemp('zoo_page')
    root = str(folder / 'models')
    arch = Arch.parse('00010010320122120020:87685734242345663346',
                      SearchSpace(use_se=True, last_conv_after_pooling=True, input_size=32,
                                  classes=10))
    search_dir = folder / 'search'
    search_dir.mkdir()
    plot_pareto([Candidate(arch=str(arch), costs={'flops': 1e6 * (i + 1), 'params': 1e5},
                           top1=0.5 + i / 20, generation=0, order=i, fitness=0.5 + i / 20)
                 for i in range(5)], str(search_dir / 'pareto.png'))
    register_model(USER, arch, root=root, description='searched in a test', extra={
        'search': {'supernet_top1': 0.7, 'search_dir': str(search_dir)},
        'measured_top1': {'top1': 0.8125, 'data': 'digits'}})
    net = OneShotNet(arch)
    net.initialize(mx.init.Xavier())
    params = str(folder / 'tiny.params')
    net.save_parameters(params)
    import_weights(USER, params, root=root)
    results = folder / 'results.json'
    results.write_text(json.dumps(RESULTS))
    block_plot = str(search_dir / 'pareto.png')  # any PNG stands in for a per-block plot
    return {'root': root, 'results': str(results), 'folder': folder, 'block_plot': block_plot}


@pytest.fixture(scope='module')
def page(zoo_setup):
    out = zoo_setup['folder'] / 'page'
    result = write_zoo_page(str(out), root=zoo_setup['root'], results=zoo_setup['results'],
                            block_plots={USER: zoo_setup['block_plot']})
    assert result.warnings == []
    return out, result


def _browser():
    """A headless Chromium driver; skips only outside CI when Chromium is not installed."""
    binary = next(filter(None, map(shutil.which, ('chromium', 'chromium-browser',
                                                  'google-chrome'))), None)
    driver_path = shutil.which('chromedriver')
    if not (binary and driver_path):
        if os.environ.get('CI'):
            pytest.fail('CI must run the browser test: install chromium and chromium-driver '
                        '(.ci/run does)')
        pytest.skip('chromium / chromedriver not installed (apt-get install chromium '
                    'chromium-driver)')
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ('--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
                 '--window-size=1500,1000'):
        options.add_argument(flag)
    options.set_capability('goog:loggingPrefs', {'browser': 'ALL'})
    return webdriver.Chrome(service=Service(driver_path), options=options)


def _severe(driver):
    return [entry for entry in driver.get_log('browser') if entry['level'] == 'SEVERE']


def _check_resources(driver):
    """Every image decoded, every link pointing at a file that exists; returns the number of
    images and the links."""
    images = driver.execute_script(
        'return Array.from(document.images).map(i => [i.src, i.complete && i.naturalWidth]);')
    assert all(width for _, width in images), images
    links = driver.execute_script('return Array.from(document.links).map(a => a.href);')
    for link in links:
        assert link.startswith('file://'), link
        assert os.path.isfile(unquote(urlparse(link).path)), link
    return len(images), links


def _rows(driver):
    return driver.execute_script("""
        return Array.from(document.querySelectorAll('#models tbody tr')).map(tr => {
          const cells = {};
          tr.querySelectorAll('td').forEach(td => {
            cells[td.dataset.key] = [td.dataset.value, td.innerText]; });
          return [tr.dataset.name, cells]; });""")


def _close(value, expected):
    assert value != '' and expected is not None
    assert abs(float(value) - expected) <= 1e-9 * max(1.0, abs(expected)), (value, expected)


def test_page_in_browser(page, zoo_setup, tmp_path):
    out, result = page
    root = zoo_setup['root']
    driver = _browser()
    try:
        driver.get((out / 'index.html').as_uri())
        assert _severe(driver) == []
        rows = dict(_rows(driver))
        expected = list_models(root=root) + list(GLUONCV_PEERS)
        assert sorted(rows) == sorted(expected) and len(_rows(driver)) == len(expected)
        deployment = RESULTS['deployment']['models']
        for name, cells in rows.items():
            source = deployment.get(name, {})
            if name in GLUONCV_PEERS:
                _close(cells['published_top1'][0], GLUONCV_PEERS[name])
            else:
                info = model_info(name, root=root)
                if info.get('flops') is not None:  # the card's counts (the supernet has none)
                    _close(cells['flops'][0], info['flops'])
                    _close(cells['params'][0], info['params'])
                    assert cells['flops'][1] == '%.1f' % (info['flops'] / 1e6)
                published = get_card(name, root).published_top1
                if published is not None:
                    _close(cells['published_top1'][0], published)
                    assert cells['published_top1'][1].startswith('%.2f' % published)
            for runtime in ('ort_fp32', 'ort_int8'):
                for batch in ('b1', 'b32'):
                    key = 'latency.%s.%s' % (runtime, batch)
                    figure = source.get(runtime, {}).get(batch)
                    if figure is None:
                        assert cells[key][0] == '', (name, key)
                    else:
                        _close(cells[key][0], figure['median_ms'])
                        assert cells[key][1] == '%.2f' % figure['median_ms']
            if 'micronet_ort_int8' in source:
                _close(cells['micronet_int8'][0], source['micronet_ort_int8'])
                _close(cells['micronet_fp32'][0], source['micronet_fp32'])
        _close(rows[USER]['measured_top1'][0], 81.25)
        assert 'digits' in rows[USER]['measured_top1'][1]
        assert 'Test CPU 9000' in driver.find_element('tag name', 'body').text

        header = driver.find_element('css selector', 'th[data-col="latency.ort_fp32.b1"]')
        before = [name for name, _ in _rows(driver)]
        for direction in (1, -1):
            header.click()
            values = [cells['latency.ort_fp32.b1'][0] for _, cells in _rows(driver)]
            numbers = [float(v) for v in values if v]
            assert numbers == sorted(numbers, reverse=direction < 0)
            assert values[len(numbers):] == [''] * (len(values) - len(numbers))  # blanks last
        assert [name for name, _ in _rows(driver)] != before
        driver.save_screenshot(str(tmp_path / 'zoo_page.png'))
        assert (tmp_path / 'zoo_page.png').stat().st_size > 10000

        images, links = _check_resources(driver)
        assert images == 5  # two plots for each of the two runtimes, the user model's search
        cards = [link for link in links if '/cards/' in link]
        assert len(cards) == len(expected)
        for link in cards:
            driver.get(link)
            assert _severe(driver) == [], link
            _check_resources(driver)
            if 'supernet' not in link:
                assert 'SymbolBlock.imports(' in driver.page_source
                assert 'ort.InferenceSession(' in driver.page_source
        driver.get((out / 'cards' / (USER + '.html')).as_uri())
        sha1 = driver.find_element('css selector', 'code.sha1').text
        assert sha1 == store.sha1_of(store.get_model_file(USER, root))
        arch = driver.find_element('css selector', 'code.arch').text
        assert arch == str(get_card(USER, root).arch)
        assert len(driver.find_elements('css selector', 'img')) == 2  # per-block plot, search
    finally:
        driver.quit()


def test_page_files_and_fronts(page):
    out, result = page
    data = json.loads((out / MARKER).read_text())
    assert data['where']['cpu'] == 'Test CPU 9000'
    # ORT FP32 b1: mobilenetv2_1.0 4.75 ms / 72.04, oneshot 5.25 / 74.02, oneshot_s_plus 6.5 /
    # 75.75 and resnet18_v1 18.5 / 70.93 (slower and less accurate: off the front)
    assert data['pareto_fronts']['ort_fp32'] == ['mobilenetv2_1.0', 'oneshot', 'oneshot_s_plus']
    assert (out / 'cards' / (USER + '_pareto.png')).is_file()
    for runtime in ('ort_fp32', 'ort_int8'):
        assert (out / 'plots' / ('top1_vs_latency_%s.png' % runtime)).is_file()
        assert (out / 'plots' / ('flops_vs_latency_%s.png' % runtime)).is_file()


def test_pareto_names():
    points = [('a', 1.0, 70.0), ('b', 2.0, 69.0), ('c', 2.0, 75.0), ('d', 3.0, 75.0),
              ('e', 0.5, 60.0)]
    assert pareto_names(points) == ['e', 'a', 'c']


def test_refuses_foreign_folder(zoo_setup, tmp_path):
    foreign = tmp_path / 'mine'
    foreign.mkdir()
    (foreign / 'notes.txt').write_text('keep me')
    result = CliRunner().invoke(zoo_cli, ['page', '-o', str(foreign), '--root',
                                          zoo_setup['root'], '--results', zoo_setup['results']])
    assert result.exit_code == 2
    assert result.stderr.count('\n') == 1 and result.stderr.startswith('error: ')
    assert 'not a previous zoo page' in result.stderr
    assert os.listdir(foreign) == ['notes.txt'] and (foreign / 'notes.txt').read_text() == \
        'keep me'
    assert not [p for p in os.listdir(tmp_path) if p.startswith('.zoo_page')]


def test_damaged_results_still_writes_the_page(zoo_setup, tmp_path):
    damaged = tmp_path / 'results.json'
    damaged.write_text(json.dumps(RESULTS)[:200])  # cut short
    out = tmp_path / 'page'
    args = ['page', '-o', str(out), '--root', zoo_setup['root'], '--results', str(damaged)]
    for _ in range(2):  # the second run replaces the first page
        result = CliRunner().invoke(zoo_cli, args)
        assert result.exit_code == 0, result.output
        warnings = [line for line in result.stderr.splitlines() if line.startswith('warning:')]
        assert len(warnings) == 1 and str(damaged) in warnings[0]
    data = json.loads((out / MARKER).read_text())
    assert [row['latency'] for row in data['rows']] == [{}] * len(data['rows'])
    assert len(data['rows']) == len(list_models(root=zoo_setup['root'])) + len(GLUONCV_PEERS)
    assert 'damaged' in (out / 'index.html').read_text()


def test_measure_times_the_models_here(zoo_setup, tmp_path):
    """--measure: the user model timed as deployed (ORT FP32 / INT8, batch 1 and 32) with a
    progress bar; the page says where, and a batch of 32 takes longer than one image."""
    from profiling.timing import cpu_model
    out = tmp_path / 'page'
    result = CliRunner().invoke(zoo_cli, ['page', USER, '-o', str(out), '--measure', '--runs',
                                          '3', '--root', zoo_setup['root']])
    assert result.exit_code == 0, result.output
    assert 'timing models' in result.stderr and '4/4' in result.stderr
    data = json.loads((out / MARKER).read_text())
    [row] = data['rows']
    assert row['name'] == USER and set(row['latency']) == {'ort_fp32', 'ort_int8'}
    for timings in row['latency'].values():
        assert 0 < timings['b1'] < timings['b32']
    assert data['where']['cpu'] == cpu_model() and 'measure' in data['where']['source']
    refused = CliRunner().invoke(zoo_cli, ['page', '-o', str(out), '--measure', '--results',
                                           zoo_setup['results']])
    assert refused.exit_code == 2 and refused.stderr.startswith('error: ')

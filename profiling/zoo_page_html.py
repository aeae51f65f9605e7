"""The zoo page as files: ``index.html`` (sortable table, plots), one card page per model, the
PNG plots beside them and ``zoo_page.json`` (the figures shown). Plain HTML with inline CSS and
JavaScript: it opens from disk, with no server and no network."""
import html
import os
import shutil

from nas.atomic import write_json, write_text
from profiling.zoo_page_plots import plot_flops_vs_latency, plot_top1_vs_latency

__all__ = ['RUNTIME_LABELS', 'write_page_files', 'columns']

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:24px;color:#222}
h1{margin:0 0 4px}h2{margin-top:32px;border-bottom:1px solid #ddd;padding-bottom:4px}
.note{color:#555;font-size:13px}.warn{background:#fff3cd;border:1px solid #e0c060;padding:8px}
table{border-collapse:collapse;font-size:13px}th,td{border:1px solid #ddd;padding:4px 7px}
th{background:#f3f5f8;cursor:pointer;user-select:none;position:sticky;top:0}
th[aria-sort=ascending]::after{content:' \\25B2'}th[aria-sort=descending]::after{content:' \\25BC'}
td.num{text-align:right;font-variant-numeric:tabular-nums}tr:nth-child(even){background:#fafbfc}
.pub{color:#8a5a00}.meas{color:#1b6e2a}.src{font-size:11px;color:#666}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(480px,1fr));gap:12px}
.grid img,.card img{max-width:100%;border:1px solid #eee}
pre{background:#f6f8fa;padding:10px;overflow-x:auto;font-size:12px}
dl{display:grid;grid-template-columns:max-content auto;gap:4px 16px}dt{font-weight:600}
"""

_SORT_JS = """
(function () {
  function key(cell) {
    var v = cell.getAttribute('data-value');
    if (v === null || v === '') return null;
    var n = parseFloat(v);
    return isNaN(n) ? v.toLowerCase() : n;
  }
  function sortBy(th) {
    var table = th.closest('table'), body = table.tBodies[0];
    var index = Array.prototype.indexOf.call(th.parentNode.children, th);
    var dir = th.getAttribute('aria-sort') === 'ascending' ? -1 : 1;
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a.cells[index]), y = key(b.cells[index]);
      if (x === null || y === null) return (x === null) - (y === null);  // blanks last
      return x < y ? -dir : x > y ? dir : 0;
    });
    rows.forEach(function (row) { body.appendChild(row); });
    Array.prototype.forEach.call(th.parentNode.children, function (h) {
      h.removeAttribute('aria-sort');
    });
    th.setAttribute('aria-sort', dir === 1 ? 'ascending' : 'descending');
  }
  Array.prototype.forEach.call(document.querySelectorAll('th[data-col]'), function (th) {
    th.addEventListener('click', function () { sortBy(th); });
  });
})();
"""

# the runtimes of a benchmark result (bench/run_all.py) in the table's order, with their labels
RUNTIME_LABELS = {'ort_fp32': 'ORT FP32', 'ort_int8': 'ORT INT8', 'mxnet': 'MXNet',
                  'mxnet_merged_bn': 'MXNet merged BN', 'mxnet_deploy': 'MXNet deployment graph',
                  'mxnet_int8': 'MXNet INT8'}


def _runtimes(rows):
    present = {runtime for row in rows for runtime in row['latency']}
    return [(r, label) for r, label in RUNTIME_LABELS.items() if r in present]


def columns(rows):
    """(key, header, value(row), text(value)) of every table column after the model name."""
    def fixed(digits, scale=1.0):
        return lambda v: '%.*f' % (digits, v / scale)
    cols = [('source', 'Source', lambda r: r['source'], str),
            ('input_size', 'Input', lambda r: r['input_size'], str),
            ('flops', 'MACs (M)', lambda r: r['flops'], fixed(1, 1e6)),
            ('params', 'Params (M)', lambda r: r['params'], fixed(2, 1e6)),
            ('micronet_fp32', 'MicroNet 32-bit', lambda r: r['micronet_fp32'], fixed(4)),
            ('micronet_int8', 'MicroNet INT8', lambda r: r['micronet_int8'], fixed(4)),
            ('published_top1', 'Top-1 published (ImageNet, %)',
             lambda r: r['published_top1'], fixed(2)),
            ('measured_top1', 'Top-1 measured (%)', lambda r: r['measured_top1'], fixed(2))]
    for runtime, label in _runtimes(rows):
        for batch in ('b1', 'b32'):
            cols.append(('latency.%s.%s' % (runtime, batch), '%s %s (ms)' % (label, batch),
                         lambda r, rt=runtime, b=batch: r['latency'].get(rt, {}).get(b),
                         fixed(2)))
    return cols


def _cell(key, value, text, row):
    classes = 'num' if isinstance(value, (int, float)) else ''
    shown = '&mdash;' if value is None else html.escape(text(value))
    if key == 'published_top1' and value is not None:
        shown = '<span class="pub" title="%s">%s<sup>pub</sup></span>' % (
            html.escape(row['published_source']), shown)
    elif key == 'measured_top1' and value is not None:
        shown = '<span class="meas">%s</span> <span class="src">on %s</span>' % (
            shown, html.escape(str(row['measured_data'])))
    elif key == 'micronet_int8' and value is not None:
        shown = '<span title="%s">%s</span>' % (html.escape(row['micronet_int8_from']), shown)
    raw = '' if value is None else (repr(value) if isinstance(value, float) else str(value))
    return '<td class="%s" data-key="%s" data-value="%s">%s</td>' % (
        classes, html.escape(key), html.escape(raw), shown)


def _page(title, body, script=''):
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            '<link rel="icon" href="data:,">'
            '<title>%s</title><style>%s</style></head><body>\n%s\n%s</body></html>\n'
            % (html.escape(title), _CSS, body, '<script>%s</script>' % script if script else ''))


def _where_text(where):
    if not where:
        return 'No latency figures: no benchmark result was read and nothing was measured.'
    load = where.get('load_average')
    return 'Latency %s; CPU %s, %s thread(s), %s%s%s.' % (
        html.escape(where['source']), html.escape(str(where['cpu'])), where.get('threads'),
        html.escape(str(where['when'])),
        ', load average %s' % ' / '.join(map(str, load)) if load else '',
        ', input %s' % where['input_size'] if where.get('input_size') else '')


def _plots(folder, rows):
    """Draw the per-runtime plots; returns [(title, [relative PNG paths])] and the fronts."""
    os.makedirs(os.path.join(folder, 'plots'), exist_ok=True)
    accuracy, flops, fronts = [], [], {}
    for runtime, label in _runtimes(rows):
        rel = 'plots/top1_vs_latency_%s.png' % runtime
        front = plot_top1_vs_latency(rows, runtime, label, os.path.join(folder, rel))
        if front is not None:
            accuracy.append(rel)
            fronts[runtime] = front
        rel = 'plots/flops_vs_latency_%s.png' % runtime
        if plot_flops_vs_latency(rows, runtime, label, os.path.join(folder, rel)):
            flops.append(rel)
    return [('Published top-1 vs measured latency (Pareto front dashed, circled)', accuracy),
            ('FLOPs vs latency (above the line: slower than the FLOPs suggest)', flops)], fronts


def _copy_images(folder, rows, block_plots):
    """Copy each user model's search Pareto plot and the given per-block plots beside the cards."""
    for row in rows:
        search_dir = (row['search'] or {}).get('search_dir')
        pareto = os.path.join(search_dir, 'pareto.png') if search_dir else None
        for key, source, suffix in (('pareto_plot', pareto, 'pareto'),
                                    ('block_plot', block_plots.get(row['name']), 'blocks')):
            if source and os.path.isfile(source):
                rel = '%s_%s.png' % (row['name'], suffix)
                shutil.copyfile(source, os.path.join(folder, 'cards', rel))
                row[key] = rel


def write_page_files(folder, rows, where, warnings, block_plots):
    """Write every file of the page into the (new, empty) ``folder``."""
    from profiling.zoo_page_cards import card_page
    os.makedirs(os.path.join(folder, 'cards'), exist_ok=True)
    _copy_images(folder, rows, block_plots)
    sections, fronts = _plots(folder, rows)
    cols = columns(rows)
    head = '<th data-col="name">Model</th>' + ''.join(
        '<th data-col="%s">%s</th>' % (html.escape(key), html.escape(header))
        for key, header, _, _ in cols)
    body_rows = []
    for row in rows:
        cells = ''.join(_cell(key, value(row), text, row) for key, _, value, text in cols)
        body_rows.append('<tr data-name="%s"><td data-key="name" data-value="%s">'
                         '<a href="cards/%s.html">%s</a></td>%s</tr>' % (
                             html.escape(row['name']), html.escape(row['name']),
                             html.escape(row['name']), html.escape(row['name']), cells))
        write_text(os.path.join(folder, 'cards', row['name'] + '.html'),
                   _page('%s - oneshot-nas zoo' % row['name'], card_page(row, where)))
    parts = ['<h1>oneshot-nas model zoo</h1>',
             '<p class="note">%s Click a column header to sort; a model name opens its card. '
             'Top-1 marked <sup>pub</sup> is published ImageNet accuracy, not measured here; '
             'measured top-1 names its data set.</p>' % _where_text(where)]
    parts += ['<p class="warn">warning: %s</p>' % html.escape(w) for w in warnings]
    parts += ['<table id="models"><thead><tr>%s</tr></thead><tbody>\n%s\n</tbody></table>'
              % (head, '\n'.join(body_rows))]
    for title, images in sections:
        if images:
            parts.append('<h2>%s</h2><div class="grid">%s</div>' % (html.escape(title), ''.join(
                '<img src="%s" alt="%s">' % (rel, html.escape(os.path.basename(rel)))
                for rel in images)))
    searched = [row for row in rows if row['pareto_plot']]
    if searched:
        parts.append('<h2>Searches of the user models</h2><div class="grid">%s</div>' % ''.join(
            '<figure><img src="cards/%s" alt="search of %s"><figcaption>%s</figcaption>'
            '</figure>' % (row['pareto_plot'], html.escape(row['name']), html.escape(row['name']))
            for row in searched))
    write_json(os.path.join(folder, 'zoo_page.json'),
               {'rows': rows, 'where': where, 'warnings': warnings, 'pareto_fronts': fronts},
               indent=1, sort_keys=True, default=str)
    write_text(os.path.join(folder, 'index.html'),
               _page('oneshot-nas model zoo', '\n'.join(parts), _SORT_JS))

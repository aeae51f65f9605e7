"""One model's card page on the zoo page: architecture, figures with their sources, stored
weights and how to load the model in Python, MXNet (``SymbolBlock.imports``) and onnxruntime."""
import html

__all__ = ['card_page', 'load_snippets']


def load_snippets(row):
    """[(title, code)] showing how to load the model of ``row``."""
    name, size = row['name'], row['input_size'] or 224
    if row['source'] != 'gluoncv' and row['arch'] is None:
        return [('Python', "from zoo import get_model\nnet = get_model(%r)  # the supernet; "
                 "extract a subnet with nas.subnet.extract_subnet to deploy it" % name)]
    if row['source'] == 'gluoncv':
        weights = "--params %s.params  # gluoncv's file, e.g. from ~/.mxnet/models" % name
        python = ('Python (gluoncv)', "from gluoncv.model_zoo import get_model\n"
                  "net = get_model(%r, pretrained=True)  # downloads gluoncv's weights" % name)
    else:
        stored = bool((row['weights'] or {}).get('sha1'))
        weights = '--pretrained' if stored else '--params FILE.params'
        python = ('Python (Gluon)', "from zoo import get_model\nnet = get_model(%r, %s)" % (
            name, 'pretrained=True' if stored else
            'pretrained=False  # no stored weights yet: nas-zoo import %s FILE.params' % name))
    return [
        python,
        ('MXNet symbol (SymbolBlock.imports)',
         "# nas-export --mxnet %s %s --input-size %d -o %s\nimport mxnet as mx\n"
         "net = mx.gluon.SymbolBlock.imports('%s-symbol.json', ['data'], '%s-0000.params')\n"
         "logits = net(mx.nd.zeros((1, 3, %d, %d)))"
         % (name, weights, size, name, name, name, size, size)),
        ('onnxruntime',
         "# nas-export --onnx %s %s --input-size %d --dynamic-batch -o %s.onnx\n"
         "import numpy as np, onnxruntime as ort\n"
         "session = ort.InferenceSession('%s.onnx', providers=['CPUExecutionProvider'])\n"
         "x = np.zeros((1, 3, %d, %d), np.float32)\n"
         "logits = session.run(None, {session.get_inputs()[0].name: x})[0]"
         % (name, weights, size, name, name, size, size))]


def _fmt(value, digits, scale=1.0, unit=''):
    return '&mdash;' if value is None else '%.*f%s' % (digits, value / scale, unit)


def card_page(row, where):
    """The body of ``row``'s card page (HTML)."""
    esc = html.escape
    weights = row['weights'] or {}
    if weights.get('sha1'):
        stored = '<code>%s</code>, sha1 <code class="sha1">%s</code>' % (
            esc(weights['file']), esc(weights['sha1']))
    elif weights.get('missing'):
        stored = 'none stored: %s' % esc(weights['missing'])
    else:
        stored = "gluoncv's own download (not in this project's store)"
    facts = [('Source', esc(row['source'])), ('Description', esc(row['description'] or '')),
             ('Architecture', '<code class="arch">%s</code>' % esc(row['arch']) if row['arch']
              else '&mdash; (not a fixed architecture)' if row['source'] != 'gluoncv'
              else 'gluoncv network %s' % esc(row['name'])),
             ('Input / classes', '%s px / %s' % (row['input_size'], row['classes'] or '?')),
             ('MACs', _fmt(row['flops'], 1, 1e6, ' M')),
             ('Params', _fmt(row['params'], 3, 1e6, ' M')),
             ('MicroNet 32-bit', _fmt(row['micronet_fp32'], 4)),
             ('MicroNet INT8', '%s <span class="src">(%s)</span>' % (
                 _fmt(row['micronet_int8'], 4), esc(row['micronet_int8_from'] or '')))]
    if row['published_top1'] is not None:
        facts.append(('Top-1 published', '%s %% <span class="src">(%s)</span>' % (
            _fmt(row['published_top1'], 2), esc(row['published_source']))))
    if row['measured_top1'] is not None:
        facts.append(('Top-1 measured', '%s %% on %s (validation split, this project)' % (
            _fmt(row['measured_top1'], 2), esc(str(row['measured_data'])))))
    for runtime, batches in sorted(row['latency'].items()):
        facts.append(('Latency %s' % esc(runtime), ', '.join(
            'batch %s: %.2f ms' % (b[1:], ms) for b, ms in sorted(
                batches.items(), key=lambda item: int(item[0][1:])))))
    if row['latency'] and where:
        facts.append(('Measured on', '%s, %s thread(s), %s' % (
            esc(str(where['cpu'])), where.get('threads'), esc(str(where['when'])))))
    facts.append(('Stored weights', stored))
    search = row['search'] or {}
    if search:
        facts.append(('Search', esc(', '.join('%s=%s' % (k, v) for k, v in sorted(
            search.items()) if k != 'costs'))))
    parts = ['<p><a href="../index.html">&larr; all models</a></p>',
             '<h1>%s</h1>' % esc(row['name']),
             '<dl>%s</dl>' % ''.join('<dt>%s</dt><dd>%s</dd>' % fact for fact in facts)]
    parts.append('<h2>Per-block latency</h2>' + (
        '<img src="%s" alt="per-block latency of %s">' % (row['block_plot'], esc(row['name']))
        if row['block_plot'] else '<p class="note">Not measured for this page; run '
        '<code>nas-profile --op-by-op %s --plot blocks.png</code> to see where the time '
        'goes.</p>'
        % esc(row['name'])))
    if row['pareto_plot']:
        parts.append('<h2>Its search</h2><img src="%s" alt="search Pareto plot of %s">'
                     % (row['pareto_plot'], esc(row['name'])))
    parts.append('<h2>Load it</h2>' + ''.join('<h3>%s</h3><pre><code>%s</code></pre>' % (
        esc(title), esc(code)) for title, code in load_snippets(row)))
    return '<div class="card">%s</div>' % '\n'.join(parts)

"""``nas-zoo``: list, inspect, import and register zoo models."""
import json

import click

from cli.common import RUNS, THREADS, Group, json_option, root_option
from nas.space import Arch
from zoo import registry, store


@click.group(cls=Group)
def main():
    """Browse the oneshot-nas model zoo and manage its weight store."""


@main.command('list')
@click.argument('pattern', required=False)
@json_option
@root_option
def list_command(pattern, as_json, root):
    """List models, optionally filtered by a wildcard PATTERN (e.g. 'oneshot*')."""
    cards = [registry.get_card(name, root) for name in registry.list_models(pattern, root=root)]
    _show(as_json, [card.to_dict() for card in cards],
          ['%-20s %-8s %s' % (card.name, card.source, card.description) for card in cards])


@main.command('info')
@click.argument('name')
@json_option
@root_option
def info_command(name, as_json, root):
    """Show the model card of NAME: choices, flags, FLOPs, params, published accuracy."""
    info = registry.model_info(name, root=root)
    _show(as_json, info, ['%-24s %s' % item for item in info.items()])


def _show(as_json, data, lines):
    if as_json or lines:
        click.echo(json.dumps(data, indent=2) if as_json else '\n'.join(lines))


@main.command('import')
@click.argument('name')
@click.argument('file', type=click.Path(dir_okay=False))
@root_option
def import_command(name, file, root):
    """Check FILE against the architecture of NAME and add it to the weight store."""
    path = registry.import_weights(name, file, root=root)
    click.echo('stored %s (sha1 %s)' % (path, store.sha1_of(path)))


@main.command('register')
@click.argument('name')
@click.argument('arch_file', type=click.Path(dir_okay=False))
@click.option('--description', default='', help='One line about the model.')
@click.option('--overwrite', is_flag=True, help='Replace an existing user model.')
@root_option
def register_command(name, arch_file, description, overwrite, root):
    """Register the architecture JSON ARCH_FILE as user model NAME."""
    path = registry.register_model(name, Arch.load(arch_file), root=root,
                                   description=description, overwrite=overwrite)
    click.echo('registered %s -> %s' % (name, path))


@main.command('repair')
@root_option
def repair_command(root):
    """Rebuild the weight store's manifest from the stored files (their names carry their sha1)."""
    manifest, skipped = store.repair(root)
    for name, sha1 in sorted(manifest.items()):
        click.echo('%-20s %s' % (name, sha1))
    for entry in skipped:
        click.echo('skipped %s: its content no longer matches the sha1 in its name' % entry)
    click.echo('manifest rebuilt: %d model(s)' % len(manifest))


@main.command('purge')
@root_option
def purge_command(root):
    """Delete every stored weight file and the manifest."""
    store.purge(root)
    click.echo('purged %s' % (root or store.default_root()))


@main.command('page')
@click.argument('pattern', required=False)
@click.option('-o', '--out', 'out_dir', required=True, type=click.Path(),
              help='Folder of the page: new, empty or a previous page (replaced).')
@click.option('--results', type=click.Path(exists=True, dir_okay=False), default=None,
              help='Benchmark result to read [default: bench/results.json].')
@click.option('--measure', is_flag=True,
              help='Time the models here as deployed (onnxruntime FP32 and INT8, batch 1 and '
                   '32) instead.')
@click.option('--threads', type=THREADS, default=2, show_default=True,
              help='--measure: CPU threads.')
@click.option('--runs', type=RUNS, default=20, show_default=True,
              help='--measure: timed runs per model and batch size.')
@root_option
def page_command(pattern, out_dir, results, measure, threads, runs, root):
    """Write a static HTML page of every model (or those matching PATTERN) with its figures."""
    from tqdm import tqdm
    from profiling.zoo_page import write_zoo_page
    if measure and results:
        raise click.UsageError('give either --measure or --results, not both')
    bars = []

    def start_bar(total):
        bars.append(tqdm(total=total, desc='timing models', unit='run'))
        return bars[0]
    try:
        page = write_zoo_page(out_dir, root=root, results=results, pattern=pattern,
                              measure=measure, threads=threads, runs=runs, progress=start_bar)
    finally:
        for bar in bars:
            bar.close()
    for warning in page.warnings:
        click.echo('warning: %s' % warning, err=True)
    click.echo('wrote %s (%d models)' % (page.index, len(page.rows)))

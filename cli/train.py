"""``nas-train``: train a supernet or a fixed subnet (SPEC §3) on digits, images or a .rec."""
import logging
import re

import click
import mxnet as mx

from cli.common import (AMOUNT, BATCH, COUNT, INPUT_SIZE, NON_NEGATIVE, OFF_OR_COUNT,
                        POSITIVE, SEED, Group, Real, root_option)
from nas.data import open_dataset
from nas.errors import TrainingError
from nas.sampler import CostBox, MODES, SAMPLERS
from nas.schedule import ChannelSchedule
from nas.space import Arch, LAYOUTS, SearchSpace
from nas.train import (DTYPES, KVSTORES, subnet_recipe, supernet_recipe, train_subnet,
                       train_supernet, training_sampler)

__all__ = ['main']

@click.group(cls=Group)
def main():
    """Train SPOS supernets and subnets; every run is resumable (--resume)."""
    logging.basicConfig(format='%(levelname)s %(name)s: %(message)s')
    logging.getLogger('nas').setLevel(logging.INFO)


def _parse_contexts(ctx, gpus):
    """``--ctx cpu(0),cpu(1)`` or ``--gpus 0,1`` -> list of mx.Context."""
    if ctx and gpus:
        raise TrainingError('give either --ctx or --gpus, not both')
    if gpus:
        try:
            return [mx.gpu(int(g)) for g in gpus.split(',')]
        except ValueError:
            raise TrainingError('cannot read --gpus %r; write e.g. 0,1' % gpus) from None
    if not ctx:
        return [mx.cpu()]
    contexts = []
    for item in re.split(r',\s*(?=[a-z])', ctx.strip()):
        match = re.match(r'^(cpu|gpu)\((\d+)\)$', item.strip())
        if not match:
            raise TrainingError('cannot read context %r; write e.g. cpu(0),cpu(1) or gpu(0)'
                                % item)
        contexts.append(getattr(mx, match.group(1))(int(match.group(2))))
    return contexts


def _digits(value, what):
    if value is None:
        return None
    if not re.match(r'^\d{20}$', value):
        raise TrainingError('%s must be 20 digits, got %r' % (what, value))
    return tuple(int(c) for c in value)


def _datasets(data, input_size, seed):
    input_size = input_size or (32 if data == 'digits' else 224)
    train_set = open_dataset(data, 'train', input_size, seed)
    val_set = open_dataset(data, 'val', input_size, seed)
    return train_set, val_set, input_size


def _common(func):
    options = [
        click.option('--data', default='digits', show_default=True,
                     help="'digits' (embedded), an image folder or an im2rec .rec file."),
        click.option('--input-size', type=INPUT_SIZE, default=None,
                     help='Input size, a multiple of 32 [32 for digits, else 224].'),
        click.option('--epochs', type=COUNT, default=None, help='Epochs [recipe default].'),
        click.option('--batch-size', type=BATCH, default=64, show_default=True,
                     help='Images per step on this worker, split over its devices.'),
        click.option('--lr', type=POSITIVE, default=None, help='Peak learning rate [recipe].'),
        click.option('--wd', type=NON_NEGATIVE, default=None, help='Weight decay [recipe].'),
        click.option('--warmup-epochs', type=NON_NEGATIVE, default=5.0, show_default=True,
                     help='Linear LR warm-up before the cosine decay.'),
        click.option('--label-smoothing', type=Real(0, 1, max_open=True), default=0.1,
                     show_default=True),
        click.option('--seed', type=SEED, default=0, show_default=True),
        click.option('--ctx', default=None, help='Devices, e.g. cpu(0),cpu(1).'),
        click.option('--gpus', default=None, help='GPU ids, e.g. 0,1.'),
        click.option('--kvstore', type=click.Choice(KVSTORES), default='local',
                     show_default=True, help='dist_* for multi-machine (DMLC environment).'),
        click.option('--checkpoint-every', type=OFF_OR_COUNT, default=0, show_default=True,
                     help='Also checkpoint every N steps (0: only at epoch ends).'),
        click.option('--keep', type=COUNT, default=3, show_default=True,
                     help='Checkpoints to keep.'),
        click.option('--data-workers', type=click.IntRange(0, 256), default=0, show_default=True,
                     help='Data-loading worker processes.'),
        click.option('--dtype', type=click.Choice(DTYPES), default='float32', show_default=True,
                     help='Compute precision: bfloat16 on CPUs with oneDNN, float16 on GPUs '
                          '(float32 master weights, BN statistics and loss).'),
        click.option('-o', '--output', 'run_dir', required=True, type=click.Path(),
                     help='Run directory (checkpoints, metrics, curve, weights).'),
        click.option('--resume', is_flag=True, help='Continue from the last checkpoint.'),
        click.option('--progress/--no-progress', default=True, show_default=True,
                     help='Progress bar per epoch on stderr.'),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _config(opts, recipe):
    """The recipe (``subnet_recipe``/``supernet_recipe``) with the options given."""
    given = {key: opts[key] for key in ('epochs', 'lr', 'wd') if opts[key] is not None}
    return recipe(
        opts['batch_size'], warmup_epochs=opts['warmup_epochs'],
        label_smoothing=opts['label_smoothing'], seed=opts['seed'],
        checkpoint_every=opts['checkpoint_every'], keep_checkpoints=opts['keep'],
        data_workers=opts['data_workers'], dtype=opts['dtype'],
        **{k: opts[k] for k in ('val_paths', 'recal_images') if k in opts}, **given)


def _report(result, weights):
    last = result.epochs[-1] if result.epochs else {}
    val = last.get('val_top1')
    click.echo('trained %d steps (%d epochs): loss %.4f, val top-1 %s' % (
        result.steps, len(result.epochs), last.get('loss', float('nan')),
        'n/a' if val is None else '%.2f%%' % (100 * val)))
    if result.skipped_images:
        click.echo('skipped %d unreadable image(s)' % result.skipped_images)
    if result.rank == 0:
        click.echo('weights: %s' % weights)


@main.command('subnet')
@click.option('--arch', required=True,
              help='A zoo name (built-in or user zoo, e.g. registered by nas-search '
                   '--register) or an architecture JSON.')
@root_option
@_common
def subnet_command(arch, root, **opts):
    """Train a fixed subnet from scratch; writes RUN_DIR/model.params and arch.json."""
    train_set, val_set, input_size = _datasets(opts['data'], opts['input_size'], opts['seed'])
    arch = _resolve_arch(arch, root).with_space(classes=len(train_set.classes),
                                                input_size=input_size)
    result = train_subnet(arch, train_set, val_set, opts['run_dir'],
                          _config(opts, subnet_recipe),
                          ctx=_parse_contexts(opts['ctx'], opts['gpus']), kvstore=opts['kvstore'],
                          resume=opts['resume'], progress=opts['progress'])
    _report(result, '%s/model.params' % opts['run_dir'])


def _resolve_arch(text, root=None):
    if text.endswith('.json'):
        return Arch.load(text)
    from zoo import get_card
    card = get_card(text, root)
    if card.arch is None:
        raise TrainingError('%s is a supernet; train it with nas-train supernet' % text)
    return card.arch


@main.command('supernet')
@click.option('--mode', type=click.Choice(MODES), default='joint', show_default=True,
              help='Sample blocks, channels or both.')
@click.option('--sampler', 'sampler_kind', type=click.Choice(sorted(SAMPLERS)),
              default='uniform', show_default=True)
@click.option('--max-flops', type=AMOUNT, help='e.g. 330M (constrained/strolling).')
@click.option('--min-flops', type=AMOUNT, help='e.g. 190M.')
@click.option('--max-params', type=AMOUNT, help='e.g. 5.0M.')
@click.option('--min-params', type=AMOUNT, help='e.g. 2.8M.')
@click.option('--fixed-blocks', default=None, help='20 block digits (channel mode).')
@click.option('--fixed-channels', default=None, help='20 scale digits (block mode) [all 9].')
@click.option('--epoch-start-cs', type=OFF_OR_COUNT, default=0, show_default=True,
              help='First epoch of channel selection (all channels on before).')
@click.option('--cs-warmup/--no-cs-warmup', default=False, show_default=True,
              help='Channel warm-up table of SPEC §3.4 from --epoch-start-cs.')
@click.option('--ignore-first-two', is_flag=True, help='Never use channel scales 0.2 and 0.4.')
@click.option('--use-se/--no-se', default=True, show_default=True)
@click.option('--last-conv-after-pooling/--no-last-conv-after-pooling', default=True,
              show_default=True)
@click.option('--layout', type=click.Choice(sorted(LAYOUTS)), default='OneShot',
              show_default=True)
@click.option('--val-paths', type=COUNT, default=1, show_default=True,
              help='Random paths validated per epoch (after BN recalibration).')
@click.option('--recal-images', type=COUNT, default=20000, show_default=True,
              help='BN recalibration budget per validated path.')
@_common
def supernet_command(mode, sampler_kind, max_flops, min_flops, max_params, min_params,
                     fixed_blocks, fixed_channels, epoch_start_cs, cs_warmup, ignore_first_two,
                     use_se, last_conv_after_pooling, layout, **opts):
    """Train the supernet; writes RUN_DIR/supernet.params and space.json."""
    train_set, val_set, input_size = _datasets(opts['data'], opts['input_size'], opts['seed'])
    space = SearchSpace(use_se=use_se, last_conv_after_pooling=last_conv_after_pooling,
                        layout=layout, input_size=input_size, classes=len(train_set.classes))
    box = CostBox(min_flops, max_flops, min_params, max_params)
    sampler = training_sampler(
        sampler_kind, space, box, mode=mode,
        schedule=ChannelSchedule(layout, epoch_start_cs, cs_warmup, ignore_first_two),
        fixed_blocks=_digits(fixed_blocks, '--fixed-blocks'),
        fixed_channels=_digits(fixed_channels, '--fixed-channels'), seed=opts['seed'])
    result = train_supernet(space, train_set, val_set, opts['run_dir'],
                            _config(opts, supernet_recipe), sampler=sampler,
                            ctx=_parse_contexts(opts['ctx'], opts['gpus']),
                            kvstore=opts['kvstore'], resume=opts['resume'],
                            progress=opts['progress'])
    _report(result, '%s/supernet.params' % opts['run_dir'])


if __name__ == '__main__':
    main()

"""``nas-demo``: the whole product on the embedded digits in one command."""
import json

import click

from cli.common import AMOUNT, COUNT, INPUT_SIZE, RUNS, SEED, Command
from cli.demo_pipeline import DemoConfig, run_demo


@click.command(cls=Command)
@click.option('-o', '--out', 'out_dir', default='demo_out', show_default=True,
              type=click.Path(file_okay=False), help='Output directory (report.md inside).')
@click.option('--data', default=DemoConfig.data, show_default=True,
              help="'digits' or an image folder / .rec file.")
@click.option('--input-size', type=INPUT_SIZE, default=DemoConfig.input_size,
              show_default=True)
@click.option('--supernet-epochs', type=COUNT, default=DemoConfig.supernet_epochs,
              show_default=True)
@click.option('--subnet-epochs', type=COUNT, default=DemoConfig.subnet_epochs,
              show_default=True)
@click.option('--max-flops', type=AMOUNT, default=DemoConfig.max_flops, show_default=True,
              help='FLOPs limit of the search.')
@click.option('--mode', type=click.Choice(['channel', 'joint']), default=DemoConfig.mode,
              show_default=True, help='Genes searched (joint needs far more supernet epochs).')
@click.option('--population', type=COUNT, default=DemoConfig.population, show_default=True)
@click.option('--generations', type=COUNT, default=DemoConfig.generations, show_default=True)
@click.option('--latency-runs', type=RUNS, default=DemoConfig.latency_runs, show_default=True,
              help="Timed runs per entry of the winner's latency table and of the winner.")
@click.option('--seed', type=SEED, default=DemoConfig.seed, show_default=True)
def main(out_dir, data, input_size, supernet_epochs, subnet_epochs, max_flops, mode,
         population, generations, latency_runs, seed):
    """Train a supernet, search it under a FLOPs limit, train the winner, register it, merge BN,
    export ONNX, quantize to INT8 (MXNet and onnxruntime), profile op by op, score MicroNet and
    write OUT/report.md."""
    config = DemoConfig(data=data, input_size=input_size, supernet_epochs=supernet_epochs,
                        subnet_epochs=subnet_epochs, max_flops=max_flops, mode=mode,
                        population=population, generations=generations,
                        latency_runs=latency_runs, seed=seed)
    summary = run_demo(out_dir, config, progress=lambda message: click.echo(message, err=True))
    click.echo(json.dumps({'winner': summary['winner'], 'micronet': summary['micronet'],
                           'seconds': summary['seconds']}, indent=2, default=str))
    click.echo('report: %s/report.md' % out_dir)

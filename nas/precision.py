"""Compute precision of training (SPEC §3.1 trains in float16 with float32 master weights).

``bfloat16`` (CPU, oneDNN) and ``float16`` (GPU) run through MXNet's AMP: convolutions and fully
connected layers compute in the low precision while every parameter, gradient and optimizer
state stays float32 (the master weights, so NAG needs no ``multi_precision`` copy), BN keeps
float32 statistics and the loss is float32.
float16 adds dynamic loss scaling (AMP's scaler: steps whose gradients overflow are skipped).

MXNet's AMP rewrites the operator functions of the whole process and cannot be switched off or
to another dtype, so one process trains in one low precision; asking for another (float32
included) afterwards is refused rather than silently computed in the wrong precision.
"""
import logging

import mxnet as mx

from .errors import TrainingError
from .train_config import DTYPES

__all__ = ['DTYPES', 'enable_precision', 'scaled']

log = logging.getLogger(__name__)

_active = None  # the dtype this process's AMP computes in, once switched on


def enable_precision(dtype, contexts):
    """Check that this runtime can train in ``dtype`` on ``contexts`` and switch AMP on."""
    global _active
    if dtype not in DTYPES:
        raise TrainingError('unknown dtype %r; use one of %s' % (dtype, ', '.join(DTYPES)))
    if _active is not None and dtype != _active:
        raise TrainingError('this process already computes in %s through MXNet AMP, which cannot '
                            'be switched off or changed; train in %s in a new process'
                            % (_active, dtype))
    if dtype == 'float32' or _active is not None:
        return
    gpus = [c for c in contexts if c.device_type == 'gpu']
    if dtype == 'float16' and len(gpus) < len(contexts):
        raise TrainingError("float16 needs GPUs (--gpus): MXNet 1.9.1 has no float16 GEMM on "
                            "CPU ('FP16 gemm on cpu not implemented'); on CPU use --dtype "
                            "bfloat16")
    if dtype == 'bfloat16':
        if gpus:
            raise TrainingError('bfloat16 runs on CPU only: MXNet 1.9.1 has bfloat16 kernels in '
                                'oneDNN, none on GPU; on GPUs use --dtype float16')
        _probe_bfloat16()
    from mxnet.contrib import amp
    from mxnet.contrib.amp.lists import symbol_bf16
    # Concat is dtype-neutral in MXNet's bfloat16 lists, but a shuffle unit concatenates a
    # float32 pass-through half with a bfloat16 branch, which Concat refuses: run it in float32.
    fp32_ops = symbol_bf16.FP32_FUNCS + ['Concat', 'concat'] if dtype == 'bfloat16' else None
    amp.init(target_dtype=dtype, fp32_ops=fp32_ops)
    _active = dtype
    log.info('MXNet AMP on: convolutions and dense layers compute in %s', dtype)


def _probe_bfloat16():
    """Run a bfloat16 convolution forward and backward; refuse in one line if the runtime can't."""
    if not mx.runtime.Features().is_enabled('MKLDNN'):
        raise TrainingError('bfloat16 needs MXNet built with oneDNN (MKLDNN), which this one is '
                            'not; use --dtype float32')
    from mxnet.contrib.amp.amp import bfloat16
    x = mx.nd.amp_cast(mx.nd.ones((1, 8, 6, 6)), dtype=bfloat16)
    w = mx.nd.amp_cast(mx.nd.ones((8, 8, 3, 3)), dtype=bfloat16)
    w.attach_grad()
    try:
        with mx.autograd.record():
            y = mx.nd.Convolution(x, w, kernel=(3, 3), num_filter=8, no_bias=True, pad=(1, 1))
        y.backward()
        mx.nd.waitall()
    except mx.base.MXNetError as err:
        raise TrainingError('this CPU or MXNet build cannot train in bfloat16 (Convolution: %s); '
                            'use --dtype float32' % str(err).strip().splitlines()[0][:200]) from None


def scaled(losses, trainer):
    """``losses`` scaled by float16's dynamic loss scale (unchanged in other precisions)."""
    if _active != 'float16':
        return losses
    from mxnet.contrib import amp
    with amp.scale_loss(losses, trainer) as scaled_losses:
        return scaled_losses

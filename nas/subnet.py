"""Supernet -> fixed subnet with weights copied (the once-for-all ``get_active_subnet`` idea).

Because the supernet masks every mid tensor after its BN (SPEC §2.2), keeping the leading slice
of every weight gives a physically narrow subnet whose output equals the masked supernet path.
"""
import re

import mxnet as mx

from .errors import ArchError
from .network import OneShotNet

__all__ = ['extract_subnet', 'supernet_param_name']


def supernet_param_name(subnet_name, arch):
    """``units.7.main.0.conv.weight`` -> ``units.7.choices.<block>.main.0.conv.weight``."""
    match = re.match(r'^units\.(\d+)\.(.*)$', subnet_name)
    if not match:
        return subnet_name
    position = int(match.group(1))
    return 'units.%d.choices.%d.%s' % (position, arch.blocks[position], match.group(2))


def extract_subnet(supernet, arch, ctx=mx.cpu()):
    """A fixed ``OneShotNet(arch)`` holding the leading weight slices of ``supernet``'s path."""
    if not supernet.is_supernet:
        raise ArchError('extract_subnet needs a supernet, got a fixed subnet')
    if arch.space != supernet.space:
        raise ArchError('architecture space %s does not match the supernet space %s'
                        % (arch.space, supernet.space))
    subnet = OneShotNet(arch)
    subnet.initialize(ctx=ctx)
    source = supernet._collect_params_with_prefix()
    for name, param in subnet._collect_params_with_prefix().items():
        value = source[supernet_param_name(name, arch)].data(ctx).asnumpy()
        param.set_data(mx.nd.array(value[tuple(slice(0, n) for n in param.shape)], ctx=ctx))
    return subnet

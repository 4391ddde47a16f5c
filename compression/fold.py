"""Batch-norm folding: eval-mode BatchNorm merged into the convolution before it, float and quantized alike.

Also the torch.fx tracer that calibration and lowering share, so all three see the same graph and node names.
"""

import copy
from collections import Counter

import torch
from torch import fx, nn

from compression.admm import weight_quantization

# Layers the integer IR knows: fx must keep them as calls (not trace into them, even when subclassed).
IR_LEAF_MODULES = (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.Upsample, nn.MaxPool2d)


class LayerTracer(fx.Tracer):
    """torch.fx tracer that stops at every layer type the integer IR has a counterpart for."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return isinstance(module, IR_LEAF_MODULES) or super().is_leaf_module(module, qualified_name)


def trace_layers(model: nn.Module) -> fx.GraphModule:
    """The model as an fx graph whose nodes are IR-level layers, named after the modules that run them."""
    graph = LayerTracer().trace(model)
    return fx.GraphModule(model, graph, model.__class__.__name__)


def fold_batch_norm(model: nn.Module) -> fx.GraphModule:
    """A copy of the model in eval mode with every BatchNorm2d that directly follows a Conv2d folded into it.

    The conv computes conv(x) * gamma / sigma + (b - mean) * gamma / sigma + beta with sigma = sqrt(var + eps).
    A quantized conv keeps its codes: alpha absorbs |gamma| / sigma and the sign of gamma flips the codes
    (every codebook is symmetric). A channel with gamma = 0 is the constant beta: its codes become 0.
    The original model is left untouched.
    """
    folded = trace_layers(copy.deepcopy(model).eval())
    modules = dict(folded.named_modules())
    for conv_node, bn_node in foldable_batch_norms(folded):
        _fold_into_conv(modules[conv_node.target], modules[bn_node.target])
        bn_node.replace_all_uses_with(conv_node)
        folded.graph.erase_node(bn_node)
    folded.graph.lint()
    folded.delete_all_unused_submodules()
    folded.recompile()
    return folded


def foldable_batch_norms(traced: fx.GraphModule) -> list[tuple[fx.Node, fx.Node]]:
    """(conv node, batch-norm node) pairs where the batch norm is the conv's only consumer.

    A conv module called more than once shares its weights between calls, so no single batch norm may change them.
    """
    modules = dict(traced.named_modules())
    calls = Counter(node.target for node in traced.graph.nodes if node.op == "call_module")
    pairs = []
    for node in traced.graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], nn.BatchNorm2d):
            continue
        producer = node.args[0]
        if (
            isinstance(producer, fx.Node)
            and producer.op == "call_module"
            and isinstance(modules[producer.target], nn.Conv2d)
            and len(producer.users) == 1
            and calls[producer.target] == 1
        ):
            pairs.append((producer, node))
    return pairs


@torch.no_grad()
def _fold_into_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    if not bn.track_running_stats or bn.running_mean is None:
        raise ValueError("batch norm without running statistics cannot be folded: train it with track_running_stats")
    sigma = torch.sqrt(bn.running_var.double() + bn.eps)
    gamma = bn.weight.double() if bn.affine else torch.ones_like(sigma)
    beta = bn.bias.double() if bn.affine else torch.zeros_like(sigma)
    gain = gamma / sigma
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(sigma)
    new_bias = (bias - bn.running_mean.double()) * gain + beta

    quantization = weight_quantization(conv)
    if quantization is None:
        new_weight = conv.weight.double() * gain.view(-1, 1, 1, 1)
    else:
        _, codes, alpha = quantization
        sign = torch.sign(gain).to(torch.int8)
        new_codes = codes * sign.view(-1, 1, 1, 1)
        new_alpha = torch.where(gain == 0, alpha.double(), alpha.double() * gain.abs())
        conv.weight_codes.copy_(new_codes)
        conv.weight_alpha.copy_(new_alpha.to(conv.weight_alpha.dtype))
        new_weight = conv.weight_alpha.double().view(-1, 1, 1, 1) * new_codes.double()
    conv.weight.copy_(new_weight.to(conv.weight.dtype))
    if conv.bias is None:
        conv.bias = nn.Parameter(new_bias.to(conv.weight.dtype))
    else:
        conv.bias.copy_(new_bias.to(conv.bias.dtype))

"""Lowering of a (compressed) torch model to the integer IR, and the torch model that simulates that IR in float.

The IR's tensors are named after the torch.fx nodes whose outputs they hold (a fused conv + ReLU after the ReLU),
so calibration ranges, the IR, `FakeQuantized` and the ONNX export can be compared tensor by tensor.
"""

import operator
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from compression.admm import weight_quantization
from compression.codebooks import INT8_MAX_CODE, nearest_codes
from compression.fold import fold_batch_norm
from model_store import ir

# The network input is RGB pixels / 255, so the uint8 pixels are its codes unchanged.
PIXEL_QUANT = ir.Quant(scale=1 / 255, zero_point=0)
UINT8_MAX = 255
INT32_RANGE = (-(2**31), 2**31 - 1)
RELU6_CEILING = 6.0

Range = tuple[float, float]


def layer_kind(node: fx.Node, modules: Mapping[str, nn.Module]) -> str | None:
    """What an fx node is in IR terms: conv, relu, relu6, add, upsample, maxpool, concat, batchnorm, or None."""
    if node.op == "call_module":
        module = modules[node.target]
        if isinstance(module, nn.Conv2d):
            return "conv"
        if isinstance(module, nn.ReLU):
            return "relu"
        if isinstance(module, nn.ReLU6) or (
            isinstance(module, nn.Hardtanh) and (module.min_val, module.max_val) == (0.0, RELU6_CEILING)
        ):
            return "relu6"
        if isinstance(module, nn.Upsample):
            return "upsample"
        if isinstance(module, nn.MaxPool2d):
            return "maxpool"
        if isinstance(module, nn.BatchNorm2d):
            return "batchnorm"
        return None
    if node.op == "call_function":
        if node.target in (F.relu, torch.relu, torch.relu_):
            return "relu"
        if node.target is F.relu6:
            return "relu6"
        if node.target in (operator.add, torch.add) and not node.kwargs:
            return "add"
        if node.target is F.interpolate:
            return "upsample"
        if node.target is F.max_pool2d:
            return "maxpool"
        if node.target in (torch.cat, torch.concat):
            return "concat"
        return None
    if node.op == "call_method" and node.target in ("relu", "relu_"):
        return "relu"
    return None


def fused_activation(node: fx.Node, modules: Mapping[str, nn.Module]) -> tuple[ir.Activation, fx.Node]:
    """The clamp a conv or add absorbs (a ReLU/ReLU6 that is its only consumer) and the node holding the result."""
    if len(node.users) == 1:
        (user,) = node.users
        kind = layer_kind(user, modules)
        if kind in ("relu", "relu6") and user.args[0] is node:
            return (ir.Activation.RELU if kind == "relu" else ir.Activation.RELU6), user
    return ir.Activation.NONE, node


def activation_quant(name: str, ranges: Mapping[str, Range], activation: ir.Activation) -> ir.Quant:
    """uint8 quantization covering a tensor's calibrated range and real zero; zero point 0 after a ReLU."""
    if name not in ranges:
        raise ValueError(f"no calibration range for tensor {name!r}: calibrate the model being lowered")
    low, high = (float(v) for v in ranges[name])
    if not (np.isfinite(low) and np.isfinite(high) and low <= high):
        raise ValueError(f"the calibration range of tensor {name!r} must be finite with min <= max, got {low, high}")
    if activation is not ir.Activation.NONE:
        low = 0.0
    if activation is ir.Activation.RELU6:
        high = min(high, RELU6_CEILING)
    low, high = min(low, 0.0), max(high, 0.0)
    if high == low:
        # Always zero: any scale represents it; a unit range keeps its neighbours' multipliers ordinary.
        high = 1.0
    scale = (high - low) / UINT8_MAX
    zero_point = int(np.clip(_round_half_away(-low / scale), 0, UINT8_MAX))
    return ir.Quant(scale=scale, zero_point=zero_point)


def conv_weight_codes(
    conv: nn.Conv2d, int8_max_code: int = INT8_MAX_CODE
) -> tuple[ir.Codebook, np.ndarray, np.ndarray]:
    """(codebook, int8 codes, alpha per output channel) of a conv: its own codebook, or int8 per channel.

    A conv that ADMM did not quantize gets symmetric int8 codes, alpha = max|w| / int8_max_code per channel.
    A channel without nonzero codes (pruned, or a zero batch-norm gamma) gets a stand-in positive alpha:
    its weights are zero whatever alpha is, and the IR needs a positive scale to derive a multiplier.
    """
    quantization = weight_quantization(conv)
    if quantization is None:
        weight = conv.weight.detach().float()
        largest = weight.abs().reshape(len(weight), -1).amax(dim=1)
        alpha = torch.where(largest > 0, largest / int8_max_code, torch.ones_like(largest))
        codes = nearest_codes(weight, ir.Codebook.INT8, alpha)
        codebook = ir.Codebook.INT8
    else:
        codebook, codes, alpha = quantization
        codebook = ir.Codebook(codebook)
    codes = codes.detach().cpu().numpy().astype(np.int8)
    alpha = alpha.detach().cpu().numpy().astype(np.float64)
    used = (codes != 0).reshape(len(codes), -1).any(axis=1) & (alpha > 0)
    stand_in = float(np.median(alpha[used])) if used.any() else 1.0
    codes = np.where(used[:, None, None, None], codes, 0).astype(np.int8)
    outside = np.setdiff1d(codes, codebook.levels)
    if outside.size:
        raise ValueError(
            f"codes {outside.tolist()} are not in the {codebook.value} codebook (a binary layer has no zero code, "
            "so it cannot hold an all-zero channel: give such a layer ternary or wider codes)"
        )
    return codebook, codes, np.where(used, alpha, stand_in).astype(np.float32)


def lower(
    model: nn.Module,
    example_input_shape: Sequence[int],
    ranges: Mapping[str, Range],
    metadata: dict | None = None,
    input_quant: ir.Quant = PIXEL_QUANT,
    int8_max_code: int = INT8_MAX_CODE,
) -> ir.Model:
    """The integer IR of a torch model: batch norm folded, convs quantized, activations from `ranges`.

    `example_input_shape` is (N, C, H, W); the IR keeps (C, H, W). `ranges` maps fx node names to the
    (min, max) of their outputs (`compression.calibration`). The input's codes are `input_quant`
    (pixels / 255 by default). Convs without ADMM codes get int8 codes up to +-`int8_max_code`: 64 keeps
    them on ONNX Runtime's fast U8S8 kernels on AVX2 CPUs without VNNI (`onnx_export.may_saturate_u8s8`)
    at the cost of one bit of weight precision. Raises ValueError naming the first node the IR has no layer for.
    """
    if len(example_input_shape) != 4:
        raise ValueError(f"the example input shape is (N, C, H, W), got {tuple(example_input_shape)}")
    if not 1 <= int8_max_code <= INT8_MAX_CODE:
        raise ValueError(f"int8_max_code lies in [1, {INT8_MAX_CODE}], got {int8_max_code}")
    folded = fold_batch_norm(model)
    with torch.no_grad():
        ShapeProp(folded).propagate(torch.zeros(tuple(example_input_shape)))
    builder = _IRBuilder(folded, ranges, input_quant, int8_max_code)
    for node in folded.graph.nodes:
        builder.add(node)
    lowered = ir.Model(
        inputs=builder.inputs,
        outputs=builder.outputs,
        tensors=builder.tensors,
        layers=builder.layers,
        metadata=dict(metadata or {}),
    )
    ir.derive_requantization(lowered)
    lowered.validate()
    return lowered


class _IRBuilder:
    """Walks the folded fx graph in order, turning node (groups) into IR layers and tensors."""

    def __init__(self, folded: fx.GraphModule, ranges: Mapping[str, Range], input_quant: ir.Quant, int8_max_code: int):
        self.modules = dict(folded.named_modules())
        self.int8_max_code = int8_max_code
        self.ranges = ranges
        self.input_quant = input_quant
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self.tensors: dict[str, ir.TensorSpec] = {}
        self.layers: list[ir.Layer] = []
        self.tensor_of: dict[fx.Node, str] = {}
        self.fused: set[fx.Node] = set()

    def add(self, node: fx.Node) -> None:
        if node in self.fused:
            return
        if node.op == "placeholder":
            self._input(node)
        elif node.op == "output":
            self._outputs(node)
        else:
            kind = layer_kind(node, self.modules)
            handler = {
                "conv": self._conv,
                "add": self._add,
                "upsample": self._upsample,
                "maxpool": self._maxpool,
                "concat": self._concat,
            }.get(kind)
            if handler is None:
                raise ValueError(_unsupported(node, kind))
            handler(node)

    def _input(self, node: fx.Node) -> None:
        if self.inputs:
            raise ValueError(f"the IR takes one input tensor; {node.name!r} is a second one")
        self.inputs.append(node.name)
        self._tensor(node, self.input_quant)

    def _outputs(self, node: fx.Node) -> None:
        for value in _flatten(node.args[0]):
            if not isinstance(value, fx.Node) or value not in self.tensor_of:
                raise ValueError(f"model output {value!r} is not a tensor the IR computes")
            self.outputs.append(self.tensor_of[value])

    def _tensor(self, node: fx.Node, quant: ir.Quant, name_of: fx.Node | None = None) -> str:
        """Registers the tensor `node` produces (named after `name_of`, the last fused node) and returns its name."""
        holder = name_of or node
        shape = tuple(int(d) for d in holder.meta["tensor_meta"].shape)
        self.tensors[holder.name] = ir.TensorSpec(holder.name, shape[1:], quant)
        self.tensor_of[holder] = holder.name
        return holder.name

    def _source(self, value, node: fx.Node) -> str:
        if not isinstance(value, fx.Node) or value not in self.tensor_of:
            raise ValueError(f"node {node.name!r} reads {value!r}, which is not a tensor the IR computes")
        return self.tensor_of[value]

    def _activation_output(self, node: fx.Node) -> tuple[ir.Activation, fx.Node]:
        activation, last = fused_activation(node, self.modules)
        if last is not node:
            self.fused.add(last)
        return activation, last

    def _conv(self, node: fx.Node) -> None:
        conv = self.modules[node.target]
        source = self._source(node.args[0], node)
        if conv.padding_mode != "zeros" or tuple(conv.dilation) != (1, 1):
            raise ValueError(f"conv {node.name!r}: the IR has zero padding and no dilation")
        activation, last = self._activation_output(node)
        output = self._tensor(node, activation_quant(last.name, self.ranges, activation), last)
        try:
            codebook, codes, alpha = conv_weight_codes(conv, self.int8_max_code)
        except ValueError as error:
            raise ValueError(f"conv {node.name!r}: {error}") from None
        input_quant = self.tensors[source].quant
        bias = conv.bias.detach().double().numpy() if conv.bias is not None else np.zeros(len(codes))
        bias_codes = _round_half_away(bias / (input_quant.scale * alpha.astype(np.float64)))
        bias_codes -= input_quant.zero_point * codes.reshape(len(codes), -1).astype(np.int64).sum(axis=1)
        if bias_codes.min() < INT32_RANGE[0] or bias_codes.max() > INT32_RANGE[1]:
            raise ValueError(f"conv {node.name!r}: the bias does not fit int32 in units of s_in * alpha")
        self.layers.append(
            ir.Conv2d(
                name=node.name,
                input=source,
                output=output,
                codes=codes,
                codebook=codebook,
                weight_scale=alpha,
                bias=bias_codes.astype(np.int32),
                stride=_pair(conv.stride),
                padding=_conv_padding(conv, node),
                groups=conv.groups,
                activation=activation,
            )
        )

    def _add(self, node: fx.Node) -> None:
        sources = tuple(self._source(value, node) for value in node.args)
        if len(sources) != 2 or self.tensors[sources[0]].shape != self.tensors[sources[1]].shape:
            raise ValueError(f"add {node.name!r}: the IR adds two tensors of the same shape")
        activation, last = self._activation_output(node)
        output = self._tensor(node, activation_quant(last.name, self.ranges, activation), last)
        self.layers.append(ir.Add(node.name, sources, output, activation=activation))

    def _upsample(self, node: fx.Node) -> None:
        source = self._source(node.args[0], node)
        if node.op == "call_module":
            module = self.modules[node.target]
            mode, scale, size = module.mode, module.scale_factor, module.size
        else:
            options = _call_options(node, ("size", "scale_factor", "mode"))
            mode, scale, size = options.get("mode", "nearest"), options.get("scale_factor"), options.get("size")
        factors = set(_flatten(scale)) if scale is not None else set()
        if mode != "nearest" or size is not None or len(factors) != 1 or float(next(iter(factors))) % 1:
            raise ValueError(f"upsample {node.name!r}: the IR upsamples nearest by one integer scale factor")
        output = self._tensor(node, self.tensors[source].quant)
        self.layers.append(ir.Upsample(node.name, source, output, factor=int(next(iter(factors)))))

    def _maxpool(self, node: fx.Node) -> None:
        source = self._source(node.args[0], node)
        if node.op == "call_module":
            module = self.modules[node.target]
            kernel, stride, padding = module.kernel_size, module.stride, module.padding
            dilation, ceil_mode, indices = module.dilation, module.ceil_mode, module.return_indices
        else:
            options = _call_options(
                node, ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
            )
            kernel, stride = options["kernel_size"], options.get("stride") or options["kernel_size"]
            padding, dilation = options.get("padding", 0), options.get("dilation", 1)
            ceil_mode, indices = options.get("ceil_mode", False), options.get("return_indices", False)
        if _pair(dilation) != (1, 1) or ceil_mode or indices:
            raise ValueError(f"max pool {node.name!r}: the IR has no dilation, ceil mode or indices")
        output = self._tensor(node, self.tensors[source].quant)
        self.layers.append(
            ir.MaxPool2d(node.name, source, output, kernel=_pair(kernel), stride=_pair(stride), padding=_pair(padding))
        )

    def _concat(self, node: fx.Node) -> None:
        dim = _call_options(node, ("dim",)).get("dim", 0)
        if dim not in (1, -3):
            raise ValueError(f"concat {node.name!r}: the IR concatenates channels (dim 1), got dim {dim}")
        sources = tuple(self._source(value, node) for value in node.args[0])
        output = self._tensor(node, activation_quant(node.name, self.ranges, ir.Activation.NONE))
        self.layers.append(ir.Concat(node.name, sources, output))


def _unsupported(node: fx.Node, kind: str | None) -> str:
    what = f"{node.op} {node.target}" if node.op != "call_module" else f"module {node.target}"
    if kind == "batchnorm":
        return f"node {node.name!r} ({what}): a batch norm that does not directly follow a conv cannot be folded"
    if kind in ("relu", "relu6"):
        return (
            f"node {node.name!r} ({what}): a ReLU must be the only consumer of a conv or add, which absorbs it; "
            f"this one follows {node.args[0]!r}"
        )
    return (
        f"node {node.name!r} ({what}) has no integer IR layer; the IR has conv, ReLU/ReLU6 fused into a conv or add, "
        "add, nearest upsample, max pool and channel concat"
    )


def _call_options(node: fx.Node, names: Sequence[str]) -> dict:
    """A call_function node's arguments after the first, by parameter name."""
    return dict(zip(names, node.args[1:], strict=False)) | dict(node.kwargs)


def _flatten(value) -> list:
    if isinstance(value, list | tuple):
        return [item for element in value for item in _flatten(element)]
    return [value]


def _pair(value) -> tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _conv_padding(conv: nn.Conv2d, node: fx.Node) -> tuple[int, int]:
    if conv.padding == "valid":
        return (0, 0)
    if conv.padding == "same":
        if any(k % 2 == 0 for k in conv.kernel_size):
            raise ValueError(f"conv {node.name!r}: 'same' padding of an even kernel is asymmetric; the IR's is not")
        return (conv.kernel_size[0] // 2, conv.kernel_size[1] // 2)
    return _pair(conv.padding)


def _round_half_away(values):
    values = np.asarray(values, dtype=np.float64)
    return (np.sign(values) * np.floor(np.abs(values) + 0.5)).astype(np.int64)


class FakeQuantized(nn.Module):
    """An integer IR model simulated with float torch ops on the same grids: the IR's codes, in torch.

    Convolutions run in float (`dtype`) on the real values s * (q - zp) with weights alpha * codes and biases
    s_in * alpha * (int32 bias + zp fold); their results are snapped to the accumulator's int32 grid (units of
    s_in * alpha) and requantized with m / 2**shift, the real value of the IR's integer multiplier, rounding
    ties away from zero like the reference. Requantization runs in float64, where these products are exact,
    so every tensor's codes equal `model_store.reference.run`'s unless a float32 convolution misses the
    accumulator's integer by half a unit (a large accumulator: then one code may differ by 1).

    forward(x) takes the real input (pixels / 255 for the detector) and returns the dequantized outputs, so it
    stands in for the float model wherever detections are scored; `codes(x)` gives every tensor's uint8 codes.
    """

    def __init__(self, model: ir.Model, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.ir_model = ir.derive_requantization(model)
        self.dtype = dtype
        self.conv_index: dict[str, int] = {}
        # float64 tensors kept out of the buffers, so that .float() cannot round them.
        self.accumulator_units: dict[str, torch.Tensor] = {}
        self.requantization_scales: dict[str, torch.Tensor] = {}
        for layer in model.layers:
            if isinstance(layer, ir.Conv2d):
                index = self.conv_index[layer.name] = len(self.conv_index)
                input_quant = model.tensors[layer.input].quant
                alpha = layer.weight_scale.astype(np.float64)
                codes = layer.codes.astype(np.float64)
                real_bias_codes = layer.bias + input_quant.zero_point * codes.reshape(len(codes), -1).sum(axis=1)
                unit = input_quant.scale * alpha
                self.register_buffer(f"weight_{index}", torch.from_numpy(alpha[:, None, None, None] * codes).to(dtype))
                self.register_buffer(f"bias_{index}", torch.from_numpy(unit * real_bias_codes).to(dtype))
                self.accumulator_units[layer.name] = torch.from_numpy(unit).view(1, -1, 1, 1)
                self.requantization_scales[layer.name] = torch.from_numpy(
                    _real_multiplier(layer.multiplier, layer.shift)
                ).view(1, -1, 1, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        codes = self._codes(x)
        return tuple(self._real(codes[name], name).to(self.dtype) for name in self.ir_model.outputs)

    def codes(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every tensor of the IR, input included, as uint8 codes by name."""
        return {name: value.to(torch.uint8) for name, value in self._codes(x).items()}

    def _codes(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        (input_name,) = self.ir_model.inputs
        input_quant = self.ir_model.tensors[input_name].quant
        codes = {input_name: self._requantize(x.double() / input_quant.scale, input_name, ir.Activation.NONE)}
        for layer in self.ir_model.layers:
            codes[layer.output] = self._run(layer, codes)
        return codes

    def _run(self, layer: ir.Layer, codes: dict[str, torch.Tensor]) -> torch.Tensor:
        if isinstance(layer, ir.Conv2d):
            index = self.conv_index[layer.name]
            real = F.conv2d(
                self._real(codes[layer.input], layer.input).to(self.dtype),
                getattr(self, f"weight_{index}"),
                getattr(self, f"bias_{index}"),
                stride=layer.stride,
                padding=layer.padding,
                groups=layer.groups,
            )
            accumulator = torch.round(real.double() / self.accumulator_units[layer.name])
            scaled = accumulator * self.requantization_scales[layer.name]
            return self._requantize(scaled, layer.output, layer.activation)
        if isinstance(layer, ir.Add):
            multipliers = _real_multiplier(np.array(layer.multipliers), layer.shift)
            scaled = sum(
                self._centred(codes[name], name) * float(multiplier)
                for name, multiplier in zip(layer.inputs, multipliers, strict=True)
            )
            return self._requantize(scaled, layer.output, layer.activation)
        if isinstance(layer, ir.Concat):
            multipliers = _real_multiplier(np.array(layer.multipliers), np.array(layer.shifts))
            parts = [
                self._requantize(self._centred(codes[name], name) * float(multiplier), layer.output, ir.Activation.NONE)
                for name, multiplier in zip(layer.inputs, multipliers, strict=True)
            ]
            return torch.cat(parts, dim=1)
        if isinstance(layer, ir.Upsample):
            return F.interpolate(codes[layer.input], scale_factor=layer.factor, mode="nearest")
        if isinstance(layer, ir.MaxPool2d):
            return F.max_pool2d(codes[layer.input], layer.kernel, layer.stride, layer.padding)
        raise ValueError(f"layer {layer.name!r} of kind {layer.kind!r} has no float simulation")

    def _centred(self, codes: torch.Tensor, name: str) -> torch.Tensor:
        return codes - self.ir_model.tensors[name].quant.zero_point

    def _real(self, codes: torch.Tensor, name: str) -> torch.Tensor:
        return self._centred(codes, name) * self.ir_model.tensors[name].quant.scale

    def _requantize(self, scaled: torch.Tensor, name: str, activation: ir.Activation) -> torch.Tensor:
        """Codes of a tensor from its value in units of its scale: round half away, add zp, clamp (float64)."""
        quant = self.ir_model.tensors[name].quant
        low, high = ir.activation_range(activation, quant)
        return (torch.sign(scaled) * torch.floor(scaled.abs() + 0.5) + quant.zero_point).clamp(low, high)


def _real_multiplier(multiplier, shift) -> np.ndarray:
    """m / 2**shift as float64: exact, since m has 31 significant bits."""
    return np.ldexp(np.asarray(multiplier, dtype=np.float64), -np.asarray(shift, dtype=np.int64))

"""ONNX export of the integer IR as an int8 QDQ model (default domain, opset 13) for ONNX Runtime's CPU kernels.

Every IR tensor is a uint8 tensor that a QuantizeLinear produces and a DequantizeLinear per consumer reads;
weights are int8 codes with a per-channel scale alpha (uint8 codes + 128 where int8 would saturate ONNX
Runtime's U8S8 kernel), biases int32. ONNX Runtime fuses each DequantizeLinear -> op -> QuantizeLinear group
into its integer kernel (QLinearConv, QLinearAdd, QLinearConcat; Resize and MaxPool run on uint8). A conv on a
graph input whose channel count is not a multiple of 4 reads it through a Pad to the next multiple (zero-weight
channels: same accumulators), which keeps ONNX Runtime's QLinearConv off a slow path for 3-channel images.
"""

from collections import Counter

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from model_store import ir

OPSET = 13
# ONNX IR version 7 is the first to carry opset 13; older runtimes read it too.
ONNX_IR_VERSION = 7
BATCH_AXIS = "batch"
RELU6_CEILING = 6.0
UINT8_MAX = 255
INT16_MAX = 32767
UINT8_WEIGHT_ZERO_POINT = 128
# ONNX Runtime's QLinearConv takes a slow path for a graph input of 3 channels (an RGB image): 0.41 ms for the
# detector's stem against 0.25 ms with a fourth, zero-weight channel (AMD EPYC with AVX-512 VNNI, 1 thread).
INPUT_CHANNEL_MULTIPLE = 4


def may_saturate_u8s8(codes: np.ndarray) -> bool:
    """Whether ONNX Runtime's U8S8 kernel on AVX2 CPUs without VNNI may saturate on these int8 codes.

    That kernel (vpmaddubsw) adds the products of two neighbouring taps in int16: 255 * (|c1| + |c2|) must stay
    within 32767 for the two largest codes of every output channel, i.e. codes up to +-64 are always safe.
    """
    magnitudes = np.sort(np.abs(codes.astype(np.int32)).reshape(len(codes), -1), axis=1)
    top_two = magnitudes[:, -2:].sum(axis=1) if magnitudes.shape[1] > 1 else magnitudes[:, -1]
    return bool((UINT8_MAX * top_two > INT16_MAX).any())


def codes_name(model: ir.Model, tensor: str) -> str:
    """The ONNX name of a tensor's uint8 codes: the input keeps its IR name, the others get a suffix."""
    return tensor if tensor in model.inputs else f"{tensor}_quantized"


def export_onnx(model: ir.Model, intermediate_outputs: bool = False) -> bytes:
    """The serialized QDQ ONNX model of an IR model.

    Input: the IR input as uint8 (N, C, H, W). Outputs: the IR outputs dequantized to float, same names.
    With `intermediate_outputs` every layer's uint8 codes are extra outputs (`codes_name`), to compare
    a runtime with the reference layer by layer.
    """
    graph = _GraphBuilder(model)
    for layer in model.layers:
        graph.add_layer(layer)
    outputs = []
    for name in model.outputs:
        graph.dequantize(name, output_name=name)
        outputs.append(graph.value_info(name, TensorProto.FLOAT))
    if intermediate_outputs:
        outputs += [
            graph.value_info(layer.output, TensorProto.UINT8, codes_name(model, layer.output)) for layer in model.layers
        ]
    inputs = [graph.value_info(name, TensorProto.UINT8) for name in model.inputs]
    onnx_graph = helper.make_graph(graph.nodes, "integer_model", inputs, outputs, initializer=graph.initializers)
    onnx_model = helper.make_model(
        onnx_graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="compression.onnx_export",
        ir_version=ONNX_IR_VERSION,
    )
    onnx.checker.check_model(onnx_model, full_check=True)
    return onnx_model.SerializeToString()


class _GraphBuilder:
    def __init__(self, model: ir.Model):
        self.model = model
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.reads: Counter[str] = Counter()
        self.padded: set[str] = set()
        for name, spec in model.tensors.items():
            self.constant(f"{name}_scale", np.float32(spec.quant.scale))
            self.constant(f"{name}_zero_point", np.uint8(spec.quant.zero_point))

    def constant(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def value_info(self, tensor: str, element_type: int, onnx_name: str | None = None) -> onnx.ValueInfoProto:
        shape = [BATCH_AXIS, *self.model.tensors[tensor].shape]
        return helper.make_tensor_value_info(onnx_name or tensor, element_type, shape)

    def dequantize(self, tensor: str, output_name: str | None = None, codes: str | None = None) -> str:
        """A DequantizeLinear of the tensor's codes for one consumer (each reader gets its own, as QDQ expects).

        `codes` reads other uint8 codes with the tensor's scale and zero point (its channel-padded copy).
        """
        self.reads[tensor] += 1
        output_name = output_name or f"{tensor}_dequantized_{self.reads[tensor]}"
        self.nodes.append(
            helper.make_node(
                "DequantizeLinear",
                [codes or codes_name(self.model, tensor), f"{tensor}_scale", f"{tensor}_zero_point"],
                [output_name],
                name=f"{output_name}_dequantize",
            )
        )
        return output_name

    def quantize(self, real: str, tensor: str) -> None:
        self.nodes.append(
            helper.make_node(
                "QuantizeLinear",
                [real, f"{tensor}_scale", f"{tensor}_zero_point"],
                [codes_name(self.model, tensor)],
                name=f"{tensor}_quantize",
            )
        )

    def channel_padded(self, tensor: str, channels: int) -> str:
        """The graph input's codes with zero-point channels appended up to `channels` (one Pad node per input).

        The conv reading them gets zero weight codes on those channels, so every accumulator is unchanged.
        """
        padded = f"{tensor}_channels_padded"
        if padded not in self.padded:
            extra = channels - self.model.tensors[tensor].shape[0]
            pads = self.constant(f"{padded}_pads", np.array([0, 0, 0, 0, 0, extra, 0, 0], np.int64))
            self.nodes.append(
                helper.make_node("Pad", [tensor, pads, f"{tensor}_zero_point"], [padded], name=padded, mode="constant")
            )
            self.padded.add(padded)
        return padded

    def activation(self, real: str, layer_name: str, activation: ir.Activation) -> str:
        if activation is ir.Activation.NONE:
            return real
        clamped = f"{layer_name}_{activation.value}"
        if activation is ir.Activation.RELU:
            self.nodes.append(helper.make_node("Relu", [real], [clamped], name=clamped))
        else:
            low = self.constant(f"{layer_name}_clip_min", np.float32(0.0))
            high = self.constant(f"{layer_name}_clip_max", np.float32(RELU6_CEILING))
            self.nodes.append(helper.make_node("Clip", [real, low, high], [clamped], name=clamped))
        return clamped

    def add_layer(self, layer: ir.Layer) -> None:
        real = f"{layer.name}_real"
        if isinstance(layer, ir.Conv2d):
            real = self._conv(layer, real)
        elif isinstance(layer, ir.Add):
            sources = [self.dequantize(name) for name in layer.inputs]
            self.nodes.append(helper.make_node("Add", sources, [real], name=layer.name))
            real = self.activation(real, layer.name, layer.activation)
        elif isinstance(layer, ir.Concat):
            sources = [self.dequantize(name) for name in layer.inputs]
            self.nodes.append(helper.make_node("Concat", sources, [real], name=layer.name, axis=1))
        elif isinstance(layer, ir.Upsample):
            scales = self.constant(f"{layer.name}_scales", np.array([1, 1, layer.factor, layer.factor], np.float32))
            self.nodes.append(
                helper.make_node(
                    "Resize",
                    [self.dequantize(layer.input), "", scales],
                    [real],
                    name=layer.name,
                    mode="nearest",
                    coordinate_transformation_mode="asymmetric",
                    nearest_mode="floor",
                )
            )
        elif isinstance(layer, ir.MaxPool2d):
            self.nodes.append(
                helper.make_node(
                    "MaxPool",
                    [self.dequantize(layer.input)],
                    [real],
                    name=layer.name,
                    kernel_shape=list(layer.kernel),
                    strides=list(layer.stride),
                    pads=[*layer.padding, *layer.padding],
                )
            )
        else:
            raise ValueError(f"layer {layer.name!r} of kind {layer.kind!r} has no ONNX export")
        self.quantize(real, layer.output)

    def _conv(self, layer: ir.Conv2d, real: str) -> str:
        input_quant = self.model.tensors[layer.input].quant
        codes = layer.codes.astype(np.int8)
        out_channels = len(codes)
        # DequantizeLinear subtracts the input zero point itself: take its fold back out of the IR bias.
        bias = layer.bias.astype(np.int64) + input_quant.zero_point * codes.reshape(out_channels, -1).sum(axis=1)
        source = None
        in_channels = codes.shape[1]
        if layer.input in self.model.inputs and layer.groups == 1 and in_channels % INPUT_CHANNEL_MULTIPLE:
            padded_channels = -(-in_channels // INPUT_CHANNEL_MULTIPLE) * INPUT_CHANNEL_MULTIPLE
            source = self.channel_padded(layer.input, padded_channels)
            codes = np.pad(codes, [(0, 0), (0, padded_channels - in_channels), (0, 0), (0, 0)])
        if np.abs(bias).max(initial=0) >= 2**31:
            raise ValueError(f"conv {layer.name!r}: the bias without the zero-point fold does not fit int32")
        alpha = layer.weight_scale.astype(np.float32)
        weight = f"{layer.name}_weight"
        bias_real = f"{layer.name}_bias"
        if may_saturate_u8s8(codes):
            # Same real weights as uint8 codes + 128: ONNX Runtime then runs its U8U8 kernel, which widens to int16
            # before multiplying and so cannot saturate.
            self.constant(f"{weight}_codes", (codes.astype(np.int16) + UINT8_WEIGHT_ZERO_POINT).astype(np.uint8))
            self.constant(f"{weight}_zero_point", np.full(out_channels, UINT8_WEIGHT_ZERO_POINT, np.uint8))
        else:
            self.constant(f"{weight}_codes", codes)
            self.constant(f"{weight}_zero_point", np.zeros(out_channels, np.int8))
        self.constant(f"{weight}_scale", alpha)
        self.constant(f"{bias_real}_codes", bias.astype(np.int32))
        self.constant(f"{bias_real}_scale", (np.float32(input_quant.scale) * alpha).astype(np.float32))
        self.constant(f"{bias_real}_zero_point", np.zeros(out_channels, np.int32))
        for name in (weight, bias_real):
            self.nodes.append(
                helper.make_node(
                    "DequantizeLinear",
                    [f"{name}_codes", f"{name}_scale", f"{name}_zero_point"],
                    [name],
                    name=f"{name}_dequantize",
                    axis=0,
                )
            )
        kernel = list(codes.shape[2:])
        self.nodes.append(
            helper.make_node(
                "Conv",
                [self.dequantize(layer.input, codes=source), weight, bias_real],
                [real],
                name=layer.name,
                kernel_shape=kernel,
                strides=list(layer.stride),
                pads=[*layer.padding, *layer.padding],
                group=layer.groups,
            )
        )
        return self.activation(real, layer.name, layer.activation)

"""Synthetic integer models for the model_store tests: a small one with every layer kind, a detector-sized one."""

import numpy as np

from model_store.ir import (
    Activation,
    Add,
    Codebook,
    Concat,
    Conv2d,
    MaxPool2d,
    Model,
    Quant,
    TensorSpec,
    Upsample,
    derive_requantization,
)

# Assumed RMS of a layer's uint8 input codes when choosing its output scale, so outputs use the uint8 range.
INPUT_RMS = 12.0


def synthetic_codes(
    rng: np.random.Generator, shape: tuple[int, ...], codebook: Codebook, sparsity: float
) -> tuple[np.ndarray, np.ndarray]:
    """Codes and alpha as a magnitude-pruned, projected trained layer would have them.

    Laplace-distributed weights at a He-like scale (heavy-tailed like trained convolutions); the smallest
    `sparsity` fraction of the layer pruned (so the zeros sit at i.i.d. random positions); each channel's
    survivors projected onto the codebook's nonzero levels at the alpha that fits them best (a grid search).
    A codebook without zero (binary) keeps every weight.
    """
    weights = rng.laplace(scale=(np.prod(shape[1:]) * (1 - sparsity)) ** -0.5, size=shape).reshape(shape[0], -1)
    magnitude = np.abs(weights)
    if codebook is Codebook.INT8:
        alpha = magnitude.max(axis=1) / 127
        codes = np.rint(weights / alpha[:, None])
        return codes.astype(np.int8).reshape(shape), alpha.astype(np.float32)
    if 0 not in codebook.levels:
        sparsity = 0.0
    keep = np.zeros(weights.size, dtype=bool)
    keep[np.argsort(magnitude, axis=None)[round(weights.size * sparsity) :]] = True
    keep = keep.reshape(weights.shape)
    levels = np.unique(np.abs(codebook.levels[codebook.levels != 0])).astype(np.float64)
    codes = np.zeros(weights.shape)
    alpha = np.ones(weights.shape[0])
    for channel in range(weights.shape[0]):
        kept = magnitude[channel, keep[channel]]
        if kept.size == 0:
            continue
        candidates = np.geomspace(kept.min() / levels[-1], kept.max() / levels[0], 256)
        level = levels[np.abs(kept[:, None, None] - candidates[:, None] * levels).argmin(axis=-1)]
        fitted = (kept[:, None] * level).sum(axis=0) / (level * level).sum(axis=0)
        best = (((kept[:, None] - fitted * level) ** 2).sum(axis=0)).argmin()
        alpha[channel] = fitted[best]
        codes[channel, keep[channel]] = np.sign(weights[channel, keep[channel]]) * level[:, best]
    return codes.astype(np.int8).reshape(shape), alpha.astype(np.float32)


def detector_like_model(
    rng: np.random.Generator, codebook: Codebook = Codebook.POW2_4, sparsity: float = 0.9, size=(240, 320)
) -> Model:
    """An IR model with the smart-park detector's graph and sizes (0.76 M weights, 1,686 output channels).

    Its first and last convolutions keep dense int8 codes, the others use `codebook` at `sparsity`.
    """
    height, width = size
    tensors = {"image": TensorSpec("image", (3, height, width), Quant(1 / 255))}
    layers = []

    def conv(name, source, out_channels, kernel, stride=1, activation=Activation.RELU, layer_codebook=codebook):
        in_channels, in_h, in_w = tensors[source].shape
        layer_sparsity = 0.0 if layer_codebook is Codebook.INT8 else sparsity
        codes, alpha = synthetic_codes(rng, (out_channels, in_channels, kernel, kernel), layer_codebook, layer_sparsity)
        taps = np.maximum(np.count_nonzero(codes.reshape(out_channels, -1), axis=1), 1)
        code_rms = np.sqrt((codes.astype(np.float64) ** 2).sum(axis=(1, 2, 3)) / taps)
        accumulator_std = float(np.median(np.sqrt(taps) * INPUT_RMS * code_rms))
        in_scale = tensors[source].quant.scale
        zero_point = 0 if activation is Activation.RELU else 128
        out_scale = in_scale * float(np.median(alpha)) * accumulator_std / 40
        out_shape = (out_channels, (in_h + 2 * (kernel // 2) - kernel) // stride + 1, 0)
        out_shape = (out_channels, out_shape[1], (in_w + 2 * (kernel // 2) - kernel) // stride + 1)
        tensors[name] = TensorSpec(name, out_shape, Quant(out_scale, zero_point))
        bias = rng.normal(0, accumulator_std, out_channels).astype(np.int32)
        layers.append(
            Conv2d(
                name, source, name, codes, layer_codebook, alpha, bias,
                stride=(stride, stride), padding=(kernel // 2, kernel // 2), activation=activation,
            )
        )  # fmt: skip
        return name

    def add(name, a, b):
        scale = 1.5 * max(tensors[a].quant.scale, tensors[b].quant.scale)
        tensors[name] = TensorSpec(name, tensors[a].shape, Quant(scale))
        layers.append(Add(name, (a, b), name))
        return name

    def upsample(name, source):
        channels, in_h, in_w = tensors[source].shape
        tensors[name] = TensorSpec(name, (channels, 2 * in_h, 2 * in_w), tensors[source].quant)
        layers.append(Upsample(name, source, name))
        return name

    def stage(prefix, source, channels, blocks):
        x = conv(f"{prefix}.down", source, channels, 3, stride=2)
        for block in range(blocks):
            body = conv(f"{prefix}.{block}.conv3", x, channels, 3)
            body = conv(f"{prefix}.{block}.conv1", body, channels, 1)
            x = add(f"{prefix}.{block}.add", x, body)
        return x

    stem = conv("stem", "image", 16, 3, stride=2, layer_codebook=Codebook.INT8)
    f4 = stage("stage4", stem, 32, 1)
    f8 = stage("stage8", f4, 64, 2)
    f16 = stage("stage16", f8, 128, 3)
    top8 = upsample("up8", conv("reduce16", f16, 64, 1))
    p8 = conv("merge8", add("sum8", top8, conv("lateral8", f8, 64, 1)), 64, 3)
    top4 = upsample("up4", conv("reduce8", p8, 32, 1))
    p4 = conv("merge4", add("sum4", top4, conv("lateral4", f4, 32, 1)), 32, 3)
    outputs = []
    for head, channels in (("heatmap", (2,)), ("box", (2, 2))):
        hidden = conv(f"{head}.hidden", p4, 32, 3)
        for index, count in enumerate(channels):
            name = f"{head}.out{index}"
            outputs.append(conv(name, hidden, count, 1, activation=Activation.NONE, layer_codebook=Codebook.INT8))
    model = Model(inputs=["image"], outputs=outputs, tensors=tensors, layers=layers, metadata={"labels": ["car"]})
    derive_requantization(model)
    model.validate()
    return model


def small_model(
    rng: np.random.Generator,
    codebook: Codebook = Codebook.POW2_4,
    sparsity: float = 0.5,
    input_zero_point: int = 7,
    batchless_shape=(3, 8, 12),
) -> Model:
    """A few-hundred-weight model with every layer kind, nonzero zero points, grouped and depthwise convolutions.

    image -> conv3x3 (stride 2) -> depthwise 3x3 -> add with the first conv -> maxpool 3/2 pad 1 -> upsample x2
    -> concat with a grouped 1x1 of the add -> conv 1x1 with ReLU6 -> out. The add and the concat requantize
    inputs of different scales; `out` has no clamp and a zero point of 100.
    """
    channels, height, width = batchless_shape
    tensors: dict[str, TensorSpec] = {}

    def spec(name, shape, scale, zero_point=0):
        tensors[name] = TensorSpec(name, shape, Quant(scale, zero_point))

    def conv(name, source, shape, stride, padding, groups, activation, out_zero_point=0):
        codes, alpha = synthetic_codes(rng, shape, codebook, sparsity)
        _, h, w = tensors[source].shape
        out_h = (h + 2 * padding - shape[2]) // stride + 1
        out_w = (w + 2 * padding - shape[3]) // stride + 1
        # An output scale that puts about two standard deviations of the accumulator into the uint8 range.
        accumulator_std = 60 * np.sqrt(np.count_nonzero(codes) / shape[0]) * np.sqrt(np.mean(codes.astype(float) ** 2))
        accumulator_std = max(float(accumulator_std), 1.0)
        scale = tensors[source].quant.scale * float(np.median(alpha)) * accumulator_std / 60
        spec(name, (shape[0], out_h, out_w), scale, out_zero_point)
        bias = rng.normal(0, accumulator_std / 2, shape[0]).astype(np.int32)
        return Conv2d(
            name, source, name, codes, codebook, alpha, bias,
            stride=(stride, stride), padding=(padding, padding), groups=groups, activation=activation,
        )  # fmt: skip

    spec("image", (channels, height, width), 1 / 255, input_zero_point)
    layers = [conv("conv", "image", (4, channels, 3, 3), 2, 1, 1, Activation.RELU)]
    layers.append(conv("depthwise", "conv", (4, 1, 3, 3), 1, 1, 4, Activation.NONE, 120))
    spec("sum", tensors["conv"].shape, 1.5 * max(tensors["conv"].quant.scale, tensors["depthwise"].quant.scale), 3)
    layers.append(Add("sum", ("conv", "depthwise"), "sum", activation=Activation.RELU))
    c, h, w = tensors["sum"].shape
    spec("pooled", (c, (h + 2 - 3) // 2 + 1, (w + 2 - 3) // 2 + 1), tensors["sum"].quant.scale, 3)
    layers.append(MaxPool2d("pool", "sum", "pooled", kernel=(3, 3), stride=(2, 2), padding=(1, 1)))
    c, h, w = tensors["pooled"].shape
    spec("up", (c, 2 * h, 2 * w), tensors["sum"].quant.scale, 3)
    layers.append(Upsample("upsample", "pooled", "up", factor=2))
    layers.append(conv("lateral", "sum", (4, 2, 1, 1), 1, 0, 2, Activation.RELU))
    lateral = tensors["lateral"].shape
    if tensors["up"].shape[1:] != lateral[1:]:
        raise ValueError(f"input shape {batchless_shape} does not pool back to the add's size")
    spec("joined", (8, *lateral[1:]), 0.5 * (tensors["up"].quant.scale + tensors["lateral"].quant.scale), 10)
    layers.append(Concat("concat", ("up", "lateral"), "joined"))
    layers.append(conv("head", "joined", (3, 8, 1, 1), 1, 0, 1, Activation.RELU6, 5))
    layers.append(conv("out", "head", (2, 3, 1, 1), 1, 0, 1, Activation.NONE, 100))
    model = Model(["image"], ["out"], tensors, layers, metadata={"labels": ["car", "person"]})
    derive_requantization(model)
    model.validate()
    return model

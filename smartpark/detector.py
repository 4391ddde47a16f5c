"""The smart-park detector: a small CenterNet-style network for vehicles and persons, in torch.

Built only from layers that the integer IR and the FPGA processing-element array run: regular
3x3 and 1x1 convolutions, batch norm (folded at export), ReLU, elementwise add and nearest x2
upsampling. There is no sigmoid inside the network; `smartpark.decode` applies it in numpy.

The network sees `preprocess(frames)`: RGB pixels divided by 255 and nothing else, so an int8
runtime whose input scale is 1/255 with zero point 0 feeds the raw uint8 pixels unchanged.

Torch is imported by this module; the edge agent never imports it (it uses `smartpark.decode`).
"""

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from smartpark.decode import OUTPUT_STRIDE, decode
from smartpark.detections import LABELS, Detections

DEFAULT_CHECKPOINT = Path(__file__).parent / "checkpoints" / "detector.pt"
# CenterNet's prior: every heatmap cell starts at p = 0.1 so the focal loss does not explode on step one.
HEATMAP_PRIOR_BIAS = -2.19


@dataclass(frozen=True)
class DetectorConfig:
    """Widths and depths of the network. Strides of the stages are 4, 8 and 16."""

    stem_channels: int = 16
    stage_channels: tuple[int, ...] = (32, 64, 128)
    stage_blocks: tuple[int, ...] = (1, 2, 3)
    neck_channels: tuple[int, ...] = (32, 64)  # the stride-4 and stride-8 levels of the top-down path
    head_channels: int = 32
    num_classes: int = len(LABELS)

    def __post_init__(self):
        if len(self.stage_channels) != 3 or len(self.stage_blocks) != 3 or len(self.neck_channels) != 2:
            raise ValueError("DetectorConfig needs three stages (strides 4, 8, 16) and two neck levels")

    @classmethod
    def from_dict(cls, values: dict) -> "DetectorConfig":
        return cls(**{key: tuple(value) if isinstance(value, list) else value for key, value in values.items()})


class ConvBNReLU(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class ResidualBlock(nn.Module):
    """Fused-MBConv with expansion 1: a 3x3 then a 1x1 convolution, added to the input.

    Both convolutions end in ReLU, so the sum of two non-negative tensors stays a uint8 activation
    with zero point 0 in the integer IR.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(ConvBNReLU(channels, channels, 3), ConvBNReLU(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _stage(in_channels: int, out_channels: int, blocks: int) -> nn.Sequential:
    return nn.Sequential(
        ConvBNReLU(in_channels, out_channels, 3, stride=2), *(ResidualBlock(out_channels) for _ in range(blocks))
    )


class Head(nn.Module):
    """A 3x3 convolution shared by one or more 1x1 output layers (plain linear outputs)."""

    def __init__(self, in_channels: int, hidden_channels: int, out_channels: Sequence[int]):
        super().__init__()
        self.hidden = ConvBNReLU(in_channels, hidden_channels, 3)
        self.outputs = nn.ModuleList(nn.Conv2d(hidden_channels, n, 1) for n in out_channels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        hidden = self.hidden(x)
        return [output(hidden) for output in self.outputs]


class CenterNetDetector(nn.Module):
    """Backbone (strides 2..16) + top-down neck to stride 4 + heads.

    forward(x) returns three tensors at stride 4, batch-first:
      heatmap_logits (B, num_classes, H/4, W/4): per-class centre logits (sigmoid in decode),
      log_size (B, 2, H/4, W/4): log(box width / 4), log(box height / 4),
      center_offset (B, 2, H/4, W/4): sub-cell position of the centre, in cells.
    Input height and width must be multiples of 16.
    """

    def __init__(self, config: DetectorConfig | None = None):
        super().__init__()
        self.config = config = config or DetectorConfig()
        c4, c8, c16 = config.stage_channels
        n4, n8 = config.neck_channels
        self.stem = ConvBNReLU(3, config.stem_channels, 3, stride=2)
        self.stage4 = _stage(config.stem_channels, c4, config.stage_blocks[0])
        self.stage8 = _stage(c4, c8, config.stage_blocks[1])
        self.stage16 = _stage(c8, c16, config.stage_blocks[2])
        # Reduce channels before upsampling: the 1x1 runs at the coarse resolution, where it is cheap.
        self.reduce16 = ConvBNReLU(c16, n8, 1)
        self.lateral8 = ConvBNReLU(c8, n8, 1)
        self.merge8 = ConvBNReLU(n8, n8, 3)
        self.reduce8 = ConvBNReLU(n8, n4, 1)
        self.lateral4 = ConvBNReLU(c4, n4, 1)
        self.merge4 = ConvBNReLU(n4, n4, 3)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.heatmap_head = Head(n4, config.head_channels, [config.num_classes])
        self.box_head = Head(n4, config.head_channels, [2, 2])
        nn.init.constant_(self.heatmap_head.outputs[0].bias, HEATMAP_PRIOR_BIAS)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f4 = self.stage4(self.stem(x))
        f8 = self.stage8(f4)
        f16 = self.stage16(f8)
        p8 = self.merge8(self.upsample(self.reduce16(f16)) + self.lateral8(f8))
        p4 = self.merge4(self.upsample(self.reduce8(p8)) + self.lateral4(f4))
        (heatmap_logits,) = self.heatmap_head(p4)
        log_size, center_offset = self.box_head(p4)
        return heatmap_logits, log_size, center_offset


def widen(model: CenterNetDetector, config: DetectorConfig) -> CenterNetDetector:
    """A wider detector that computes exactly what `model` does, for training on from `model`'s weights.

    Every tensor of `model` lands in the leading slice of the wider one; the new channels keep a fresh
    initialization, and every convolution's weights from a new input channel start at zero (Net2Net's
    function-preserving widening, Chen et al. 2016, with zero instead of replicated outgoing weights: no
    symmetry to break). The new channels' activations are then read by nothing until training grows those
    weights. `config` must match `model`'s depths and classes and be at least as wide everywhere.
    """
    check_widening(model.config, config)
    wide = CenterNetDetector(config)
    state = wide.state_dict()
    with torch.no_grad():
        for key, value in model.state_dict().items():
            target = state[key]
            if value.ndim == 4:  # a convolution (out, in, kh, kw): silence the new inputs
                target[:, value.shape[1] :] = 0
            target[tuple(slice(0, n) for n in value.shape)] = value
    wide.load_state_dict(state)
    return wide.train(model.training)


def check_widening(old: DetectorConfig, new: DetectorConfig) -> None:
    """Raise ValueError unless `widen` can take a detector of `old` to `new`: same depths and classes, no
    width smaller."""
    if (new.stage_blocks, new.num_classes) != (old.stage_blocks, old.num_classes):
        raise ValueError("widen changes widths only: stage_blocks and num_classes must match the model's")
    widths = ("stem_channels", "stage_channels", "neck_channels", "head_channels")
    narrower = [name for name in widths if np.any(np.asarray(getattr(new, name)) < np.asarray(getattr(old, name)))]
    if narrower:
        raise ValueError(f"widen cannot narrow a detector: {narrower} smaller than the model's")


# The activations a compressed detector matches to its float teacher (feature distillation,
# compression.distillation): each backbone stage, both neck levels and the heads' hidden layers, so every
# group of low-bit layers has a target close by instead of only the outputs far downstream.
DISTILLATION_FEATURES = (
    "stage4",
    "stage8",
    "stage16",
    "merge8",
    "merge4",
    "heatmap_head.hidden",
    "box_head.hidden",
)

# The layer types the integer IR and the FPGA lowering accept; tests walk the model against this list.
INTEGER_FRIENDLY_LAYERS = (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.Upsample, nn.MaxPool2d)


def preprocess(images: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) uint8 RGB frames to the network input: (B, 3, H, W) float32 pixels / 255."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected (B, H, W, 3) uint8 RGB frames, got {images.dtype} {images.shape}")
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)


def count_macs(model: nn.Module, input_shape: tuple[int, int, int, int] = (1, 3, 240, 320)) -> int:
    """Multiply-accumulates of all convolutions for one frame, counted with forward hooks."""
    total = 0

    def count(module: nn.Conv2d, _inputs, output: torch.Tensor):
        nonlocal total
        per_output = (module.in_channels // module.groups) * module.kernel_size[0] * module.kernel_size[1]
        total += output[0].numel() * per_output

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, nn.Conv2d)]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(input_shape))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return total


def export_fp32_onnx(model: nn.Module, input_shape: tuple[int, int, int, int] = (1, 3, 240, 320)) -> bytes:
    """The float detector as ONNX (opset 17, dynamic batch): the fp32 baseline of the int8 runtimes."""
    import io

    buffer = io.BytesIO()
    torch.onnx.export(
        model.eval(),
        (torch.zeros(input_shape),),
        buffer,
        input_names=["image"],
        output_names=["heatmap_logits", "log_size", "center_offset"],
        dynamic_axes={"image": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    return buffer.getvalue()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@dataclass
class Checkpoint:
    """What `smartpark.train` writes: the architecture, the weights (fp16 to stay small) and how they were made."""

    config: DetectorConfig
    state_dict: dict[str, torch.Tensor]
    metadata: dict = field(default_factory=dict)


def save_checkpoint(model: CenterNetDetector, path: Path | str, metadata: dict | None = None) -> None:
    """Write the weights as fp16 (BN running statistics included) through a temp file + rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        key: value.detach().half() if value.is_floating_point() else value.detach()
        for key, value in model.state_dict().items()
    }
    payload = {"config": asdict(model.config), "state_dict": state, "metadata": metadata or {}}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path | str) -> Checkpoint:
    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    return Checkpoint(DetectorConfig.from_dict(payload["config"]), payload["state_dict"], payload.get("metadata", {}))


def load_detector(path: Path | str | None = None) -> CenterNetDetector:
    """The detector from a checkpoint (the shipped one by default), in fp32 and eval mode."""
    path = Path(path) if path is not None else DEFAULT_CHECKPOINT
    if not path.exists():
        raise FileNotFoundError(f"no detector checkpoint at {path}: train one with `python -m smartpark.train`")
    return detector_from_checkpoint(load_checkpoint(path))


def detector_from_checkpoint(checkpoint: Checkpoint) -> CenterNetDetector:
    """The detector a loaded checkpoint holds, in fp32 and eval mode."""
    model = CenterNetDetector(checkpoint.config)
    model.load_state_dict(
        {key: value.float() if value.is_floating_point() else value for key, value in checkpoint.state_dict.items()}
    )
    return model.eval()


def detect(
    model: nn.Module,
    images: np.ndarray,
    score_threshold: float = 0.05,
    nms_iou: float = 0.5,
    max_detections: int = 100,
) -> list[Detections]:
    """Run the torch model on (B, H, W, 3) uint8 frames and decode to Detections in frame pixels."""
    images = np.asarray(images)
    with torch.no_grad():
        outputs = model(preprocess(images))
    heatmap_logits, log_size, center_offset = (output.numpy() for output in outputs)
    return decode(
        heatmap_logits,
        log_size,
        center_offset,
        image_size=images.shape[1:3],
        stride=OUTPUT_STRIDE,
        score_threshold=score_threshold,
        nms_iou=nms_iou,
        max_detections=max_detections,
    )

"""Checking an uploaded float model before anything is stored: it must load, build and run.

The one kind accepted today is the smart-park detector checkpoint that ``smartpark.detector.save_checkpoint``
writes: ``{"config": DetectorConfig fields, "state_dict": tensors, "metadata": {...}}``, loaded with
``torch.load(weights_only=True)`` so a file can carry no code. Torch is imported here, lazily, so web
processes that never see an upload do not pay for it.
"""

from dataclasses import asdict, dataclass
from typing import IO

# Bounds on what an upload may ask the server to build and run: far above the shipped detector
# (16..128 channels), far below what would exhaust a web worker's memory.
MAX_CHANNELS = 1024
MAX_BLOCKS = 16
MAX_CLASSES = 256
MIN_SIDE, MAX_SIDE, SIDE_MULTIPLE = 32, 1088, 16
DEFAULT_INPUT_SHAPE = (1, 3, 240, 320)
# What the detector sees: RGB pixels / 255 (smartpark.detector.preprocess).
DETECTOR_INPUT_SPEC = {"layout": "NCHW", "dtype": "uint8", "color": "RGB", "scale": 1 / 255, "zero_point": 0}


class CheckpointError(ValueError):
    """The upload is not a usable model; the message says what is wrong with it."""


@dataclass(frozen=True)
class CheckpointInfo:
    architecture: dict
    num_classes: int
    parameters: int
    fp32_bytes: int
    input_shape: tuple[int, int, int, int]


def check_input_shape(shape) -> tuple[int, int, int, int]:
    """(1, 3, H, W) with H and W multiples of 16 between 32 and 1088."""
    try:
        shape = tuple(int(n) for n in shape)
    except (TypeError, ValueError):
        raise CheckpointError(f"input shape must be four integers (1, 3, H, W), got {shape!r}") from None
    if len(shape) != 4 or shape[0] != 1 or shape[1] != 3:
        raise CheckpointError(f"input shape must be (1, 3, H, W): one RGB frame, got {shape}")
    for side in shape[2:]:
        if not (MIN_SIDE <= side <= MAX_SIDE and side % SIDE_MULTIPLE == 0):
            raise CheckpointError(
                f"input height and width must be multiples of {SIDE_MULTIPLE} between {MIN_SIDE} and {MAX_SIDE}, "
                f"got {shape[2]}x{shape[3]}"
            )
    return shape


def load_detector(source: str | IO[bytes]):
    """The float detector (eval mode) of a checkpoint file or binary file object; CheckpointError if it is not one."""
    import torch

    from smartpark.detector import CenterNetDetector, DetectorConfig

    try:
        payload = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises pickle, zip, EOF and runtime errors alike for a bad file
        raise CheckpointError(f"not a PyTorch checkpoint file (torch.load: {_first_line(error)})") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("config"), dict):
        raise CheckpointError(
            "the file is a torch file but not a smart-park detector checkpoint: expected a dict with 'config' "
            "and 'state_dict', as smartpark.detector.save_checkpoint writes"
        )
    state_dict = payload.get("state_dict")
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise CheckpointError("the checkpoint's 'state_dict' must map parameter names to tensors")
    try:
        config = DetectorConfig.from_dict(payload["config"])
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"the checkpoint's 'config' is not a DetectorConfig: {error}") from None
    _check_architecture_bounds(config)
    model = CenterNetDetector(config)
    weights = {key: value.float() if value.is_floating_point() else value for key, value in state_dict.items()}
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as error:
        raise CheckpointError(
            f"the weights do not fit the architecture in 'config': {_shorten(str(error), 600)}"
        ) from None
    if not all(torch.isfinite(value).all() for value in weights.values() if value.is_floating_point()):
        raise CheckpointError("the checkpoint has NaN or infinite weights")
    return model.eval()


def inspect_checkpoint(source: str | IO[bytes], *, labels: list[str], input_shape) -> CheckpointInfo:
    """Load, build and run the detector once on `input_shape`; its classes must be the family's labels."""
    import torch

    from smartpark.detector import count_parameters

    shape = check_input_shape(input_shape)
    model = load_detector(source)
    num_classes = model.config.num_classes
    if num_classes != len(labels):
        raise CheckpointError(
            f"the family has {len(labels)} label(s) ({', '.join(labels)}) but the checkpoint detects "
            f"{num_classes} class(es): upload it to a family with {num_classes} labels"
        )
    with torch.no_grad():
        try:
            outputs = model(torch.rand(shape))
        except RuntimeError as error:
            raise CheckpointError(f"the model does not run on input {shape}: {_first_line(error)}") from None
    expected = [(1, num_classes), (1, 2), (1, 2)]
    got = [tuple(output.shape[:2]) for output in outputs] if isinstance(outputs, tuple | list) else None
    if got != expected or not all(torch.isfinite(output).all() for output in outputs):
        raise CheckpointError(f"the model's outputs are not a detector's heatmap, size and offset maps: {got}")
    parameters = count_parameters(model)
    return CheckpointInfo(
        architecture={key: list(v) if isinstance(v, tuple) else v for key, v in asdict(model.config).items()},
        num_classes=num_classes,
        parameters=parameters,
        fp32_bytes=4 * parameters,
        input_shape=shape,
    )


def _check_architecture_bounds(config) -> None:
    channels = [config.stem_channels, *config.stage_channels, *config.neck_channels, config.head_channels]
    if not all(isinstance(n, int) and 1 <= n <= MAX_CHANNELS for n in channels):
        raise CheckpointError(f"the checkpoint's channel widths must be integers from 1 to {MAX_CHANNELS}: {channels}")
    if not all(isinstance(n, int) and 0 <= n <= MAX_BLOCKS for n in config.stage_blocks):
        raise CheckpointError(f"the checkpoint's stage depths must be integers from 0 to {MAX_BLOCKS}")
    if not (isinstance(config.num_classes, int) and 1 <= config.num_classes <= MAX_CLASSES):
        raise CheckpointError(f"the checkpoint's num_classes must be from 1 to {MAX_CLASSES}")


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return _shorten(text[0] if text else type(error).__name__, 300)


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."

import operator

import numpy as np
import pytest
import torch

from smartpark.detections import LABELS, Detections
from smartpark.detector import (
    INTEGER_FRIENDLY_LAYERS,
    CenterNetDetector,
    count_macs,
    count_parameters,
    detect,
    load_detector,
    preprocess,
)

MAX_MACS = 600_000_000
MAX_PARAMETERS = 2_500_000


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return CenterNetDetector().eval()


def test_fits_the_edge_budget_at_320x240(model):
    assert count_macs(model, (1, 3, 240, 320)) <= MAX_MACS
    assert count_parameters(model) <= MAX_PARAMETERS


def test_count_macs_counts_a_known_convolution():
    conv = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)

    assert count_macs(conv, (1, 3, 16, 16)) == 8 * 8 * 8 * 3 * 3 * 3


def test_outputs_are_stride_4_maps_batch_first(model):
    with torch.no_grad():
        heatmap, log_size, offset = model(torch.zeros(2, 3, 240, 320))

    assert heatmap.shape == (2, len(LABELS), 60, 80)
    assert log_size.shape == offset.shape == (2, 2, 60, 80)


def test_only_layers_the_integer_ir_and_the_fpga_run(model):
    # every leaf module is an allowed layer ...
    for name, module in model.named_modules():
        if not list(module.children()):
            assert isinstance(module, INTEGER_FRIENDLY_LAYERS), f"{name} is a {type(module).__name__}"
        if isinstance(module, torch.nn.Conv2d):
            assert module.kernel_size in ((1, 1), (3, 3)) and module.groups == 1, name
        if isinstance(module, torch.nn.Upsample):
            assert module.mode == "nearest" and module.scale_factor == 2, name
    # ... and the only function the forward pass applies between them is an elementwise add.
    graph = torch.fx.symbolic_trace(model).graph
    for node in graph.nodes:
        if node.op == "call_function":
            assert node.target in (operator.add, operator.getitem), node.format_node()
        assert node.op != "call_method", node.format_node()


def test_preprocess_feeds_pixels_over_255():
    frames = np.full((1, 4, 4, 3), 255, np.uint8)
    frames[0, 0, 0] = (0, 51, 102)

    x = preprocess(frames)

    assert x.shape == (1, 3, 4, 4) and x.dtype == torch.float32
    assert x[0, :, 0, 0].tolist() == pytest.approx([0.0, 0.2, 0.4])
    assert x[0, :, 1, 1].tolist() == [1.0, 1.0, 1.0]


def test_preprocess_refuses_float_frames():
    with pytest.raises(ValueError, match="uint8"):
        preprocess(np.zeros((1, 8, 8, 3), np.float32))


def test_detect_returns_detections_per_frame(model):
    frames = np.random.default_rng(0).integers(0, 256, (2, 240, 320, 3), dtype=np.uint8)

    found = detect(model, frames, score_threshold=0.0, max_detections=7)

    assert len(found) == 2 and all(isinstance(d, Detections) for d in found)
    assert all(0 < len(d) <= 7 for d in found)
    assert all((d.boxes[:, 2] <= 320).all() and (d.boxes[:, 3] <= 240).all() for d in found)


def test_shipped_checkpoint_finds_the_vehicles_of_a_heldout_frame():
    from smartpark.scenes import heldout_seed, render_training_sample

    frame = render_training_sample(heldout_seed(0), "day")
    model = load_detector()

    (found,) = detect(model, frame.image[None], score_threshold=0.3)

    vehicles = frame.boxes[(frame.labels == 0) & ~frame.ignore]
    hits = [any(_iou(box, other) > 0.5 for other in found.boxes[found.labels == 0]) for box in vehicles]
    assert np.mean(hits) >= 0.75


def _iou(a, b) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return width * height / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - width * height)

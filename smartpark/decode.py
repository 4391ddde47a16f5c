"""The detector's box coding in numpy: training targets from boxes, and detections from head outputs.

Both directions live here so they cannot drift apart. No torch: the edge agent decodes the outputs
of every runtime (reference, cpu-int8, fpga-sim, triton) with `decode`.

The coding is CenterNet's at stride 4: a per-class heatmap with a Gaussian peak at each object's
centre cell, the box size as log(size / stride), and the centre's position inside its cell.
"""

from dataclasses import dataclass

import numpy as np

from smartpark.detections import LABELS, Detections

OUTPUT_STRIDE = 4
# Gaussian widths follow TTFNet: sigma = alpha * box size / 6 per axis, so elongated persons get elongated peaks.
GAUSSIAN_ALPHA = 0.54
MIN_SIGMA_CELLS = 0.4
# Cells whose Gaussian falls below this carry no size and offset target.
REGRESSION_MIN_GAUSSIAN = 0.1
# exp() of a wild regression output must not overflow; e^8 cells is far beyond any frame.
LOG_SIZE_LIMITS = (-4.0, 8.0)


@dataclass(frozen=True)
class TargetMaps:
    """Dense training targets for one frame, all at the output resolution (h, w)."""

    heatmap: np.ndarray  # (C, h, w) float32, 1 at centre cells, Gaussian falloff around them
    heatmap_weight: np.ndarray  # (C, h, w) float32, 0 over ignored objects (neither positive nor negative)
    log_size: np.ndarray  # (2, h, w) float32, log(w / stride), log(h / stride) of the object owning the cell
    center_offset: np.ndarray  # (2, h, w) float32, that object's centre minus the cell's index, in cells
    box_weight: np.ndarray  # (h, w) float32, weight of the size and offset targets; sums to 1 per object


def encode_targets(
    boxes: np.ndarray,
    labels: np.ndarray,
    ignore: np.ndarray | None,
    output_size: tuple[int, int],
    num_classes: int = len(LABELS),
    stride: int = OUTPUT_STRIDE,
) -> TargetMaps:
    """Targets for boxes (N, 4) x1 y1 x2 y2 in pixels; `ignore` marks objects not to train on as positives.

    Size and offset are regressed not only at the centre cell but, as in TTFNet, at every cell of
    the object's Gaussian inside its box, weighted by the Gaussian: many more training signals per
    frame, and a peak one cell off the centre still decodes to the right box.
    """
    out_h, out_w = output_size
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    labels = np.asarray(labels, np.int64).reshape(-1)
    ignore = np.zeros(len(boxes), bool) if ignore is None else np.asarray(ignore, bool).reshape(-1)
    heatmap = np.zeros((num_classes, out_h, out_w), np.float32)
    ignored_region = np.zeros((num_classes, out_h, out_w), bool)
    log_size = np.zeros((2, out_h, out_w), np.float32)
    center_offset = np.zeros((2, out_h, out_w), np.float32)
    owner = np.full((out_h, out_w), -1, np.int64)  # which object's size and offset a cell regresses
    owner_strength = np.zeros((out_h, out_w), np.float32)

    cells = boxes / stride
    cells[:, 0::2] = cells[:, 0::2].clip(0, out_w)
    cells[:, 1::2] = cells[:, 1::2].clip(0, out_h)
    widths, heights = cells[:, 2] - cells[:, 0], cells[:, 3] - cells[:, 1]
    ys, xs = np.arange(out_h, dtype=np.float32)[:, None], np.arange(out_w, dtype=np.float32)[None, :]
    # Largest first, and a later object takes a cell where its Gaussian is at least as strong:
    # where two centres share a cell, the smaller object wins, because a large one has other cells.
    for i in np.argsort(-(widths * heights), kind="stable"):
        width, height, label = widths[i], heights[i], labels[i]
        if width <= 0 or height <= 0:
            continue
        x1, y1 = int(np.floor(cells[i, 0])), int(np.floor(cells[i, 1]))
        x2, y2 = int(np.ceil(cells[i, 2])), int(np.ceil(cells[i, 3]))
        if ignore[i]:
            ignored_region[label, y1:y2, x1:x2] = True
            continue
        center_x, center_y = (cells[i, 0] + cells[i, 2]) / 2, (cells[i, 1] + cells[i, 3]) / 2
        cell_x, cell_y = min(int(center_x), out_w - 1), min(int(center_y), out_h - 1)
        sigma_x = max(GAUSSIAN_ALPHA * width / 6, MIN_SIGMA_CELLS)
        sigma_y = max(GAUSSIAN_ALPHA * height / 6, MIN_SIGMA_CELLS)
        gaussian = np.exp(-((xs - cell_x) ** 2) / (2 * sigma_x**2) - ((ys - cell_y) ** 2) / (2 * sigma_y**2))
        gaussian[cell_y, cell_x] = 1.0
        np.maximum(heatmap[label], gaussian, out=heatmap[label])

        inside = np.zeros_like(owner_strength, bool)
        inside[y1:y2, x1:x2] = True
        takes = inside & (gaussian >= REGRESSION_MIN_GAUSSIAN) & (gaussian >= owner_strength)
        takes[cell_y, cell_x] = True
        owner[takes], owner_strength[takes] = i, gaussian[takes]
        log_size[:, takes] = np.array([np.log(width), np.log(height)], np.float32)[:, None]
        center_offset[0, takes] = center_x - np.broadcast_to(xs, takes.shape)[takes]
        center_offset[1, takes] = center_y - np.broadcast_to(ys, takes.shape)[takes]

    # Each object's weights sum to 1, so the loss counts objects, not cells, and large vehicles do not drown persons.
    owned = owner >= 0
    totals = np.bincount(owner[owned], weights=owner_strength[owned], minlength=len(boxes))
    box_weight = np.zeros((out_h, out_w), np.float32)
    box_weight[owned] = owner_strength[owned] / totals[owner[owned]]
    heatmap_weight = np.where(ignored_region & (heatmap < 1.0), 0.0, 1.0).astype(np.float32)
    return TargetMaps(heatmap, heatmap_weight, log_size, center_offset, box_weight)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60.0, 60.0)))


def max_pool_3x3(x: np.ndarray) -> np.ndarray:
    """3x3 max over the last two axes, stride 1, same size (the border padded with -inf)."""
    padded = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(1, 1), (1, 1)], constant_values=-np.inf)
    h, w = x.shape[-2:]
    pooled = padded[..., 0:h, 0:w].copy()
    for dy in range(3):
        for dx in range(3):
            np.maximum(pooled, padded[..., dy : dy + h, dx : dx + w], out=pooled)
    return pooled


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one box (4,) with boxes (N, 4); zero where the union is empty."""
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    intersection = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - intersection
    return np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS: indices of kept boxes, highest score first; a box goes if its IoU with a kept one > threshold."""
    order = np.argsort(-scores, kind="stable")
    keep = []
    while len(order):
        best, order = order[0], order[1:]
        keep.append(best)
        order = order[box_iou(boxes[best], boxes[order]) <= iou_threshold]
    return np.asarray(keep, np.int64)


def classwise_nms(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou_threshold: float) -> np.ndarray:
    """NMS within each class separately; indices of kept boxes, highest score first."""
    keep = [
        np.flatnonzero(labels == label)[nms(boxes[labels == label], scores[labels == label], iou_threshold)]
        for label in np.unique(labels)
    ]
    kept = np.concatenate(keep) if keep else np.zeros(0, np.int64)
    return kept[np.argsort(-scores[kept], kind="stable")]


def decode(
    heatmap_logits: np.ndarray,
    log_size: np.ndarray,
    center_offset: np.ndarray,
    image_size: tuple[int, int] | None = None,
    stride: int = OUTPUT_STRIDE,
    score_threshold: float = 0.05,
    nms_iou: float = 0.5,
    max_detections: int = 100,
) -> list[Detections]:
    """Head outputs (batch-first, as the network returns them) to Detections per frame, in frame pixels.

    heatmap_logits (B, C, h, w), log_size (B, 2, h, w), center_offset (B, 2, h, w).
    image_size (H, W) clips the boxes; it defaults to the output size times the stride.
    """
    heatmap_logits = np.asarray(heatmap_logits, np.float32)
    log_size = np.asarray(log_size, np.float32)
    center_offset = np.asarray(center_offset, np.float32)
    batch, _, out_h, out_w = heatmap_logits.shape
    if log_size.shape != (batch, 2, out_h, out_w) or center_offset.shape != (batch, 2, out_h, out_w):
        shapes = f"heatmap {heatmap_logits.shape}, size {log_size.shape}, offset {center_offset.shape}"
        raise ValueError(f"head outputs disagree: {shapes}")
    frame_h, frame_w = image_size if image_size is not None else (out_h * stride, out_w * stride)

    scores = sigmoid(heatmap_logits)
    peaks = (scores == max_pool_3x3(scores)) & (scores >= score_threshold)
    results = []
    for b in range(batch):
        labels, ys, xs = np.nonzero(peaks[b])
        peak_scores = scores[b, labels, ys, xs]
        # Top-k before NMS bounds the cost; a frame never holds more objects than this.
        top = np.argsort(-peak_scores, kind="stable")[: max_detections * 2]
        labels, ys, xs, peak_scores = labels[top], ys[top], xs[top], peak_scores[top]
        center_x = (xs + center_offset[b, 0, ys, xs]) * stride
        center_y = (ys + center_offset[b, 1, ys, xs]) * stride
        sizes = np.exp(np.clip(log_size[b][:, ys, xs].T, *LOG_SIZE_LIMITS)) * stride  # (n, 2): width, height
        boxes = np.stack(
            [
                np.clip(center_x - sizes[:, 0] / 2, 0, frame_w),
                np.clip(center_y - sizes[:, 1] / 2, 0, frame_h),
                np.clip(center_x + sizes[:, 0] / 2, 0, frame_w),
                np.clip(center_y + sizes[:, 1] / 2, 0, frame_h),
            ],
            axis=1,
        ).astype(np.float32)
        keep = classwise_nms(boxes, peak_scores, labels, nms_iou)[:max_detections]
        results.append(Detections.from_arrays(boxes[keep], peak_scores[keep], labels[keep]))
    return results

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from smartpark.decode import OUTPUT_STRIDE, classwise_nms, decode, encode_targets, max_pool_3x3, nms
from smartpark.detections import PERSON, VEHICLE


def _iou(a, b) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - width * height
    return width * height / union if union > 0 else 0.0


def _brute_force_nms(boxes, scores, threshold) -> list[int]:
    keep = []
    for i in sorted(range(len(scores)), key=lambda i: -scores[i]):  # sorted() is stable, like the real one
        if all(_iou(boxes[i], boxes[j]) <= threshold for j in keep):
            keep.append(i)
    return keep


@st.composite
def scored_boxes(draw, max_boxes=25):
    n = draw(st.integers(0, max_boxes))
    coords = st.floats(0, 100, allow_nan=False, width=32)
    corners = np.array(draw(st.lists(st.tuples(coords, coords, coords, coords), min_size=n, max_size=n)), np.float32)
    corners = corners.reshape(-1, 4)
    boxes = np.concatenate([np.minimum(corners[:, :2], corners[:, 2:]), np.maximum(corners[:, :2], corners[:, 2:])], 1)
    # Few distinct scores, so ties (and the order among them) are exercised too.
    scores = np.array(draw(st.lists(st.sampled_from([0.1, 0.5, 0.7, 0.9]), min_size=n, max_size=n)), np.float32)
    labels = np.array(draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)), np.int64)
    return boxes, scores, labels


@settings(max_examples=150, deadline=None)
@given(scored_boxes(), st.floats(0.0, 0.95))
def test_nms_equals_brute_force(case, threshold):
    boxes, scores, _ = case

    kept = nms(boxes, scores, threshold)

    assert kept.tolist() == _brute_force_nms(boxes, scores, threshold)


@settings(max_examples=100, deadline=None)
@given(scored_boxes(), st.floats(0.0, 0.95))
def test_classwise_nms_suppresses_only_within_a_class(case, threshold):
    boxes, scores, labels = case

    kept = classwise_nms(boxes, scores, labels, threshold)

    expected = []
    for label in (0, 1):
        members = np.flatnonzero(labels == label)
        expected += members[_brute_force_nms(boxes[members], scores[members], threshold)].tolist()
    assert sorted(kept.tolist()) == sorted(expected)
    assert np.all(np.diff(scores[kept]) <= 0)


def test_max_pool_3x3_matches_a_direct_window_max():
    x = np.random.default_rng(0).normal(size=(2, 3, 7, 9)).astype(np.float32)

    pooled = max_pool_3x3(x)

    for y in range(7):
        for xx in range(9):
            window = x[..., max(0, y - 1) : y + 2, max(0, xx - 1) : xx + 2]
            np.testing.assert_array_equal(pooled[..., y, xx], window.max(axis=(-2, -1)))


def _logits(probabilities: np.ndarray) -> np.ndarray:
    p = np.clip(probabilities, 1e-4, 1 - 1e-4)
    return np.log(p / (1 - p))


def test_decode_recovers_the_boxes_that_encode_targets_encoded():
    # given: a frame's boxes (one touching the border, two of different classes overlapping) and an ignored one
    boxes = np.array(
        [[10.5, 20.25, 60.0, 55.5], [100.0, 30.0, 108.5, 52.0], [103.0, 40.0, 140.0, 70.0], [0.0, 150.0, 45.0, 240.0],
         [200.0, 100.0, 204.0, 106.0]],
        np.float32,
    )  # fmt: skip
    labels = np.array([VEHICLE, PERSON, VEHICLE, VEHICLE, PERSON])
    ignore = np.array([False, False, False, False, True])
    targets = encode_targets(boxes, labels, ignore, (240 // OUTPUT_STRIDE, 320 // OUTPUT_STRIDE))

    # when: the "network" outputs exactly the targets
    (found,) = decode(
        _logits(targets.heatmap)[None], targets.log_size[None], targets.center_offset[None], score_threshold=0.5
    )

    # then: every kept box comes back with its class, the ignored one does not
    assert len(found) == 4
    order = np.lexsort((found.boxes[:, 0], found.labels))
    expected = np.lexsort((boxes[:4, 0], labels[:4]))
    np.testing.assert_allclose(found.boxes[order], boxes[:4][expected], atol=1e-3)
    np.testing.assert_array_equal(found.labels[order], labels[:4][expected])


def test_a_peak_next_to_the_centre_still_decodes_to_the_box():
    # given: a vehicle's targets, and a heatmap whose only peak is one cell right of the centre cell
    box = np.array([[40.0, 40.0, 100.0, 80.0]], np.float32)
    targets = encode_targets(box, np.array([VEHICLE]), None, (60, 80))
    cy, cx = np.unravel_index(targets.heatmap[VEHICLE].argmax(), (60, 80))
    heatmap = np.full((1, 2, 60, 80), -10.0, np.float32)
    heatmap[0, VEHICLE, cy, cx + 1] = 3.0

    # when
    (found,) = decode(heatmap, targets.log_size[None], targets.center_offset[None])

    # then: the neighbour cell regresses the same box
    np.testing.assert_allclose(found.boxes, box, atol=1e-3)
    assert np.isclose(targets.box_weight.sum(), 1.0)


def test_ignored_objects_are_neither_positives_nor_negatives():
    targets = encode_targets(np.array([[40.0, 40.0, 60.0, 80.0]]), np.array([PERSON]), np.array([True]), (60, 80))

    assert targets.heatmap.max() == 0 and targets.box_weight.sum() == 0
    assert targets.heatmap_weight[PERSON, 10:20, 10:15].max() == 0
    assert targets.heatmap_weight[VEHICLE].min() == 1


def test_boxes_are_clipped_to_the_frame():
    heatmap = np.full((1, 2, 6, 8), -10.0, np.float32)
    heatmap[0, VEHICLE, 0, 0] = 5.0
    log_size = np.full((1, 2, 6, 8), np.log(10.0), np.float32)  # 40 x 40 px ...
    offset = np.full((1, 2, 6, 8), 0.5, np.float32)  # ... around (2, 2)

    (found,) = decode(heatmap, log_size, offset, image_size=(24, 32))

    np.testing.assert_allclose(found.boxes, [[0.0, 0.0, 22.0, 22.0]])


def test_nothing_above_threshold_gives_empty_detections_per_frame():
    heatmap = np.full((3, 2, 60, 80), -8.0, np.float32)
    zeros = np.zeros((3, 2, 60, 80), np.float32)

    found = decode(heatmap, zeros, zeros)

    assert [len(d) for d in found] == [0, 0, 0]
    assert found[0].boxes.shape == (0, 4) and found[0].labels.dtype == np.int64


def test_an_empty_frame_encodes_to_all_negative_targets():
    targets = encode_targets(np.zeros((0, 4)), np.zeros(0), np.zeros(0, bool), (60, 80))

    assert targets.heatmap.shape == (2, 60, 80) and targets.heatmap.max() == 0
    assert targets.heatmap_weight.min() == 1 and targets.box_weight.sum() == 0

import copy

import pytest
import torch
from torch import nn

from compression.distillation import frozen_teacher, output_mse, relative_feature_error, with_distillation


class TwoHeads(nn.Module):
    """A model with tuple outputs, like the detector's (heatmap, size, offset)."""

    def __init__(self):
        super().__init__()
        self.trunk = nn.Linear(4, 6)
        self.left, self.right = nn.Linear(6, 2), nn.Linear(6, 3)

    def forward(self, x, scale=1.0):
        hidden = torch.relu(self.trunk(x)) * scale
        return self.left(hidden), {"b": self.right(hidden), "a": hidden}


def test_the_distilled_loss_is_the_task_loss_plus_the_weighted_output_gap_on_the_same_inputs():
    torch.manual_seed(0)
    student, teacher = TwoHeads(), frozen_teacher(TwoHeads())
    inputs = torch.randn(5, 4)

    def task_loss(model, batch):
        left, _ = model(batch, scale=2.0)  # keyword arguments reach the teacher too
        return left.sum()

    loss = with_distillation(task_loss, teacher, weight=0.5)(student, inputs)

    with torch.no_grad():
        expected = task_loss(student, inputs) + 0.5 * output_mse(student(inputs, 2.0), teacher(inputs, 2.0))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert student.trunk.weight.grad is not None
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert not teacher.training


def test_output_mse_pairs_every_tensor_and_is_zero_only_on_equal_outputs():
    outputs = (torch.ones(2, 3), {"b": torch.zeros(4), "a": [torch.full((2,), 3.0)]})
    shifted = (torch.ones(2, 3), {"b": torch.zeros(4), "a": [torch.full((2,), 1.0)]})

    assert output_mse(outputs, copy.deepcopy(outputs)).item() == 0.0
    assert output_mse(outputs, shifted).item() == pytest.approx(4.0)
    with pytest.raises(ValueError):
        output_mse(outputs, (torch.ones(2, 3),))
    with pytest.raises(ValueError, match="no tensor"):
        output_mse("not a tensor", "either")


def test_a_loss_that_never_calls_the_model_or_a_weight_that_is_not_positive_is_refused():
    student, teacher = TwoHeads(), frozen_teacher(TwoHeads())

    with pytest.raises(ValueError, match="never called the model"):
        with_distillation(lambda model, batch: torch.tensor(1.0), teacher, 1.0)(student, torch.randn(2, 4))
    with pytest.raises(ValueError, match="positive"):
        with_distillation(lambda model, batch: model(batch)[0].sum(), teacher, 0.0)
    # The hook is gone after a call, also after a failing one: a plain forward adds nothing later.
    assert not student._forward_hooks


def test_feature_distillation_adds_the_mean_relative_gap_of_the_named_activations():
    torch.manual_seed(0)
    student, teacher = TwoHeads(), frozen_teacher(TwoHeads())
    inputs = torch.randn(5, 4)

    def task_loss(model, batch):
        left, _ = model(batch)
        return left.sum()

    loss = with_distillation(task_loss, teacher, weight=0.0, feature_layers=("trunk", "left"), feature_weight=2.0)(
        student, inputs
    )

    with torch.no_grad():
        trunk_gap = relative_feature_error(student.trunk(inputs), teacher.trunk(inputs))
        left_gap = relative_feature_error(student(inputs)[0], teacher(inputs)[0])
        expected = task_loss(student, inputs) + 2.0 * (trunk_gap + left_gap) / 2
    assert trunk_gap > 0 and left_gap > 0
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert student.trunk.weight.grad is not None
    # Every hook is removed after the call: the student and the teacher run as plain modules again.
    assert not student.trunk._forward_hooks and not teacher.trunk._forward_hooks and not student._forward_hooks


def test_relative_feature_error_is_scale_free_and_zero_only_on_equal_activations():
    activation = torch.rand(2, 3, 4, 4) + 0.1
    shifted = activation * 1.5

    assert relative_feature_error(activation, activation.clone()).item() == 0.0
    assert relative_feature_error(shifted, activation).item() == pytest.approx(0.25, rel=1e-5)
    # A layer with 1000x larger activations weighs the same as a small one.
    assert relative_feature_error(1000 * shifted, 1000 * activation).item() == pytest.approx(0.25, rel=1e-5)


def test_feature_distillation_refuses_unknown_layers_and_missing_names():
    teacher = frozen_teacher(TwoHeads())

    with pytest.raises(ValueError, match=r"\['nowhere'\] are not modules of the teacher"):
        with_distillation(lambda m, b: m(b)[0].sum(), teacher, 1.0, feature_layers=("nowhere",), feature_weight=1.0)
    with pytest.raises(ValueError, match="names of the layers"):
        with_distillation(lambda m, b: m(b)[0].sum(), teacher, 1.0, feature_weight=1.0)
    with pytest.raises(ValueError, match="zero or positive"):
        with_distillation(lambda m, b: m(b)[0].sum(), teacher, 1.0, feature_layers=("trunk",), feature_weight=-1.0)
    # A "layer" that returns several tensors (here the whole model) has no one activation to match.
    whole_model = with_distillation(lambda m, b: m(b)[0].sum(), teacher, 1.0, feature_layers=("",), feature_weight=1.0)
    with pytest.raises(ValueError, match="return one tensor, got tuple"):
        whole_model(TwoHeads(), torch.randn(2, 4))
    # A student without the teacher's layer is refused at the call, and leaves no hook behind.
    distilled = with_distillation(lambda m, b: m(b).sum(), teacher, 1.0, feature_layers=("trunk",), feature_weight=1.0)
    stranger = nn.Linear(4, 2)
    with pytest.raises(ValueError, match="not modules of the model"):
        distilled(stranger, torch.randn(2, 4))
    assert not stranger._forward_hooks and not teacher.trunk._forward_hooks

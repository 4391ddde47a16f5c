"""compress(): both modes end in a valid integer model with a truthful report, and the input is untouched."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from compression.admm import AdmmQuantConfig
from compression.pipeline import CompressConfig, compress
from compression.pruning import PruneConfig
from model_store import ir, reference
from model_store.serialization import from_bytes, to_bytes

INPUT_SHAPE = (1, 3, 16, 16)


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.mid = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.head = nn.Conv2d(16, 2, 1)

    def forward(self, x):
        features = self.body(self.stem(x))
        return self.head(features + self.mid(features))


def _batches(count: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        images = torch.rand(8, *INPUT_SHAPE[1:], generator=generator)
        # A target the network can learn: the mean brightness of two colour channels, per output cell.
        target = nn.functional.avg_pool2d(images[:, :2], 2)
        batches.append((images, target))
    return batches


def _loss(model: nn.Module, batch) -> torch.Tensor:
    images, target = batch
    return nn.functional.mse_loss(model(images), target)


@pytest.fixture
def trained() -> TinyNet:
    torch.manual_seed(0)
    model = TinyNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for batch in _batches(60):
        optimizer.zero_grad()
        _loss(model, batch).backward()
        optimizer.step()
    return model.eval()


def _ir_loss(integer_model: ir.Model, batches) -> float:
    losses = []
    for images, target in batches:
        codes = np.clip(np.round(images.numpy() * 255), 0, 255).astype(np.uint8)
        (name,) = integer_model.outputs
        out = reference.run(integer_model, codes)[name]
        quant = integer_model.tensors[name].quant
        losses.append(float(np.mean((reference.dequantize(quant, out) - target.numpy()) ** 2)))
    return float(np.mean(losses))


def test_data_free_compression_gives_a_valid_integer_model_and_leaves_the_original_alone(trained):
    # given
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    config = CompressConfig(AdmmQuantConfig(codebook="ternary"), data_free=True, input_shape=INPUT_SHAPE)

    # when
    result = compress(trained, config)

    # then
    assert all(torch.equal(before[k], v) for k, v in trained.state_dict().items())
    integer_model = from_bytes(to_bytes(result.integer_model))
    convs = [layer for layer in integer_model.layers if isinstance(layer, ir.Conv2d)]
    assert [str(layer.codebook) for layer in convs] == ["int8", "ternary", "ternary", "int8"]
    report = result.report
    assert report.data_free and report.loss_history == []
    assert report.packed_bytes == len(to_bytes(result.integer_model))
    assert report.fp32_bytes == 4 * sum(p.numel() for p in trained.parameters())
    assert report.compression_ratio == report.fp32_bytes / report.packed_bytes > 1
    assert [layer.name for layer in report.layers] == [layer.name for layer in convs]
    json.dumps(report.to_dict())  # the platform stores it as JSON


def test_data_dependent_compression_prunes_quantizes_reports_progress_and_measures(trained):
    # given
    data = _batches(20, seed=1)
    held_out = _batches(4, seed=2)
    seen = []
    config = CompressConfig(
        AdmmQuantConfig(codebook="pow2-4", admm_steps=20, finetune_steps=10),
        pruning=PruneConfig(target_sparsity=0.5, pruning_steps=2, finetune_steps_per_pruning_step=5),
        input_shape=INPUT_SHAPE,
    )

    # when
    result = compress(
        trained,
        config,
        data=data,
        loss_fn=_loss,
        calibration=[images for images, _ in data[:4]],
        metric=lambda subject: (
            _ir_loss(subject, held_out)
            if isinstance(subject, ir.Model)
            else float(_loss(subject, held_out[0]).detach())
        ),
        progress=seen.append,
    )

    # then: the pruned layers keep at least the target's zeros in the integer model
    report = result.report
    pruned = [layer for layer in report.layers if layer.codebook == "pow2-4"]
    assert pruned and all(layer.sparsity >= 0.5 for layer in pruned)
    assert report.pruned_sparsity == pytest.approx(0.5, abs=0.01)
    assert not report.data_free and len(report.loss_history) > 20
    assert report.metric_before is not None and report.metric_after is not None
    # the integer model still does the task: far better than predicting zero everywhere
    zero_loss = float(np.mean([float((target**2).mean()) for _, target in held_out]))
    assert report.metric_after < 0.5 * zero_loss
    phases = [p.phase for p in seen]
    assert phases[-1] == "done" and "calibration" in phases and "lowering" in phases
    assert {"pruning", "quantization", "calibration", "lowering", "total"} <= report.timings.keys()
    assert "| layer | codebook |" in report.markdown()


def test_distillation_adds_the_float_models_output_gap_to_the_loss_and_leaves_the_original_trainable(trained):
    data = _batches(4, seed=1)
    calibration = [images for images, _ in data[:2]]
    quantization = AdmmQuantConfig(codebook="ternary", admm_steps=4, finetune_steps=2)
    before = {name: value.clone() for name, value in trained.state_dict().items()}

    plain = compress(trained, CompressConfig(quantization, input_shape=INPUT_SHAPE), data=data, loss_fn=_loss,
                     calibration=calibration)  # fmt: skip
    distilled = compress(
        trained,
        CompressConfig(quantization, input_shape=INPUT_SHAPE, distillation_weight=10.0),
        data=data,
        loss_fn=_loss,
        calibration=calibration,
    )

    # Step one trains the same weights on the same batch: only the distillation term differs, and it is > 0
    # (the student's batch norm uses batch statistics, the teacher's its running ones).
    assert distilled.report.loss_history[0] > plain.report.loss_history[0]
    assert all(torch.equal(value, before[name]) for name, value in trained.state_dict().items())
    assert all(parameter.requires_grad for parameter in trained.parameters())


def test_feature_distillation_adds_the_inner_activations_gap_on_top_of_the_outputs(trained):
    data = _batches(4, seed=1)
    calibration = [images for images, _ in data[:2]]
    quantization = AdmmQuantConfig(codebook="ternary", admm_steps=4, finetune_steps=2)

    def run(**distillation):
        config = CompressConfig(quantization, input_shape=INPUT_SHAPE, distillation_weight=1.0, **distillation)
        return compress(trained, config, data=data, loss_fn=_loss, calibration=calibration)

    outputs_only = run()
    with_features = run(feature_distillation_weight=5.0, feature_distillation_layers=("body", "mid"))

    # The same first step, plus the relative gap of two ternary-projected layers' activations (> 0).
    assert with_features.report.loss_history[0] > outputs_only.report.loss_history[0]
    assert with_features.integer_model is not None
    assert not any(module._forward_hooks for module in trained.modules())


def test_compression_with_data_but_without_calibration_or_loss_is_refused(trained):
    config = CompressConfig(input_shape=INPUT_SHAPE)
    with pytest.raises(ValueError, match="calibration batches"):
        compress(trained, config, data=_batches(2), loss_fn=_loss)
    with pytest.raises(ValueError, match="come together"):
        compress(trained, config, data=_batches(2), calibration=[torch.rand(2, 3, 16, 16)])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"input_shape": (3, 16, 16)}, "input_shape"),
        ({"input_range": (1.0, 0.0)}, "input_range"),
        ({"quantization": "pow2-4"}, "AdmmQuantConfig"),
        ({"pruning": 0.9}, "PruneConfig"),
        ({"distillation_weight": -1.0}, "distillation_weight"),
        ({"feature_distillation_weight": float("nan")}, "feature_distillation_weight"),
        ({"feature_distillation_weight": 1.0}, "feature_distillation_layers"),
        ({"feature_distillation_layers": "stage4"}, "tuple of module names"),
    ],
)
def test_compress_config_is_checked_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CompressConfig(**kwargs)

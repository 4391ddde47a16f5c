import copy

import pytest
import torch

from compression.admm import AdmmQuantConfig, quantize_, weight_quantization
from compression.codebooks import dequantize, project
from compression.pipeline import CompressConfig, compress
from compression.progress import cycle_batches
from compression.pruning import squash_masks_, weight_layers
from compression.sensitivity import layer_sensitivity, most_sensitive
from model_store.ir import Codebook
from tests.compression.test_admm import conv_regression_task, tiny_conv_net


def loss_with(model, batches, loss_fn) -> float:
    with torch.no_grad():
        return sum(loss_fn(model, batch).item() for batch in batches) / len(batches)


def test_sensitivity_is_the_loss_increase_of_projecting_that_layer_alone():
    model = tiny_conv_net().eval()
    model.train()  # layer_sensitivity evaluates in eval mode and puts the mode back
    batches, loss_fn = conv_regression_task()
    before = copy.deepcopy(model.state_dict())
    layers = weight_layers(model)

    sensitivity = layer_sensitivity(
        model,
        {name: (layers[name], Codebook.TERNARY, None) for name in ("0", "3")},
        cycle_batches(batches),
        loss_fn,
        num_batches=3,
    )

    reference = copy.deepcopy(model).eval()
    expected = {}
    for name in ("0", "3"):
        projected = copy.deepcopy(reference)
        conv = weight_layers(projected)[name]
        codes, alpha = project(conv.weight.data, Codebook.TERNARY)
        conv.weight.data = dequantize(codes, alpha)
        expected[name] = loss_with(projected, batches[:3], loss_fn) - loss_with(reference, batches[:3], loss_fn)
    assert sensitivity == pytest.approx(expected, rel=1e-5)
    assert all(value > 0 for value in sensitivity.values())
    assert model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_a_layer_already_on_its_codebook_costs_nothing():
    model = tiny_conv_net()
    batches, loss_fn = conv_regression_task()
    codes, alpha = project(model[3].weight.data, Codebook.TERNARY)
    model[3].weight.data = dequantize(codes, alpha)
    layers = weight_layers(model)

    sensitivity = layer_sensitivity(
        model, {name: (layers[name], Codebook.TERNARY, None) for name in layers}, iter(batches), loss_fn, 4
    )

    assert abs(sensitivity["3"]) < 1e-5 < min(sensitivity["0"], sensitivity["6"])


def test_most_sensitive_fills_the_budget_most_sensitive_first():
    sensitivity = {"a": 0.1, "b": 0.9, "c": 0.5, "d": 0.3, "e": 0.0, "f": -0.2}
    sizes = {"a": 10, "b": 50, "c": 80, "d": 30, "e": 1, "f": 1}

    # b fits, c does not (130 > 100) and is passed over, d and then a fill the rest; e and f never help.
    assert most_sensitive(sensitivity, sizes, budget=100) == ["b", "d", "a"]
    assert most_sensitive(sensitivity, sizes, budget=1000) == ["b", "c", "d", "a"]
    assert most_sensitive(sensitivity, sizes, budget=5) == []


def test_quantize_gives_the_sensitive_codebook_to_the_layers_the_measurement_chose():
    model = tiny_conv_net()
    batches, loss_fn = conv_regression_task()
    config = AdmmQuantConfig(
        codebook="ternary",
        sensitive_codebook="pow2-4",
        sensitive_fraction=0.3,  # 247 of the 824 weights: the 216 of layer 0 or the 32 of layer 6, not the 576 of 3
        int8_boundary_layers=False,
        sensitivity_batches=4,
        admm_steps=4,
        finetune_steps=1,
    )
    layers = weight_layers(model)
    copied = copy.deepcopy(model)
    measured = layer_sensitivity(
        copied,
        {name: (module, Codebook.TERNARY, None) for name, module in weight_layers(copied).items()},
        cycle_batches(batches),
        loss_fn,
        4,
    )
    events = []

    report = quantize_(model, config, batches, loss_fn, progress=events.append)

    assert report.sensitivity == pytest.approx(measured, rel=1e-5)
    sizes = {name: module.weight.numel() for name, module in layers.items()}
    chosen = most_sensitive(measured, sizes, budget=int(0.3 * sum(sizes.values())))
    assert chosen and "3" not in chosen
    for name, module in layers.items():
        assert weight_quantization(module)[0] is (Codebook.POW2_4 if name in chosen else Codebook.TERNARY)
    sensitivity_events = [event for event in events if event.phase == "sensitivity"]
    assert [(event.step, event.total) for event in sensitivity_events] == [(1, 3), (2, 3), (3, 3)]


def test_only_layers_on_the_main_codebook_are_candidates():
    model = tiny_conv_net()
    config = AdmmQuantConfig(codebook="ternary", sensitive_codebook="pow2-4", layer_codebooks={"3": "ternary"})

    assert config.sensitive_candidates(config.layer_codebook_plan(model)) == []  # 0 and 6 are int8, 3 is named


def test_sensitive_codebook_without_data_is_refused_and_changes_nothing():
    model = tiny_conv_net()
    before = copy.deepcopy(model.state_dict())

    with pytest.raises(ValueError, match="sensitive_codebook chooses layers by their loss, so it needs data"):
        quantize_(model, AdmmQuantConfig(codebook="ternary", sensitive_codebook="pow2-4"))

    assert all(torch.equal(value, before[key]) for key, value in model.state_dict().items())
    assert weight_quantization(model[3]) is None


def test_a_pruned_layer_cannot_be_offered_the_binary_codebook():
    model = tiny_conv_net()
    model[3].register_buffer("weight_mask", torch.ones_like(model[3].weight, dtype=torch.bool))
    squash_masks_(model)
    batches, loss_fn = conv_regression_task()

    with pytest.raises(ValueError, match=r"\['3'\] are pruned but may get the binary codebook"):
        quantize_(model, AdmmQuantConfig(codebook="ternary", sensitive_codebook="binary"), batches, loss_fn)
    assert weight_quantization(model[3]) is None


class CamelCaseNet(torch.nn.Module):
    """Attribute names that torch.fx rewrites (CamelCase to snake_case) in the node names the IR takes."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.Stem = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU())
        self.midBlock = torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU())
        self.headOut = torch.nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.headOut(self.midBlock(self.Stem(x)))


def test_the_compression_report_carries_each_layers_sensitivity_under_its_ir_name():
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(32, 3, 8, 8, generator=generator)
    targets = torch.randn(32, 4, 8, 8, generator=generator)
    batches = [(inputs[i : i + 8], targets[i : i + 8]) for i in range(0, 32, 8)]
    config = CompressConfig(
        AdmmQuantConfig(codebook="ternary", sensitive_codebook="pow2-4", admm_steps=2, finetune_steps=1),
        input_shape=(1, 3, 8, 8),
    )

    result = compress(
        CamelCaseNet(),
        config,
        data=batches,
        loss_fn=lambda model, batch: ((model(batch[0]) - batch[1]) ** 2).mean(),
        calibration=[images for images, _ in batches],
    )

    by_name = {layer.name: layer for layer in result.report.layers}
    # the first and last layers stay int8 and were no candidates; the middle one was measured
    assert by_name["stem_0"].sensitivity is None and by_name["head_out"].sensitivity is None
    measured = by_name["mid_block_0"].sensitivity
    assert measured is not None and measured > 0

import itertools

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from compression.admm import AdmmQuantConfig, quantize_, weight_quantization
from compression.pruning import (
    CubicSparsitySchedule,
    PruneConfig,
    boundary_layers,
    prune_,
    squash_masks_,
    weight_mask,
)
from smartpark.detector import CenterNetDetector, DetectorConfig


def tiny_conv_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 4, 1),
    )


def regression_task(model: nn.Module) -> tuple[list, callable]:
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(48, 3, 8, 8, generator=generator)
    with torch.no_grad():
        targets = model.eval()(inputs) + 0.1 * torch.randn(48, 4, 8, 8, generator=generator)
    model.train()
    batches = [(inputs[i : i + 16], targets[i : i + 16]) for i in range(0, 48, 16)]
    return batches, lambda net, batch: ((net(batch[0]) - batch[1]) ** 2).mean()


def sparsity(module: nn.Module) -> float:
    return 1 - weight_mask(module).float().mean().item()


def test_cubic_schedule_prunes_fast_then_gently_to_the_target():
    schedule = CubicSparsitySchedule(target=0.8, steps=4, initial=0.1)

    values = [schedule.sparsity_at(step) for step in range(6)]

    assert values[0] == pytest.approx(0.1) and values[4] == values[5] == pytest.approx(0.8)
    assert values[2] == pytest.approx(0.8 + (0.1 - 0.8) / 8)
    steps = [later - earlier for earlier, later in itertools.pairwise(values[:5])]
    assert steps == sorted(steps, reverse=True)


def test_boundary_layers_of_the_detector_are_its_stem_and_its_three_outputs():
    model = CenterNetDetector(DetectorConfig(stage_blocks=(1, 1, 1)))

    assert boundary_layers(model) == {"stem.0", "heatmap_head.outputs.0", "box_head.outputs.0", "box_head.outputs.1"}


def test_boundary_layers_of_an_untraceable_model_are_its_first_and_last():
    class Branching(nn.Module):
        def __init__(self):
            super().__init__()
            self.first, self.middle, self.last = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            hidden = self.first(x)
            if hidden.sum() > 0:  # data-dependent: torch.fx cannot trace it
                hidden = self.middle(hidden)
            return self.last(hidden)

    assert boundary_layers(Branching()) == {"first", "last"}


def test_magnitude_pruning_follows_the_schedule_and_keeps_the_largest_weights():
    model = tiny_conv_net()
    original = {name: model.get_submodule(name).weight.detach().clone() for name in ("3", "6")}
    config = PruneConfig(target_sparsity=0.75, pruning_steps=4)
    seen = []

    def record(event):
        seen.append((event.step, sparsity(model[3]), sparsity(model[6])))

    report = prune_(model, config, progress=record)

    assert report.importance == "magnitude"
    expected = [config.schedule.sparsity_at(step) for step in range(1, 5)]
    assert report.sparsity_schedule == pytest.approx(expected)
    for (step, first, second), target in zip(seen, expected, strict=True):
        assert first == pytest.approx(target, abs=1e-3) and second == pytest.approx(target, abs=1e-3), step
    assert report.sparsity == pytest.approx(0.75, abs=1e-3)
    assert weight_mask(model[0]) is None and weight_mask(model[9]) is None  # boundary layers are skipped
    for name, weight in original.items():
        mask = weight_mask(model.get_submodule(name))
        assert weight[~mask].abs().max() <= weight[mask].abs().min()
        assert torch.equal(model.get_submodule(name).weight, weight * mask)


def test_taylor_importance_prunes_what_the_loss_ignores_and_magnitude_does_not():
    generator = torch.Generator().manual_seed(3)
    inputs, targets = torch.randn(64, 8, generator=generator), torch.randn(64, 2, generator=generator)
    batches = [(inputs[i : i + 16], targets[i : i + 16]) for i in range(0, 64, 16)]

    def loss_fn(model, batch):
        return ((model(batch[0]) - batch[1]) ** 2).mean()

    def model_with_large_dead_weights():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
        # Two hidden units are dead after ReLU, so the middle layer's large weights on them change no loss.
        model[0].weight.data[:2] = 0.0
        model[0].bias.data[:2] = -1.0
        model[2].weight.data[:, :2] = 3.0
        model[2].bias.data[:] = 5.0  # every other weight of the middle layer does reach the loss
        return model

    taylor, magnitude = model_with_large_dead_weights(), model_with_large_dead_weights()
    config = PruneConfig(target_sparsity=0.25, pruning_steps=1, finetune_steps_per_pruning_step=0)

    taylor_report = prune_(taylor, config, batches, loss_fn)
    magnitude_report = prune_(magnitude, PruneConfig(target_sparsity=0.25, pruning_steps=1, importance="magnitude"))

    assert taylor_report.importance == "taylor" and magnitude_report.importance == "magnitude"
    assert not weight_mask(taylor[2])[:, :2].any()
    assert weight_mask(magnitude[2])[:, :2].all()
    assert weight_mask(taylor[2]).float().mean() == pytest.approx(0.75)


def test_fine_tuning_between_pruning_steps_never_revives_a_pruned_weight():
    model = tiny_conv_net()
    batches, loss_fn = regression_task(model)
    config = PruneConfig(target_sparsity=0.5, pruning_steps=3, finetune_steps_per_pruning_step=4, learning_rate=1e-2)

    report = prune_(model, config, batches, loss_fn)

    assert len(report.loss_history) == 12 and report.importance == "taylor"
    for module in (model[3], model[6]):
        assert parametrize.is_parametrized(module, "weight")
        assert (module.weight[~weight_mask(module)] == 0).all()
        assert sparsity(module) == pytest.approx(0.5, abs=1e-3)


def test_global_scope_reaches_the_target_over_all_pruned_weights():
    model = tiny_conv_net()
    model[6].weight.data *= 10  # a layer of larger scale gives up fewer weights when ranked globally

    report = prune_(model, PruneConfig(target_sparsity=0.6, pruning_steps=2, scope="global", importance="magnitude"))

    assert report.sparsity == pytest.approx(0.6, abs=1e-3)
    assert sparsity(model[3]) > 0.9 and sparsity(model[6]) < 0.6


def test_squash_makes_zeros_permanent_and_keeps_the_mask_for_another_round():
    model = tiny_conv_net()
    prune_(model, PruneConfig(target_sparsity=0.5, pruning_steps=1))
    mask = weight_mask(model[3]).clone()

    assert squash_masks_(model) == ["3", "6"]

    assert not parametrize.is_parametrized(model[3], "weight")
    assert isinstance(model[3].weight, nn.Parameter) and (model[3].weight[~mask] == 0).all()
    assert torch.equal(model[3].weight_mask, mask) and torch.equal(weight_mask(model[3]), mask)
    prune_(model, PruneConfig(target_sparsity=0.7, pruning_steps=1))
    assert not weight_mask(model[3])[~mask].any()  # pruned weights stay pruned
    assert sparsity(model[3]) == pytest.approx(0.7, abs=1e-3)


def test_masks_survive_admm_quantization():
    model = tiny_conv_net()
    batches, loss_fn = regression_task(model)
    pruning = PruneConfig(target_sparsity=0.6, pruning_steps=2, finetune_steps_per_pruning_step=2)
    prune_(model, pruning, batches, loss_fn)
    masks = {name: weight_mask(model.get_submodule(name)).clone() for name in ("3", "6")}
    config = AdmmQuantConfig(admm_steps=10, steps_per_projection=2, learning_rate=1e-2, finetune_steps=3)

    report = quantize_(model, config, batches, loss_fn)

    for name, mask in masks.items():
        module = model.get_submodule(name)
        _, codes, _ = weight_quantization(module)
        assert (codes[~mask] == 0).all() and (module.weight[~mask] == 0).all()
        assert (codes == 0).float().mean() >= 0.6 - 1e-3
        assert torch.equal(weight_mask(module), mask)
    zero_codes = {layer.name: layer.zero_codes for layer in report.layers}
    assert zero_codes["3"] >= 0.6 - 1e-3 and zero_codes["6"] >= 0.6 - 1e-3


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"target_sparsity": 1.0}, r"target_sparsity is a fraction in \[0, 1\)"),
        ({"importance": "hessian"}, "importance is one of"),
        ({"scope": "channel"}, "scope is one of"),
        ({"pruning_steps": 0}, "pruning_steps must be at least 1"),
        ({"finetune_steps_per_pruning_step": -1}, "cannot be negative"),
        ({"learning_rate": 0.0}, "learning_rate must be positive"),
        ({"skip_layers": "stem.0"}, "skip_layers is a tuple of layer names"),
    ],
)
def test_config_rejects_what_cannot_run(arguments, message):
    with pytest.raises(ValueError, match=message):
        PruneConfig(**arguments)


def test_prune_rejects_unknown_layers_nothing_to_prune_and_half_the_training_inputs():
    with pytest.raises(ValueError, match=r"skip_layers names no Conv2d or Linear of the model: \['stem'\]"):
        prune_(tiny_conv_net(), PruneConfig(skip_layers=("stem",)))
    with pytest.raises(ValueError, match="no layer is left to prune"):
        prune_(tiny_conv_net(), PruneConfig(skip_layers=("3", "6")))
    with pytest.raises(ValueError, match="pass both data and loss_fn"):
        prune_(tiny_conv_net(), PruneConfig(), loss_fn=lambda model, batch: model(batch).sum())

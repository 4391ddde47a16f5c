import numpy as np
import pytest
import torch
from torch import nn

from compression.calibration import calibrate, data_free_ranges, reestimate_batch_norm_
from compression.fold import fold_batch_norm


class SmallParkNet(nn.Module):
    """Conv-BN-ReLU blocks, a residual add of two ReLU outputs, upsample, max pool and a linear output conv."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU6())
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        stem = self.stem(x)
        return self.head(self.pool(self.upsample(stem + self.body(stem))))


def _trained_statistics(model: nn.Module, batches: list[torch.Tensor]) -> nn.Module:
    """Batch-norm running statistics that are exactly the data's (cumulative average), as after training."""
    torch.manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None
            with torch.no_grad():
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    model.train()
    with torch.no_grad():
        for batch in batches:
            model(batch)
    return model.eval()


def _layer_outputs(model: nn.Module, batch: torch.Tensor) -> dict[str, np.ndarray]:
    """Outputs of the unfolded model's activation, resampling and output layers by fx node name, via hooks."""
    watched = (nn.ReLU, nn.ReLU6, nn.Upsample, nn.MaxPool2d)
    outputs, hooks = {}, []
    for name, module in model.named_modules():
        if isinstance(module, watched) or name == "head":
            node_name = name.replace(".", "_")
            hooks.append(module.register_forward_hook(lambda _m, _i, out, key=node_name: outputs.update({key: out})))
    with torch.no_grad():
        model(batch)
    for hook in hooks:
        hook.remove()
    return {name: value.numpy() for name, value in outputs.items()}


@pytest.fixture(scope="module")
def batches():
    generator = torch.Generator().manual_seed(1)
    return [torch.rand(4, 3, 12, 16, generator=generator) for _ in range(3)]


@pytest.fixture(scope="module")
def model(batches):
    torch.manual_seed(2)
    return _trained_statistics(SmallParkNet(), batches)


def test_min_max_ranges_contain_every_value_of_every_tensor(model, batches):
    ranges = calibrate(model, batches, percentile=100.0)

    seen = {}
    for batch in batches:
        for name, values in _layer_outputs(model, batch).items():
            low, high = seen.get(name, (np.inf, -np.inf))
            seen[name] = (min(low, values.min()), max(high, values.max()))
    assert set(seen) == {"stem_2", "body_2", "upsample", "pool", "head"}
    for name, (low, high) in seen.items():
        assert ranges[name] == pytest.approx((low, high)), name


def test_percentile_ranges_are_the_percentiles_of_all_values_of_all_batches(model, batches):
    full = calibrate(model, batches, percentile=100.0)
    clipped = calibrate(model, batches, percentile=99.0)

    values = {}
    for batch in batches:
        for name, output in _layer_outputs(model, batch).items():
            values.setdefault(name, []).append(output.ravel())
    for name, chunks in values.items():
        data = np.concatenate(chunks)
        low, high = clipped[name]
        assert (low, high) == pytest.approx(tuple(np.percentile(data, [1.0, 99.0])), rel=1e-6, abs=1e-7), name
        assert full[name][0] <= low <= high <= full[name][1]


def test_percentiles_hold_when_one_batch_has_all_the_extremes():
    # A bright scene among dark ones: every value above the 99th percentile lies in the first batch.
    generator = torch.Generator().manual_seed(3)
    scenes = [torch.rand(1, 1, 256, 256, generator=generator) * scale for scale in (10.0, 1.0, 1.0, 1.0)]
    net = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False), nn.ReLU())
    with torch.no_grad():
        net[0].weight.fill_(1.0)

    ranges = calibrate(net, scenes, percentile=99.0)

    everything = torch.cat(scenes).numpy()
    assert ranges["_1"] == pytest.approx(tuple(np.percentile(everything, [1.0, 99.0])), rel=1e-6)


def test_ranges_name_the_folded_graph_tensors_the_lowering_reads(model, batches):
    ranges = calibrate(model, batches)

    folded = fold_batch_norm(model)
    names = {node.name for node in folded.graph.nodes if node.op != "output"}
    assert names == set(ranges)
    assert ranges["x"][0] >= 0.0 and ranges["x"][1] <= 1.0


def test_data_free_ranges_hold_the_data_after_each_relu(model, batches):
    ranges = data_free_ranges(model)

    for batch in batches:
        for name, values in _layer_outputs(model, batch).items():
            low, high = ranges[name]
            inside = np.mean((values >= low) & (values <= high))
            if name == "head":
                # A linear conv without batch norm: moments propagated through its weights, most of the data.
                assert inside >= 0.99, (name, inside)
            else:
                assert low == 0.0, name
                assert inside >= 0.999, (name, inside)
    assert ranges["body_2"][1] <= 6.0


def test_data_free_ranges_come_from_batch_norm_statistics_alone(model):
    shifted = _trained_statistics(SmallParkNet(), [torch.rand(2, 3, 8, 8)])
    shifted.load_state_dict(model.state_dict())
    with torch.no_grad():
        shifted.stem[1].bias += 1.0

    before, after = data_free_ranges(model), data_free_ranges(shifted)

    assert after["stem_2"][1] == pytest.approx(before["stem_2"][1] + 1.0, abs=1e-9)


def test_calibration_refuses_bad_arguments(model, batches):
    with pytest.raises(ValueError, match="percentile"):
        calibrate(model, batches, percentile=30.0)
    with pytest.raises(ValueError, match="at least one batch"):
        calibrate(model, [])
    with pytest.raises(ValueError, match="num_std"):
        data_free_ranges(model, num_std=0.0)
    with pytest.raises(ValueError, match="input range"):
        data_free_ranges(model, input_range=(1.0, 0.0))


def test_batch_norm_reestimation_averages_every_batch_with_the_final_weights_and_trains_nothing():
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU())
    norm = net[1]
    norm.running_mean.fill_(5.0)  # stale statistics from "training"
    norm.running_var.fill_(9.0)
    batches = [torch.randn(2, 3, 8, 8) * (1 + k) for k in range(3)]
    weights_before = {name: value.clone() for name, value in net.named_parameters()}
    calls = []

    def loss_fn(model, batch):
        calls.append(torch.is_grad_enabled())
        return model(batch).sum()

    net.train()
    used = reestimate_batch_norm_(net, batches, loss_fn, batches=5)  # cycles: 0, 1, 2, 0, 1

    with torch.no_grad():
        outputs = [net[0](batches[k]) for k in (0, 1, 2, 0, 1)]
    means = torch.stack([o.mean(dim=(0, 2, 3)) for o in outputs]).mean(0)
    variances = torch.stack([o.transpose(0, 1).reshape(4, -1).var(1, unbiased=True) for o in outputs]).mean(0)
    assert used == 5 and calls == [False] * 5
    torch.testing.assert_close(norm.running_mean, means)
    torch.testing.assert_close(norm.running_var, variances)
    assert norm.momentum == 0.1 and net.training and norm.training
    assert all(torch.equal(value, weights_before[name]) for name, value in net.named_parameters())


def test_batch_norm_reestimation_of_a_model_without_batch_norm_or_with_no_batches_does_nothing():
    assert reestimate_batch_norm_(nn.Linear(2, 2), [torch.randn(1, 2)], lambda m, b: m(b).sum(), batches=4) == 0
    net = nn.Sequential(nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1)).eval()
    assert reestimate_batch_norm_(net, [torch.randn(1, 1, 2, 2)], lambda m, b: m(b).sum(), batches=0) == 0
    assert net[1].running_mean.item() == 0.0 and not net.training

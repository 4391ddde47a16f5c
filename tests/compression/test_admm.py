import copy
import itertools
from dataclasses import replace

import pytest
import torch
from torch import nn

from compression import admm
from compression.admm import AdmmQuantConfig, quantize_, weight_quantization
from compression.codebooks import codebook_levels, dequantize, project
from compression.pruning import squash_masks_
from model_store.ir import Codebook


def tiny_conv_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 4, 1),
    )


def conv_regression_task() -> tuple[list, callable]:
    """Batches and loss of a tiny dense-prediction task: reproduce a random conv net's output map."""
    generator = torch.Generator().manual_seed(1)
    teacher = tiny_conv_net().eval()
    for parameter in teacher.parameters():
        parameter.data.add_(0.2 * torch.randn(parameter.shape, generator=generator))
    inputs = torch.randn(64, 3, 8, 8, generator=generator)
    with torch.no_grad():
        targets = teacher(inputs)
    batches = [(inputs[i : i + 16], targets[i : i + 16]) for i in range(0, 64, 16)]
    return batches, lambda model, batch: ((model(batch[0]) - batch[1]) ** 2).mean()


def assert_exactly_in_codebook(module: nn.Module, codebook: Codebook) -> None:
    quantization = weight_quantization(module)
    assert quantization is not None
    found_codebook, codes, alpha = quantization
    assert found_codebook is codebook
    assert codes.dtype == torch.int8 and codes.shape == module.weight.shape
    assert alpha.dtype == torch.float32 and alpha.shape == (module.weight.shape[0],)
    assert set(codes.unique().tolist()) <= set(codebook_levels(codebook).tolist())
    assert torch.equal(module.weight.data, alpha.reshape(-1, *[1] * (codes.ndim - 1)) * codes.float())
    assert not module.weight.requires_grad


def test_data_free_quantization_projects_every_layer_without_training():
    model = tiny_conv_net()
    batch_norm_before = copy.deepcopy(model[1].state_dict())
    events = []

    report = quantize_(model, AdmmQuantConfig(), progress=events.append)

    assert report.data_free and report.loss_history == []
    assert_exactly_in_codebook(model[0], Codebook.INT8)  # reads the input
    assert_exactly_in_codebook(model[3], Codebook.POW2_4)
    assert_exactly_in_codebook(model[6], Codebook.INT8)  # writes the output
    for name, value in model[1].state_dict().items():
        assert torch.equal(value, batch_norm_before[name])
    assert [layer.codebook for layer in report.layers] == [Codebook.INT8, Codebook.POW2_4, Codebook.INT8]
    assert 0.1 < report.layers[1].residual < 0.5  # a 3-bit projection's relative error
    assert events[-1].phase == "project" and events[-1].loss is None
    assert weight_quantization(model[1]) is None


def test_layer_plan_honours_overrides_and_the_boundary_switch():
    model = tiny_conv_net()
    config = AdmmQuantConfig(
        codebook="ternary", int8_boundary_layers=False, int8_layers=("3",), layer_codebooks={"6": "pow2-2"}
    )

    assert config.layer_codebook_plan(model) == {"0": Codebook.TERNARY, "3": Codebook.INT8, "6": Codebook.POW2_2}


def test_narrow_layers_take_the_narrow_codebook_below_the_width_threshold():
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3), nn.Conv2d(16, 128, 3), nn.Conv2d(128, 64, 1), nn.Conv2d(64, 128, 1), nn.Conv2d(128, 4, 1)
    )
    config = AdmmQuantConfig(
        codebook="ternary", narrow_codebook="pow2-4", wide_channels=128, layer_codebooks={"3": "pow2-2"}
    )

    assert config.layer_codebook_plan(model) == {
        "0": Codebook.INT8,  # reads the input
        "1": Codebook.TERNARY,  # 128 output channels
        "2": Codebook.POW2_4,  # 64
        "3": Codebook.POW2_2,  # named: wins
        "4": Codebook.INT8,  # writes the output
    }
    assert AdmmQuantConfig(codebook="ternary").layer_codebook_plan(model)["2"] is Codebook.TERNARY


def test_admm_reduces_the_residual_and_ends_exactly_in_the_codebook():
    batches, loss_fn = conv_regression_task()
    model = tiny_conv_net().eval()
    batch_norm_weight = model[1].weight.detach().clone()
    config = AdmmQuantConfig(
        codebook=Codebook.TERNARY,
        admm_steps=60,
        steps_per_projection=3,
        rho=0.01,
        rho_growth=1.3,
        learning_rate=1e-2,
        finetune_steps=10,
        finetune_learning_rate=1e-2,
        progress_every=5,
    )
    events = []

    report = quantize_(model, config, batches, loss_fn, progress=events.append)

    ternary = report.layers[1]
    assert ternary.codebook is Codebook.TERNARY
    assert len(ternary.residual_history) == 1 + 60 // 3
    assert ternary.residual < ternary.residual_history[0] / 20
    assert ternary.residual_history[-3:] < ternary.residual_history[:3]
    assert_exactly_in_codebook(model[3], Codebook.TERNARY)
    assert_exactly_in_codebook(model[0], Codebook.INT8)
    assert len(report.admm_loss_history) == 60 and len(report.finetune_loss_history) == 10
    assert not torch.equal(model[1].weight.detach(), batch_norm_weight)  # the float parts were fine-tuned
    assert [event.step for event in events if event.phase == "admm"] == list(range(5, 61, 5))
    assert [event.step for event in events if event.phase == "finetune"] == [5, 10]
    assert not model.training


@pytest.mark.parametrize(
    ("w_step", "learning_rate"), [("adam", 1e-2), ("extragradient-sgd", 2e-3), ("extragradient-adam", 1e-2)]
)
def test_admm_beats_plain_projection_on_a_task_with_a_quantized_solution(w_step, learning_rate):
    generator = torch.Generator().manual_seed(0)
    # Correlated inputs: the Euclidean projection of a perturbed weight is far from the loss's best codes.
    mixing = torch.eye(12) + 0.7 * torch.randn(12, 12, generator=generator)
    inputs = torch.randn(256, 12, generator=generator) @ mixing
    teacher = nn.Linear(12, 3)
    teacher.weight.data = 0.5 * torch.randint(-1, 2, (3, 12), generator=generator).float()
    teacher.bias.data.zero_()
    targets = teacher(inputs).detach()
    batches = [(inputs[i : i + 32], targets[i : i + 32]) for i in range(0, 256, 32)]

    def loss_fn(model, batch):
        return ((model(batch[0]) - batch[1]) ** 2).mean()

    student = copy.deepcopy(teacher)
    student.weight.data += 0.3 * torch.randn(3, 12, generator=generator)
    config = AdmmQuantConfig(
        codebook=Codebook.TERNARY,
        int8_boundary_layers=False,
        admm_steps=150,
        rho=0.01,
        rho_growth=1.15,
        w_step=w_step,
        learning_rate=learning_rate,
        finetune_steps=0,
    )
    projected, trained = copy.deepcopy(student), copy.deepcopy(student)

    quantize_(projected, config)
    report = quantize_(trained, config, batches, loss_fn)

    with torch.no_grad():
        projected_loss, trained_loss = loss_fn(projected, (inputs, targets)), loss_fn(trained, (inputs, targets))
    assert trained_loss < 0.1 * projected_loss
    assert report.layers[0].residual < 0.01 * report.layers[0].residual_history[0]
    assert_exactly_in_codebook(trained, Codebook.TERNARY)


def test_squashed_masks_are_respected_while_training():
    batches, loss_fn = conv_regression_task()
    model = tiny_conv_net()
    mask = torch.rand(model[3].weight.shape, generator=torch.Generator().manual_seed(2)) > 0.6
    model[3].weight.data *= mask
    model[3].register_buffer("weight_mask", mask)
    model[3].weight.data += ~mask * 0.5  # revived by some training after squashing: the mask still wins
    config = AdmmQuantConfig(admm_steps=6, steps_per_projection=2, learning_rate=1e-2, finetune_steps=2)

    quantize_(model, config, batches, loss_fn)

    _, codes, _ = weight_quantization(model[3])
    assert (codes[~mask] == 0).all() and (model[3].weight[~mask] == 0).all()
    assert (codes[mask] != 0).float().mean() > 0.5


def test_a_pruned_layer_cannot_take_the_binary_codebook():
    model = tiny_conv_net()
    model[3].register_buffer("weight_mask", torch.ones_like(model[3].weight, dtype=torch.bool))
    squash_masks_(model)

    with pytest.raises(ValueError, match=r"pruned but may get the binary codebook"):
        quantize_(model, AdmmQuantConfig(codebook=Codebook.BINARY))
    assert weight_quantization(model[3]) is None and model[3].weight.requires_grad


def test_rho_reaches_rho_final_at_the_end_of_any_run_length():
    for steps in (50, 300, 2000):
        config = AdmmQuantConfig(admm_steps=steps, steps_per_projection=5, rho=0.01, rho_final=3.0)
        updates = steps // 5
        assert config.rho * config.growth_per_update() ** updates == pytest.approx(3.0)
    assert AdmmQuantConfig(rho_growth=1.2).growth_per_update() == 1.2


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"codebook": "int4"}, "is not a codebook"),
        ({"layer_codebooks": {"3": "pow2-3"}}, "3: 'pow2-3' is not a codebook"),
        ({"admm_steps": -1}, "admm_steps cannot be negative"),
        ({"steps_per_projection": 0}, "steps_per_projection must be at least 1"),
        ({"rho": 0.0}, "rho must be positive"),
        ({"learning_rate": float("nan")}, "learning_rate must be positive"),
        ({"rho_growth": 0.9}, "rho_growth must be at least 1"),
        ({"rho": 0.1, "rho_final": 0.05}, "rho_final .* must be at least rho"),
        ({"int8_layers": "stem.0"}, "int8_layers is a tuple of layer names"),
        ({"finetune_schedule": "linear"}, "finetune_schedule is one of"),
        ({"w_step": "sgd"}, "w_step is one of"),
        ({"narrow_codebook": "int3"}, "narrow_codebook: 'int3' is not a codebook"),
        ({"wide_channels": 0}, "wide_channels must be at least 1"),
        ({"momentum": 1.0}, r"momentum must be in \[0, 1\)"),
        ({"sensitive_codebook": "int3"}, "sensitive_codebook: 'int3' is not a codebook"),
        ({"sensitive_fraction": 0.0}, r"sensitive_fraction is a fraction of the weights in \(0, 1\]"),
        ({"sensitive_fraction": 1.5}, r"sensitive_fraction is a fraction of the weights in \(0, 1\]"),
        ({"sensitivity_batches": 0}, "sensitivity_batches must be at least 1"),
    ],
)
def test_config_rejects_what_cannot_run(arguments, message):
    with pytest.raises(ValueError, match=message):
        AdmmQuantConfig(**arguments)


def test_the_extragradient_w_step_takes_the_gradient_at_the_trial_point_and_steps_from_the_start(monkeypatch):
    torch.manual_seed(0)
    model = nn.Linear(4, 2, bias=False)
    inputs, targets = torch.randn(16, 4), torch.randn(16, 2)
    start = model.weight.detach().clone()
    learning_rate, rho = 0.1, 0.01
    config = AdmmQuantConfig(
        codebook="ternary",
        int8_boundary_layers=False,
        admm_steps=1,
        steps_per_projection=2,
        rho=rho,
        rho_final=rho,
        w_step="extragradient-sgd",
        learning_rate=learning_rate,
        momentum=0.0,
        finetune_steps=0,
    )

    def loss_fn(m, batch):
        return ((m(batch[0]) - batch[1]) ** 2).mean()

    def gradient(weight):
        weight = weight.clone().requires_grad_(True)
        ((inputs @ weight.T - targets) ** 2).mean().backward()
        return weight.grad

    target = dequantize(*project(start, Codebook.TERNARY))  # G before the step; U is zero

    def prox(weight):
        return (weight + rho * target) / (1 + rho)

    trial = start - learning_rate * gradient(start)  # the loss alone: no pull toward G in the look-ahead
    expected = prox(start - learning_rate * gradient(trial))
    # The step's weight, before quantize_ replaces it by G: captured at the G-step that ends the step.
    captured = {}
    original_project = admm._LayerState.project

    def capture(state):
        captured["weight"] = state.module.weight.detach().clone()
        original_project(state)

    monkeypatch.setattr(admm._LayerState, "project", capture)
    quantize_(model, config, [(inputs, targets)], loss_fn)

    assert torch.allclose(captured["weight"], expected, atol=1e-6)
    plain_step = prox(start - learning_rate * gradient(start))
    assert not torch.allclose(captured["weight"], plain_step, atol=1e-4)


def test_the_extragradient_look_ahead_leaves_batch_norm_statistics_alone():
    batches, loss_fn = conv_regression_task()
    model = tiny_conv_net()
    config = AdmmQuantConfig(
        codebook="ternary", admm_steps=6, w_step="extragradient-sgd", learning_rate=1e-2, finetune_steps=0
    )

    quantize_(model, config, batches, loss_fn)

    assert model[1].num_batches_tracked.item() == 6  # one update per step, not two


def test_quantize_rejects_unknown_layers_and_half_the_training_inputs():
    with pytest.raises(ValueError, match=r"name no Conv2d or Linear of the model: \['head'\]"):
        quantize_(tiny_conv_net(), AdmmQuantConfig(int8_layers=("head",)))
    with pytest.raises(ValueError, match="pass both data and loss_fn"):
        quantize_(tiny_conv_net(), AdmmQuantConfig(), data=[torch.zeros(1)])
    with pytest.raises(ValueError, match="must return a scalar tensor"):
        quantize_(tiny_conv_net(), AdmmQuantConfig(), [torch.zeros(2, 3, 4, 4)], lambda model, batch: model(batch))
    with pytest.raises(ValueError, match="yielded no batch"):
        quantize_(tiny_conv_net(), AdmmQuantConfig(), [], lambda model, batch: model(batch).sum())


def test_fine_tuning_the_codes_moves_them_past_the_hard_assignment_and_ends_in_the_codebook():
    generator = torch.Generator().manual_seed(3)
    inputs = torch.randn(256, 16, generator=generator)
    teacher = nn.Linear(16, 4)
    teacher.weight.data = 0.3 * torch.randint(-1, 2, (4, 16), generator=generator).float()
    targets = teacher(inputs).detach()
    batches = [(inputs[i : i + 32], targets[i : i + 32]) for i in range(0, 256, 32)]

    def loss_fn(model, batch):
        return ((model(batch[0]) - batch[1]) ** 2).mean()

    student = nn.Linear(16, 4)
    student.weight.data = teacher.weight.data + 0.4 * torch.randn(4, 16, generator=generator)
    student.bias.data = teacher.bias.data.clone()
    # Two ADMM steps leave the hard assignment far from the task's codes: only fine-tuning can repair it.
    config = AdmmQuantConfig(
        codebook=Codebook.TERNARY, int8_boundary_layers=False, admm_steps=2, finetune_steps=200,
        finetune_learning_rate=1e-2,
    )  # fmt: skip
    frozen, free = copy.deepcopy(student), copy.deepcopy(student)
    mask = torch.rand(4, 16, generator=generator) > 0.3
    free.register_buffer("weight_mask", mask)
    free.weight.data *= mask

    quantize_(frozen, config, batches, loss_fn)
    report = quantize_(free, replace(config, finetune_codes=True), batches, loss_fn)

    assert_exactly_in_codebook(free, Codebook.TERNARY)
    assert not torch.nn.utils.parametrize.is_parametrized(free)
    _, codes, _ = weight_quantization(free)
    assert (codes[~mask] == 0).all()
    assert len(report.finetune_loss_history) == 200 and len(report.layers[0].residual_history) == 3
    with torch.no_grad():
        frozen_loss, free_loss = loss_fn(frozen, (inputs, targets)), loss_fn(free, (inputs, targets))
    assert free_loss < 0.5 * frozen_loss


@pytest.mark.parametrize(("schedule", "expected_ratios"), [("cosine", [0.8536, 0.5]), ("constant", [1.0, 1.0])])
def test_fine_tuning_follows_its_learning_rate_schedule(schedule, expected_ratios):
    # Zero inputs and a summed output: the bias gets the same gradient every step, so each Adam step moves it
    # by that step's learning rate, and each loss drop is proportional to it.
    model = nn.Linear(3, 2)
    batches = [torch.zeros(4, 3)]
    config = AdmmQuantConfig(admm_steps=0, finetune_steps=4, finetune_learning_rate=1e-2, finetune_schedule=schedule)

    report = quantize_(model, config, batches, lambda model, batch: model(batch).sum())

    losses = report.finetune_loss_history
    drops = [before - after for before, after in itertools.pairwise(losses)]
    assert [drop / drops[0] for drop in drops[1:]] == pytest.approx(expected_ratios, rel=1e-3)


@pytest.mark.parametrize(("w_step", "power"), [("adam", 1), ("extragradient-sgd", 2)])
def test_scale_relative_rates_follow_each_layers_weight_norm(monkeypatch, w_step, power):
    batches, loss_fn = conv_regression_task()
    model = tiny_conv_net()
    config = AdmmQuantConfig(
        codebook="ternary",
        int8_boundary_layers=False,
        admm_steps=40,
        learning_rate=1e-2,
        w_step=w_step,
        scale_relative_rate=True,
        finetune_steps=3,
        finetune_codes=True,
    )
    seen = []  # (norm ratio of each layer before the step, rate of its group in the step)
    original_step = admm._WStep._step

    def recording_step(self, rho):
        ratios = [state.norm_ratio() for state in self.states]
        original_step(self, rho)
        seen.append((ratios, [group["lr"] for group in self.optimizer.param_groups[: len(ratios)]]))

    finetune_rates = {}
    original_finetune = admm._finetune

    def recording_finetune(*args, rates=None, **kwargs):
        finetune_rates.update(rates or {})
        return original_finetune(*args, rates=rates, **kwargs)

    monkeypatch.setattr(admm._WStep, "_step", recording_step)
    monkeypatch.setattr(admm, "_finetune", recording_finetune)
    quantize_(model, config, batches, loss_fn)

    for ratios, rates in seen:
        assert rates == pytest.approx([config.learning_rate * ratio**power for ratio in ratios])
    # The layers' scales did move, so the rates above are not the configured one in disguise.
    assert max(abs(ratio - 1) for ratio in seen[-1][0]) > 0.05
    # Code fine-tuning starts each shadow at a rate of its own scale.
    assert len(finetune_rates) == 3
    assert all(rate > 0 for rate in finetune_rates.values())
    assert max(abs(rate / config.finetune_learning_rate - 1) for rate in finetune_rates.values()) > 0.05


def test_scale_relative_rates_default_on_for_extragradient_only():
    assert AdmmQuantConfig(w_step="adam").scale_relative_rate is False
    assert AdmmQuantConfig(w_step="extragradient-sgd").scale_relative_rate is True
    assert AdmmQuantConfig(w_step="extragradient-adam").scale_relative_rate is True
    assert AdmmQuantConfig(w_step="extragradient-adam", scale_relative_rate=False).scale_relative_rate is False

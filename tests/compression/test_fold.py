import numpy as np
import pytest
import torch
from torch import nn

from compression.admm import AdmmQuantConfig, quantize_, weight_quantization
from compression.fold import fold_batch_norm, trace_layers
from model_store.ir import Codebook
from smartpark.detector import load_detector


def _with_statistics(bn: nn.BatchNorm2d, gamma: torch.Tensor, seed: int) -> nn.BatchNorm2d:
    generator = torch.Generator().manual_seed(seed)
    channels = bn.num_features
    with torch.no_grad():
        bn.weight.copy_(gamma)
        bn.bias.copy_(torch.randn(channels, generator=generator))
        bn.running_mean.copy_(torch.randn(channels, generator=generator))
        bn.running_var.copy_(torch.rand(channels, generator=generator) * 2 + 0.1)
    return bn


def _conv_bn_relu(gamma: torch.Tensor, conv_bias: bool = False) -> nn.Sequential:
    channels = len(gamma)
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, channels, 3, padding=1, bias=conv_bias),
        _with_statistics(nn.BatchNorm2d(channels), gamma, seed=1),
        nn.ReLU(),
    ).eval()


def _batch_norm_targets(module: nn.Module) -> list[str]:
    traced = trace_layers(module)
    modules = dict(traced.named_modules())
    return [
        n.target for n in traced.graph.nodes if n.op == "call_module" and isinstance(modules[n.target], nn.BatchNorm2d)
    ]


@pytest.mark.parametrize("conv_bias", [False, True])
def test_folding_a_float_conv_matches_the_unfused_model_in_eval_mode(conv_bias):
    model = _conv_bn_relu(torch.tensor([1.5, -0.7, 0.3, -2.0]), conv_bias)
    x = torch.randn(2, 3, 9, 11)

    folded = fold_batch_norm(model)

    assert _batch_norm_targets(folded) == []
    torch.testing.assert_close(folded(x), model(x), rtol=1e-5, atol=1e-5)


def test_folding_a_quantized_conv_keeps_its_codes_and_moves_gamma_into_alpha_and_the_sign():
    gamma = torch.tensor([1.5, -0.7, 0.0, -2.0])
    model = _conv_bn_relu(gamma)
    quantize_(model, AdmmQuantConfig(codebook=Codebook.POW2_4, int8_boundary_layers=False))
    _, codes_before, alpha_before = weight_quantization(model[0])
    codes_before, alpha_before = codes_before.clone(), alpha_before.clone()
    x = torch.randn(2, 3, 9, 11)

    folded = fold_batch_norm(model)

    codebook, codes, alpha = weight_quantization(folded.get_submodule("0"))
    assert codebook is Codebook.POW2_4
    assert np.isin(codes.numpy(), Codebook.POW2_4.levels).all()
    sign = torch.sign(gamma).to(torch.int8).view(-1, 1, 1, 1)
    assert torch.equal(codes, codes_before * sign)  # negative gamma flips, zero gamma empties the channel
    sigma = torch.sqrt(model[1].running_var + model[1].eps)
    torch.testing.assert_close(alpha[gamma != 0], (alpha_before * gamma.abs() / sigma)[gamma != 0])
    assert (alpha > 0).all()
    torch.testing.assert_close(folded.get_submodule("0").weight, alpha.view(-1, 1, 1, 1) * codes.float())
    torch.testing.assert_close(folded(x), model(x), rtol=1e-5, atol=1e-5)
    # The zero-gamma channel is the constant beta through the ReLU.
    torch.testing.assert_close(folded(x)[:, 2], torch.full_like(folded(x)[:, 2], max(model[1].bias[2].item(), 0.0)))


def test_folding_leaves_the_original_model_untouched():
    model = _conv_bn_relu(torch.tensor([1.5, -0.7]))
    state = {key: value.clone() for key, value in model.state_dict().items()}

    fold_batch_norm(model)

    assert all(torch.equal(state[key], value) for key, value in model.state_dict().items())
    assert _batch_norm_targets(model) == ["1"]


def test_a_batch_norm_without_a_conv_before_it_stays():
    model = nn.Sequential(_with_statistics(nn.BatchNorm2d(3), torch.ones(3), seed=2), nn.Conv2d(3, 4, 1)).eval()
    x = torch.randn(1, 3, 5, 5)

    folded = fold_batch_norm(model)

    assert _batch_norm_targets(folded) == ["0"]
    torch.testing.assert_close(folded(x), model(x))


def test_the_detector_folds_exactly():
    model = load_detector()
    x = torch.rand(1, 3, 64, 96)

    folded = fold_batch_norm(model)

    assert _batch_norm_targets(folded) == []
    assert len(_batch_norm_targets(model)) == sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    for ours, theirs in zip(folded(x), model(x), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)

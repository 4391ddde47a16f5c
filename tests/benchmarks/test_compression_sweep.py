"""The compression sweep's experiments are runnable settings: each builds valid ADMM configs on the detector."""

import pytest

from benchmarks.compression_sweep import EXPERIMENTS, Experiment, admm_settings
from compression.admm import AdmmQuantConfig
from smartpark.detector import CenterNetDetector


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_every_experiment_builds_its_configs_on_the_detector(name):
    experiment = EXPERIMENTS[name]
    model = CenterNetDetector()
    stages = [*experiment.warm_start, (experiment.codebook, experiment.admm_steps, experiment.finetune_steps)]
    for codebook, admm_steps, finetune_steps in stages:
        config = AdmmQuantConfig(
            codebook=codebook, admm_steps=admm_steps, finetune_steps=finetune_steps, **admm_settings(experiment)
        )
        plan = config.layer_codebook_plan(model)  # raises on a layer name the detector does not have
        assert set(experiment.int8_layers) <= set(plan)


def test_scaling_an_experiment_scales_its_warm_start_and_counts_it():
    experiment = Experiment("ternary", 1200, 300, warm_start=(("pow2-4", 600, 150),))
    scaled = experiment.scaled(0.1)

    assert (scaled.admm_steps, scaled.finetune_steps) == (120, 30)
    assert scaled.warm_start == (("pow2-4", 60, 15),)
    assert experiment.training_steps == 600 + 150 + 1200 + 300

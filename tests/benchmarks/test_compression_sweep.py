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


def test_the_pool_holds_every_frame_a_run_reads_from_its_offset_on():
    replicate = Experiment("ternary", 1200, 300, warm_start=(("pow2-4", 600, 150),), pool_offset=16000)

    assert replicate.pool_frames == 16000 + (600 + 150 + 1200 + 300) * 8
    assert Experiment("ternary", 2400, 600, batch_size=16).pool_frames == 3000 * 16

import numpy as np
import pytest

from tests.model_store.synthetic import detector_like_model


@pytest.fixture(scope="session")
def detector_pow2_4():
    """The smart-park detector's graph and sizes, pow2-4 codes at 90 % random sparsity, int8 first and last."""
    return detector_like_model(np.random.default_rng(7))

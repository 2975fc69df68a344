"""The twins' gradients of a cross-entropy loss agree for every parameter and for the input.

Scaled max-abs difference at most 1e-4 in float32 and 1e-12 in float64.
"""

import pytest

from parity_tests.matrix import DTYPES, assert_agree, config_params, parity_run, weights_and_images
from vit_spec import param_shapes


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", config_params())
def test_every_gradient_agrees(name, dtype):
    report = parity_run(name, dtype)
    assert_agree(report.gradients, f"{name}, {dtype}, gradients")


@pytest.mark.parametrize("name", config_params(["tutorial", "sincos2d", "representation_size"]))
def test_gradients_cover_every_parameter_and_the_input(name):
    config, _, _ = weights_and_images(name)
    expected = set(param_shapes(config)) | {"input"}
    if config.pos_embed == "sincos2d":
        expected.discard("pos_embed")  # a fixed table, not a parameter
    assert {d.name for d in parity_run(name, "float32").gradients} == expected

"""The twins' gradients of a cross-entropy loss agree for every parameter and for the input.

Scaled max-abs difference at most 1e-4 in float32 and 1e-12 in float64.

One kind of tensor is set apart: the key norm's bias (qk_norm with LayerNorm). It adds the same vector to every
key, which adds the same number to every score of a row, and softmax ignores that: its gradient is zero in exact
arithmetic, and what each twin computes is rounding noise, which no scaled comparison can match. twins.parity
checks it to be that noise in both twins (twins.differences.NoiseDifference), for `vit parity` as for this suite.
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


def test_a_gradient_zero_in_exact_arithmetic_is_judged_by_its_size_not_the_difference():
    from twins.differences import Difference, NoiseDifference, set_apart_zero_gradients

    diffs = [Difference("blocks.0.attn.qkv.weight", (6, 2), 1e-9, 2.0, 1e-4),
             Difference("blocks.0.attn.k_norm.bias", (2,), 3e-8, 1e-8, 1e-4)]  # 300% apart, but both ~1e-8
    judged = set_apart_zero_gradients(diffs, "float32")
    assert judged[0] is diffs[0] and isinstance(judged[1], NoiseDifference)
    assert not diffs[1].ok and judged[1].ok and judged[1].scaled == (3e-8 + 1e-8) / 2.0
    loud = set_apart_zero_gradients([diffs[0], Difference("blocks.0.attn.k_norm.bias", (2,), 1e-3, 1e-3, 1e-4)], "float32")
    assert not loud[1].ok and "zero in exact arithmetic" in str(loud[1]) and str(loud[1]).endswith("FAIL")

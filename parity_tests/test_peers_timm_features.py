"""timm's own VisionTransformer (VisionTransformerDistilled for DeiT) with the architecture features of each feature
config of the parity matrix (layer scale, registers, MAP head, fc_norm, pre_norm, GLU MLPs, RMSNorm, qk-norm, the
distillation token, ...) loads our random weights with strict=True and computes the same final tokens and logits as
both twins, within 1e-5 scaled (fused attention off in timm).

`parity_tests.peers.timm_kwargs` evaluates the mapping of each ViTConfig feature field to timm's constructor: the one
`vit convert --to timm` prints and records, used here.
Prints one "peer-diff" line per config: pytest parity_tests/test_peers_timm_features.py -s | grep peer-diff
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
pytest.importorskip("jax")


from parity_tests.matrix import FEATURE_CONFIGS, weights_and_images  # noqa: E402
from parity_tests.peers import report, scaled_diff, unfused  # noqa: E402
from twins import jax_side, torch_side  # noqa: E402
from vit_spec import ViTConfig  # noqa: E402
from parity_tests.peers import timm_class, timm_kwargs  # noqa: E402

def timm_model(config: ViTConfig) -> torch.nn.Module:
    return unfused(timm_class(config)(**timm_kwargs(config)))


@pytest.mark.parametrize("name", FEATURE_CONFIGS)
def test_timm_loads_our_weights_strictly_and_agrees(name):
    config, weights, images = weights_and_images(name)
    model = timm_model(config)
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in weights.items()}, strict=True)
    assert list(model.state_dict()) == list(weights), "our layout's order is not timm's state_dict order"
    with torch.no_grad():
        x = torch.from_numpy(images).permute(0, 3, 1, 2)
        tokens, logits = model.forward_features(x), model(x)
    ours = {"jax": jax_side.forward(config, weights, images), "torch": torch_side.forward(config, weights, images)}
    diffs = {}
    for twin, out in ours.items():
        diffs[f"{twin} tokens"] = scaled_diff(out["encoded"], tokens.numpy())
        diffs[f"{twin} logits"] = scaled_diff(out["logits"], logits.numpy())
        diffs[f"{twin} logits (fused)"] = scaled_diff(out["logits (fused attention)"], logits.numpy())
    report(f"timm features [{name}]", **diffs)


def test_every_feature_field_is_covered():
    """Each feature field takes a non-default value in at least one of the configs above."""
    from vit_spec.config import FEATURE_FIELDS

    configs = [weights_and_images(n)[0] for n in FEATURE_CONFIGS]
    uncovered = [f for f in FEATURE_FIELDS if all(f not in c.features() for c in configs)]
    assert not uncovered, f"no feature config sets {uncovered}"
    for value in ("map", "none"):
        assert any(c.pool == value for c in configs), f"no feature config has pool={value!r}"
    for field, values in (("mlp", ("swiglu_packed", "swiglu", "geglu")), ("activation", ("quick_gelu", "silu")),
                          ("final_norm", ("pooled", "none"))):
        missing = [v for v in values if not any(getattr(c, field) == v for c in configs)]
        assert not missing, f"no feature config has {field} in {missing}"

"""Position-embedding resampling (vit_spec.resample, numpy) against timm's resample_abs_pos_embed,
and `vit convert --image-size` against timm's own loading of a checkpoint at another size.

Prints one "peer-diff" line per comparison: pytest parity_tests -k peers -s | grep peer-diff
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

from safetensors.numpy import load_file  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from timm.layers import resample_abs_pos_embed  # noqa: E402
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn  # noqa: E402

from parity_tests.peers import scaled_diff  # noqa: E402
from vit_cli.main import main  # noqa: E402
from vit_spec.resample import resample_pos_embed  # noqa: E402

# float32 in torch vs float64 here: torch's own rounding is ~1e-7 of the values, a little more after bicubic.
TOL = 2e-6


@pytest.mark.parametrize("mode", ["bicubic", "bilinear"])
@pytest.mark.parametrize("antialias", [True, False])
@pytest.mark.parametrize(
    "old, new, prefix",
    [((7, 7), (12, 12), 1), ((14, 14), (24, 24), 1), ((12, 12), (5, 5), 1), ((4, 4), (3, 9), 0), ((6, 3), (4, 8), 1)],
    ids=["up", "up-224-384", "down", "nonsquare-noprefix", "nonsquare-source"],
)
def test_resample_matches_timm(mode, antialias, old, new, prefix):
    rng = np.random.default_rng(0)
    table = rng.standard_normal((1, prefix + old[0] * old[1], 16)).astype(np.float32)
    ref = resample_abs_pos_embed(
        torch.from_numpy(table), list(new), list(old), num_prefix_tokens=prefix, interpolation=mode, antialias=antialias
    ).numpy()
    out = resample_pos_embed(table, new, old, num_prefix_tokens=prefix, mode=mode, antialias=antialias)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    np.testing.assert_array_equal(out[:, :prefix], table[:, :prefix])
    diff = scaled_diff(out, ref)
    print(f"peer-diff | resample {old}->{new} {mode} antialias={antialias} vs timm | pos_embed {diff:.2e}")
    assert diff <= TOL


def test_convert_image_size_matches_timm_loading_at_new_size(tmp_path):
    """`vit convert --image-size` (defaults) = timm's checkpoint_filter_fn when a model is built at the new size."""
    kwargs = dict(patch_size=8, embed_dim=32, depth=1, num_heads=2, num_classes=3)
    torch.manual_seed(0)
    small = VisionTransformer(img_size=32, **kwargs)
    src = tmp_path / "timm.safetensors"
    save_file({k: v.contiguous() for k, v in small.state_dict().items()}, str(src))
    big = VisionTransformer(img_size=56, **kwargs)
    filtered = checkpoint_filter_fn(small.state_dict(), big)  # timm's path for pretrained weights at another size
    out = tmp_path / "ours.safetensors"
    assert main(["convert", str(src), str(out), "--heads", "2", "--image-size", "56"]) == 0
    ours = load_file(str(out))["pos_embed"]
    diff = scaled_diff(ours, filtered["pos_embed"].numpy())
    print(f"peer-diff | vit convert --image-size 56 vs timm checkpoint_filter_fn | pos_embed {diff:.2e}")
    assert ours.shape == (1, 1 + 7 * 7, 32) and diff <= TOL

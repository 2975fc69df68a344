"""Loading at another image size or class count, and load_checkpoint's contract for `vit train --init-from`.
(The resampling kernels are compared with timm's in parity_tests/test_peers_resample.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from vit_spec import ViTConfig, random_weights, save_weights, sincos_2d
from vit_spec.formats import HEAD_PARAMS, Checkpoint, FormatError, init_head, load_checkpoint, missing_params
from vit_spec.formats.adapt import change_head, change_image_size
from vit_spec.resample import interpolation_matrix, resample_pos_embed



CONFIG = ViTConfig(image_size=16, patch_size=4, width=32, depth=1, heads=4, mlp_dim=64, num_classes=5, representation_size=8)


@pytest.fixture
def path(tmp_path):
    p = tmp_path / "ours.safetensors"
    save_weights(p, CONFIG, random_weights(CONFIG))
    return p


def test_load_checkpoint_unchanged(path):
    config, sd = load_checkpoint(path)
    assert config == CONFIG and not missing_params(config, sd)


def test_load_checkpoint_new_head_is_left_out(path):
    config, sd = load_checkpoint(path, num_classes=10, image_size=24)
    assert config.num_classes == 10 and config.representation_size == 8 and config.image_size == 24
    assert missing_params(config, sd) == list(HEAD_PARAMS[:2])
    assert sd["pre_logits.fc.weight"].shape == (8, 32) and sd["pos_embed"].shape == (1, 1 + 36, 32)
    sd.update(init_head(config))
    assert not missing_params(config, sd) and sd["head.weight"].shape == (10, 8) and not sd["head.weight"].any()


def test_dropping_the_representation_needs_a_new_head(path):
    config, sd = load_checkpoint(path, keep_representation=False)
    assert config.representation_size is None and config.num_classes == 5
    assert "pre_logits.fc.weight" not in sd and missing_params(config, sd) == list(HEAD_PARAMS[:2])
    config, sd = load_checkpoint(path, num_classes=0, keep_representation=False)
    assert config.num_classes == 0 and not missing_params(config, sd)


def test_init_head_is_deterministic():
    config = CONFIG.replace(num_classes=7)
    a, b = init_head(config, seed=1), init_head(config, seed=1)
    assert np.array_equal(a["head.weight"], b["head.weight"]) and a["head.weight"].std() == pytest.approx(0.02, rel=0.3)
    assert not a["head.bias"].any() and not init_head(config)["head.weight"].any()


def test_image_size_keeps_cls_slot_and_identity():
    sd = random_weights(CONFIG)
    ck = Checkpoint(CONFIG, sd, "vit")
    same = change_image_size(ck, 16)
    np.testing.assert_array_equal(same.state_dict["pos_embed"], sd["pos_embed"])
    bigger = change_image_size(ck, (20, 28))
    np.testing.assert_array_equal(bigger.state_dict["pos_embed"][:, 0], sd["pos_embed"][:, 0])
    assert bigger.state_dict["pos_embed"].shape == (1, 1 + 5 * 7, 32)
    with pytest.raises(FormatError, match="not divisible by patch_size"):
        change_image_size(ck, 18)


def test_sincos_table_is_recomputed():
    config = CONFIG.replace(pos_embed="sincos2d", pool="mean")
    moved = change_image_size(Checkpoint(config, random_weights(config), "vit"), 32)
    np.testing.assert_array_equal(moved.state_dict["pos_embed"], sincos_2d(moved.config))


def test_change_head_same_count_keeps_head():
    ck = Checkpoint(CONFIG, random_weights(CONFIG), "vit")
    assert change_head(ck, 5) is ck


@pytest.mark.parametrize("mode", ["bicubic", "bilinear"])
@pytest.mark.parametrize("antialias", [True, False])
def test_interpolation_rows_sum_to_one(mode, antialias):
    for n_in, n_out in [(4, 9), (9, 4), (7, 7), (1, 3)]:
        m = interpolation_matrix(n_in, n_out, mode, antialias)
        np.testing.assert_allclose(m.sum(axis=1), 1.0, atol=1e-12)


def test_resample_constant_table_stays_constant():
    table = np.full((1, 1 + 16, 3), 2.5, np.float32)
    out = resample_pos_embed(table, (6, 5), mode="bicubic", antialias=False)
    np.testing.assert_allclose(out, 2.5, rtol=1e-6)
    with pytest.raises(ValueError, match="not a square grid"):
        resample_pos_embed(np.zeros((1, 1 + 12, 3)), (4, 4))


def _outside_the_convert_hint(message: str) -> str:
    """The message without its `vit convert ...` command and the "(vit train has no --X)" beside it."""
    import re

    return re.sub(r"\(vit train has no [^)]*\)", "", re.sub(r"`[^`]*`", "", message))


def test_messages_for_init_from_name_only_vit_trains_flags(tmp_path):
    """What `vit train --init-from` reads gets its messages in vit train's flags: --init-variant, and `vit convert`
    first for what vit train cannot say (--heads, --source-image-size, --image-mean/--image-std)."""
    from train.finetune import INIT_FROM_FLAGS
    from vit_spec.formats import write_checkpoint
    from vit_spec.formats.tensor_files import write_safetensors

    wide = ViTConfig.from_variant("mu/4", image_size=(16, 28), num_classes=3)  # 4x7 (+1): no square
    bare = tmp_path / "bare.safetensors"
    write_safetensors(bare, random_weights(wide), {})
    npz = tmp_path / "wide.npz"
    write_checkpoint(Checkpoint(wide, random_weights(wide), "vit"), npz, "npz", accept_mismatch=True)
    cases = [
        (bare, None, "give --init-variant (e.g. S/16 or vit_small_patch16_224), or for a model no variant describes "
                     f"(another depth, ...) convert it first, `vit convert {bare} converted.safetensors --heads N` "
                     "(vit train has no --heads), then give --init-from converted.safetensors"),
        (bare, "mu/4", "not a square grid plus [CLS]; give the image size it was saved at: convert it first, "
                       f"`vit convert {bare} converted.safetensors --variant mu/4 --source-image-size HxW`"),
        (bare, "S/16", "does not match --init-variant S/16"),
        (bare, "vit_small_patch16_224.mystery", "--image-mean R,G,B --image-std R,G,B` (vit train has no "
                                                "--image-mean/--image-std)"),
        (npz, None, f"`vit convert {npz} converted.safetensors --source-image-size HxW` (vit train has no "
                    "--source-image-size), then give --init-from converted.safetensors"),
    ]
    for source, variant, expected in cases:
        with pytest.raises(FormatError) as info:
            load_checkpoint(source, variant=variant, image_size=32, num_classes=10, flags=INIT_FROM_FLAGS)
        message = str(info.value)
        assert expected in message, message
        rest = _outside_the_convert_hint(message)
        for flag in ("--variant", "--heads", "--source-image-size", "--image-mean", "--image-size"):
            assert flag not in rest.replace("--init-variant", ""), message
    # The same files, read for `vit convert` (the default): its flags.
    with pytest.raises(FormatError, match="give --variant .* or --heads$"):
        load_checkpoint(bare)
    with pytest.raises(FormatError, match="give the image size it was saved at: pass --source-image-size HxW$"):
        load_checkpoint(npz)

"""The PyTorch twin on its own: inputs it refuses, intermediates, attention, dropout, weight I/O."""

import pytest
import torch

import torch_vit
from vit_spec import ViTConfig, param_shapes, random_weights
from vit_spec.inputs import ImageInputError

CONFIG = ViTConfig(image_size=(16, 24), patch_size=4, width=32, depth=2, heads=4, mlp_dim=64, num_classes=5)


@pytest.fixture(scope="module")
def model():
    return torch_vit.model_from_state_dict(CONFIG, random_weights(CONFIG))


@pytest.mark.parametrize(
    "images, message",
    [
        (torch.zeros(2, 16, 24, 3), r"which is NHWC; this model takes NCHW.*permute\(0, 3, 1, 2\)"),
        (torch.zeros(2, 3, 16, 24, dtype=torch.uint8), "must be floating point, got dtype torch.uint8"),
        (torch.zeros(2, 3, 32, 32), "images are 32x32 but the model was built for 16x24"),
        (torch.zeros(2, 1, 16, 24), "images have 1 channels .* built for 3"),
        (torch.zeros(3, 16, 24), r"4-D NCHW batch.*add a batch axis"),
    ],
)
def test_bad_images_get_a_clear_error(model, images, message):
    with pytest.raises(ImageInputError, match=message):
        model(images)


def test_state_dict_is_the_shared_layout():
    sd = torch_vit.ViT(CONFIG).state_dict()
    assert list(sd) == list(param_shapes(CONFIG))
    assert {k: tuple(v.shape) for k, v in sd.items()} == param_shapes(CONFIG)


def test_intermediates_have_the_documented_shapes(model):
    x = torch.randn(2, 3, 16, 24)
    with torch.no_grad():
        logits, inter = model(x, return_intermediates=True)
        fast = model(x)
    assert inter["patch_embed"].shape == (2, 24, 32)
    assert inter["embed"].shape == (2, 25, 32)
    assert [tuple(b.shape) for b in inter["blocks"]] == [(2, 25, 32)] * 2
    assert [tuple(a.shape) for a in inter["attn"]] == [(2, 4, 25, 25)] * 2
    torch.testing.assert_close(inter["attn"][0].sum(-1), torch.ones(2, 4, 25))
    assert inter["attn"][0].min() >= 0
    assert logits.shape == (2, 5)
    torch.testing.assert_close(fast, logits, atol=1e-5, rtol=0)


def test_train_mode_drops_and_eval_mode_is_deterministic():
    config = CONFIG.replace(dropout=0.2, attention_dropout=0.1, drop_path=0.2)
    model = torch_vit.model_from_state_dict(config, random_weights(config))
    x = torch.randn(4, 3, 16, 24)
    with torch.no_grad():
        a, b = model(x), model(x)
        assert torch.equal(a, b)
        model.train()
        c = model(x)
    assert not torch.allclose(a, c)


def test_save_and_load(tmp_path, model):
    torch_vit.save(tmp_path / "w.safetensors", model)
    loaded = torch_vit.load(tmp_path / "w.safetensors")
    assert loaded.config == CONFIG and not loaded.training
    for (n1, t1), (n2, t2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert n1 == n2 and torch.equal(t1, t2)


def test_torch_vit_never_imports_jax():
    import subprocess
    import sys

    code = "import sys, torch_vit; assert 'jax' not in sys.modules and 'flax' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)

"""big_vision's SigLIP image tower (MAPHead pooling) <-> this project.

Random parameter trees in big_vision's naming (vit.py's _Model with pool_type="map", as SigLIP's two-tower npz files
flatten them: params/img/..., scanned blocks, a text tower beside), built here in Flax shapes without Flax. Read both
by timm's `_load_weights` (VisionTransformer(global_pool="map")) and by `vit convert`: the logits must agree, and
npz -> vit -> npz (`--to big_vision`) must give back the image tower's arrays bit for bit. The same model written
`--to hf` is a SiglipVisionModel computing the same.

Prints one "peer-diff" line per comparison: pytest parity_tests -k peers -s | grep peer-diff
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")

from parity_tests.peers import convert, report, scaled_diff, unfused  # noqa: E402
from parity_tests.test_peers_google import big_vision_tree, our_logits  # noqa: E402
from vit_cli.main import main  # noqa: E402

SHAPE = dict(width=48, depth=2, heads=4, mlp=96, patch=6, grid=4)


def map_head(seed: int, width: int, heads: int, mlp: int) -> dict[str, np.ndarray]:
    """big_vision's MAPHead parameters (probe, MultiHeadDotProductAttention_0, LayerNorm_0, MlpBlock_0)."""
    rng = np.random.default_rng(seed)
    r = lambda *shape, scale=0.2: (scale * rng.standard_normal(shape)).astype(np.float32)  # noqa: E731
    dh = width // heads
    mha = "MAPHead_0/MultiHeadDotProductAttention_0/"
    out = {"MAPHead_0/probe": r(1, 1, width, scale=1.0), mha + "out/kernel": r(heads, dh, width), mha + "out/bias": r(width),
           "MAPHead_0/LayerNorm_0/scale": 1 + r(width, scale=0.1), "MAPHead_0/LayerNorm_0/bias": r(width, scale=0.1),
           "MAPHead_0/MlpBlock_0/Dense_0/kernel": r(width, mlp), "MAPHead_0/MlpBlock_0/Dense_0/bias": r(mlp, scale=0.1),
           "MAPHead_0/MlpBlock_0/Dense_1/kernel": r(mlp, width), "MAPHead_0/MlpBlock_0/Dense_1/bias": r(width, scale=0.1)}
    for part in ("query", "key", "value"):
        out[mha + f"{part}/kernel"], out[mha + f"{part}/bias"] = r(width, heads, dh), r(heads, dh, scale=0.1)
    return out


def siglip_npz(seed: int, *, classes: int, scanned: bool, prefix: str, text_tower: bool) -> dict[str, np.ndarray]:
    tree = big_vision_tree(seed, **SHAPE, classes=max(classes, 1), tok=False, scanned=scanned, prefix=prefix)
    if not classes:  # SigLIP's image tower has no head: the MAP output is the embedding
        del tree[prefix + "head/kernel"], tree[prefix + "head/bias"]
    tree.update({prefix + k: v for k, v in map_head(seed + 100, SHAPE["width"], SHAPE["heads"], SHAPE["mlp"]).items()})
    if text_tower:
        rng = np.random.default_rng(seed + 200)
        tree.update({"params/txt/Embed_0/embedding": rng.standard_normal((50, 16)).astype(np.float32),
                     "params/txt/head/kernel": rng.standard_normal((16, 48)).astype(np.float32),
                     "params/t": np.array([2.3], np.float32), "params/b": np.array([-10.0], np.float32)})
    return tree


def timm_reference(path, classes: int, images_nhwc: np.ndarray) -> np.ndarray:
    from timm.models.vision_transformer import VisionTransformer, _load_weights

    model = VisionTransformer(img_size=24, patch_size=6, embed_dim=48, depth=2, num_heads=4, mlp_ratio=2.0,
                              num_classes=classes, class_token=False, global_pool="map", fc_norm=False, act_layer="gelu_tanh")
    _load_weights(model, str(path))
    with torch.no_grad():
        return unfused(model)(torch.from_numpy(images_nhwc).permute(0, 3, 1, 2)).numpy()


@pytest.mark.parametrize(
    "classes, scanned, prefix, text_tower",
    [(0, True, "params/img/", True), (7, False, "params/", False)],
    ids=["siglip-image-tower-scanned", "map-classifier-unscanned"],
)
def test_big_vision_map_head(classes, scanned, prefix, text_tower, tmp_path, capsys):
    pytest.importorskip("timm")
    arrays = siglip_npz(classes + int(scanned), classes=classes, scanned=scanned, prefix=prefix, text_tower=text_tower)
    path = tmp_path / "siglip.npz"
    np.savez(path, **arrays)
    ours = tmp_path / "ours.safetensors"
    capsys.readouterr()
    convert(path, ours)
    printed = capsys.readouterr().out
    assert "MAPHead" in printed and (not text_tower or "params/txt" in printed), printed
    images = np.random.default_rng(5).standard_normal((3, 24, 24, 3)).astype(np.float32)
    ref = timm_reference(path, classes, images)
    out_jax, out_torch = our_logits(ours, images)
    report(f"big_vision MAP [{prefix!r}, scanned={scanned}] -> vit vs timm's reader",
           jax=scaled_diff(out_jax, ref), torch=scaled_diff(out_torch, ref))

    back = tmp_path / "back.npz"
    convert(ours, back, "--to", "big_vision")
    if scanned:  # SigLIP's layout (params/img/, scanned), which the writer uses for this model: bit for bit
        image_tower = {k: v for k, v in arrays.items() if k.startswith(prefix)}
        with np.load(back) as again:
            assert sorted(again.files) == sorted(image_tower)
            assert all(np.array_equal(again[k], v) and again[k].dtype == v.dtype for k, v in image_tower.items())
    again_ours = tmp_path / "again.safetensors"
    convert(back, again_ours)
    out_again, _ = our_logits(again_ours, images)
    assert np.array_equal(out_again, out_jax), "npz -> vit -> big_vision npz -> vit changed the model"


def test_big_vision_siglip_to_hf(tmp_path):
    """The big_vision SigLIP image tower written --to hf is a SiglipVisionModel whose pooler_output is our output."""
    transformers = pytest.importorskip("transformers")
    path = tmp_path / "siglip.npz"
    np.savez(path, **siglip_npz(3, classes=0, scanned=True, prefix="params/img/", text_tower=True))
    ours = tmp_path / "ours.safetensors"
    convert(path, ours)
    convert(ours, tmp_path / "hf", "--to", "hf")
    model = transformers.SiglipVisionModel.from_pretrained(tmp_path / "hf", attn_implementation="eager").eval()
    images = np.random.default_rng(6).standard_normal((3, 24, 24, 3)).astype(np.float32)
    out_jax, out_torch = our_logits(ours, images)
    with torch.no_grad():
        ref = model(pixel_values=torch.from_numpy(images).permute(0, 3, 1, 2)).pooler_output.numpy()
    report("big_vision SigLIP -> vit -> hf SiglipVisionModel", jax=scaled_diff(out_jax, ref), torch=scaled_diff(out_torch, ref))


def test_map_model_to_google_npz_is_refused(tmp_path, capsys):
    path = tmp_path / "siglip.npz"
    np.savez(path, **siglip_npz(4, classes=0, scanned=False, prefix="params/img/", text_tower=False))
    convert(path, tmp_path / "ours.safetensors")
    capsys.readouterr()
    assert main(["convert", str(tmp_path / "ours.safetensors"), str(tmp_path / "g.npz"), "--to", "npz"]) == 2
    assert "--to big_vision" in capsys.readouterr().err

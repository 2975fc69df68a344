"""Google's checkpoints <-> this project.

- google-research/vision_transformer: ../shared/testdata/google_vit/ holds small checkpoints made by
  Google's own models_vit.py with random weights, and the logits that code computes. Converted with
  `vit convert`, our JAX and PyTorch models must reproduce them, and npz -> vit -> npz must give back
  the same arrays bit for bit. Our npz writer is checked with timm's reader of Google's format.
- big_vision: random parameter trees in big_vision's layout (built here directly in Flax shapes, no
  conversion involved), read both by timm's `_load_weights` and by `vit convert`; the logits must agree.

Prints one "peer-diff" line per comparison: pytest parity_tests -k peers -s | grep peer-diff
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")

import jax_vit  # noqa: E402
import torch_vit  # noqa: E402
from vit_cli.main import main  # noqa: E402
from parity_tests.peers import convert, report, scaled_diff, unfused  # noqa: E402

TESTDATA = Path(__file__).resolve().parents[1].parent / "shared/testdata/google_vit"
GOOGLE = ("vit_token_prelogits", "vit_gap")

needs_testdata = pytest.mark.skipif(
    not (TESTDATA / "README.md").is_file(), reason=f"Google's test checkpoints are not at {TESTDATA} (../shared beside the checkout)"
)


def our_logits(path, images_nhwc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(JAX, PyTorch) outputs of our models loaded from `path`, on NHWC images."""
    config, params = jax_vit.load(path)
    with jax.default_matmul_precision("highest"):
        out_jax = np.asarray(jax_vit.ViT(config).apply({"params": params}, images_nhwc))
    with torch.no_grad():
        out_torch = torch_vit.load(path)(torch.from_numpy(images_nhwc).permute(0, 3, 1, 2)).numpy()
    return out_jax, out_torch


@needs_testdata
@pytest.mark.parametrize("name", GOOGLE)
def test_google_npz_reproduces_googles_logits(name, tmp_path):
    settings = json.loads((TESTDATA / f"{name}.json").read_text())
    io = np.load(TESTDATA / f"{name}.io.npz")
    ours = tmp_path / "ours.safetensors"
    convert(TESTDATA / f"{name}.npz", ours)
    config, _ = jax_vit.load(ours)
    assert (config.width, config.depth, config.heads, config.mlp_dim) == (
        settings["hidden_size"], settings["num_layers"], settings["num_heads"], settings["mlp_dim"])
    assert config.pool == {"token": "cls", "gap": "mean"}[settings["classifier"]]
    assert config.representation_size == settings["representation_size"]
    assert config.gelu == "tanh" and config.layer_norm_eps == settings["layer_norm_eps"]
    out_jax, out_torch = our_logits(ours, io["images_nhwc"])
    report(f"npz -> vit [{name}] vs Google's logits", jax=scaled_diff(out_jax, io["logits"]),
           torch=scaled_diff(out_torch, io["logits"]))


@needs_testdata
@pytest.mark.parametrize("name", GOOGLE)
def test_google_npz_round_trip_is_bit_identical(name, tmp_path):
    ours, back = tmp_path / "ours.safetensors", tmp_path / "back.npz"
    convert(TESTDATA / f"{name}.npz", ours)
    convert(ours, back, "--to", "npz")
    with np.load(TESTDATA / f"{name}.npz") as a, np.load(back) as b:
        assert a.files == b.files
        for key in a.files:
            assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
            assert a[key].tobytes() == b[key].tobytes(), key


@needs_testdata
def test_our_npz_is_read_by_timm_as_googles(tmp_path):
    """Our npz writer, checked by a peer reader: timm's loader of Google's format gives Google's logits."""
    pytest.importorskip("timm")
    from timm.models.vision_transformer import VisionTransformer, _load_weights

    ours, back = tmp_path / "ours.safetensors", tmp_path / "back.npz"
    convert(TESTDATA / "vit_gap.npz", ours)
    convert(ours, back, "--to", "npz")
    model = VisionTransformer(img_size=24, patch_size=6, embed_dim=48, depth=3, num_heads=3, mlp_ratio=2.0,
                              num_classes=7, class_token=False, global_pool="avg", fc_norm=False, act_layer="gelu_tanh")
    _load_weights(model, str(back))
    io = np.load(TESTDATA / "vit_gap.io.npz")
    with torch.no_grad():
        out = unfused(model)(torch.from_numpy(io["images_nhwc"]).permute(0, 3, 1, 2)).numpy()
    report("vit -> npz [vit_gap] read by timm vs Google's logits", timm=scaled_diff(out, io["logits"]))


def test_timm_model_to_npz_read_back_by_timm(tmp_path):
    """A [CLS] model with a non-default patch size through our npz writer; timm's Google reader as the peer."""
    pytest.importorskip("timm")
    from safetensors.torch import save_file
    from timm.models.vision_transformer import VisionTransformer, _load_weights

    kwargs = dict(img_size=20, patch_size=5, embed_dim=40, depth=2, num_heads=5, mlp_ratio=2.0, num_classes=9,
                  act_layer="gelu_tanh")
    torch.manual_seed(0)
    source = VisionTransformer(**kwargs)
    with torch.no_grad():
        for p in source.parameters():
            p.add_(0.1 * torch.randn(p.shape))
    src, ours, npz = tmp_path / "timm.safetensors", tmp_path / "ours.safetensors", tmp_path / "ours.npz"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(src))
    convert(src, ours, "--heads", "5", "--gelu", "tanh", "--image-mean", "0.5,0.5,0.5", "--image-std", "0.5,0.5,0.5")
    convert(ours, npz, "--to", "npz")
    target = VisionTransformer(**kwargs)
    _load_weights(target, str(npz))
    images = np.random.default_rng(0).standard_normal((3, 20, 20, 3)).astype(np.float32)
    x = torch.from_numpy(images).permute(0, 3, 1, 2)
    with torch.no_grad():
        ref, out = unfused(source)(x).numpy(), unfused(target)(x).numpy()
    out_jax, out_torch = our_logits(ours, images)
    report("timm -> vit -> npz, read by timm", timm=scaled_diff(out, ref), jax=scaled_diff(out_jax, ref),
           torch=scaled_diff(out_torch, ref))


def big_vision_tree(
    seed: int, *, width: int, depth: int, heads: int, mlp: int, patch: int, grid: int, classes: int,
    tok: bool, scanned: bool, prefix: str,
) -> dict[str, np.ndarray]:
    """Random parameters in big_vision's ViT layout (vit.py: _Model), flattened with "/" as its npz files are."""
    rng = np.random.default_rng(seed)
    r = lambda *shape, scale=0.2: (scale * rng.standard_normal(shape)).astype(np.float32)  # noqa: E731
    dh = width // heads

    def block() -> dict[str, np.ndarray]:
        mha = "MultiHeadDotProductAttention_0/"
        b = {
            "LayerNorm_0/scale": 1 + r(width, scale=0.1), "LayerNorm_0/bias": r(width, scale=0.1),
            "LayerNorm_1/scale": 1 + r(width, scale=0.1), "LayerNorm_1/bias": r(width, scale=0.1),
            "MlpBlock_0/Dense_0/kernel": r(width, mlp), "MlpBlock_0/Dense_0/bias": r(mlp, scale=0.1),
            "MlpBlock_0/Dense_1/kernel": r(mlp, width), "MlpBlock_0/Dense_1/bias": r(width, scale=0.1),
            mha + "out/kernel": r(heads, dh, width), mha + "out/bias": r(width, scale=0.1),
        }
        for part in ("query", "key", "value"):
            b[mha + f"{part}/kernel"], b[mha + f"{part}/bias"] = r(width, heads, dh), r(heads, dh, scale=0.1)
        return b

    tree = {
        "embedding/kernel": r(patch, patch, 3, width), "embedding/bias": r(width, scale=0.1),
        "pos_embedding": r(1, grid * grid, width, scale=0.1),
        "Transformer/encoder_norm/scale": 1 + r(width, scale=0.1), "Transformer/encoder_norm/bias": r(width, scale=0.1),
        "head/kernel": r(width, classes), "head/bias": r(classes, scale=0.1),
    }
    if tok:
        tree["cls"] = r(1, 1, width)
    blocks = [block() for _ in range(depth)]
    if scanned:
        tree.update({f"Transformer/encoderblock/{k}": np.stack([b[k] for b in blocks]) for k in blocks[0]})
    else:
        for i, b in enumerate(blocks):
            tree.update({f"Transformer/encoderblock_{i}/{k}": v for k, v in b.items()})
    return {prefix + k: v for k, v in tree.items()}


@pytest.mark.parametrize(
    "tok, scanned, prefix",
    [(False, False, "params/"), (True, False, "params/"), (True, True, ""), (False, True, "params/img/")],
    ids=["gap", "tok", "tok-scanned-noprefix", "gap-scanned-img"],
)
def test_big_vision_matches_timms_reader(tok, scanned, prefix, tmp_path):
    pytest.importorskip("timm")
    from timm.models.vision_transformer import VisionTransformer, _load_weights

    shape = dict(width=48, depth=2, heads=4, mlp=96, patch=6, grid=4, classes=5)
    path = tmp_path / "big_vision.npz"
    np.savez(path, **big_vision_tree(int(tok) + 2 * int(scanned), tok=tok, scanned=scanned, prefix=prefix, **shape))
    model = VisionTransformer(img_size=24, patch_size=6, embed_dim=48, depth=2, num_heads=4, mlp_ratio=2.0, num_classes=5,
                              class_token=tok, no_embed_class=tok, global_pool="token" if tok else "avg", fc_norm=False,
                              act_layer="gelu_tanh")
    _load_weights(model, str(path))
    ours = tmp_path / "ours.safetensors"
    convert(path, ours, "--from", "npz")
    images = np.random.default_rng(5).standard_normal((3, 24, 24, 3)).astype(np.float32)
    with torch.no_grad():
        ref = unfused(model)(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
    out_jax, out_torch = our_logits(ours, images)
    name = ("tok" if tok else "gap") + (", scanned" if scanned else "") + f", prefix {prefix!r}"
    report(f"big_vision -> vit [{name}] vs timm's reader", jax=scaled_diff(out_jax, ref), torch=scaled_diff(out_torch, ref))


def test_big_vision_incomplete_map_head_is_refused(tmp_path, capsys):
    """A MAPHead_0 holding only a probe is not big_vision's MAPHead (test_peers_big_vision_siglip.py reads that one)."""
    tree = big_vision_tree(0, width=16, depth=1, heads=2, mlp=32, patch=4, grid=2, classes=3, tok=False, scanned=False,
                           prefix="params/")
    tree["params/MAPHead_0/probe"] = np.zeros((1, 1, 16), np.float32)
    path = tmp_path / "map.npz"
    np.savez(path, **tree)
    assert main(["convert", str(path), str(tmp_path / "out.safetensors")]) == 2
    assert "MAPHead" in capsys.readouterr().err


@needs_testdata
def test_truncated_npz_is_refused(tmp_path, capsys):
    data = (TESTDATA / "vit_gap.npz").read_bytes()
    path = tmp_path / "truncated.npz"
    path.write_bytes(data[: len(data) // 2])
    assert main(["convert", str(path), str(tmp_path / "out.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "not a readable .npz" in err and "truncated" in err

"""ViT(scan_blocks=True) and ViT(remat=True): the same model as the per-block loop, its weights in the
same file; and bfloat16 compute over float32 parameters.

Scanned and looped blocks are the same function of the same weights, but not the same XLA program:
the scanned block is compiled on its own and fused differently, so outputs agree to float32 rounding
(~1e-7 relative), not bit for bit. In train mode the two draw their dropout and stochastic-depth
masks from different keys (flax folds each block's name into the "dropout" stream; nn.scan splits it
per layer), so there the tests check what must hold: one draw per sample at each layer's rate,
computed exactly as nn.Dropout computes it from a key, and determinism.
"""

from __future__ import annotations

import json
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jax_vit
from jax_vit.model import drop_path_by_rate
from train.jax_loop import optim
from train.jax_loop.step import TrainState, make_train_step
from train.recipes import RECIPES
from vit_spec import ViTConfig, load_weights, random_weights

CONFIG = ViTConfig(image_size=(16, 24), patch_size=4, width=32, depth=3, heads=4, mlp_dim=64, num_classes=5)
LAYOUTS = [dict(scan_blocks=True), dict(scan_blocks=True, remat=True), dict(remat=True)]


@pytest.fixture(scope="module")
def params() -> dict:
    return jax_vit.params_from_state_dict(CONFIG, random_weights(CONFIG, seed=1))


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((4, 16, 24, 3)).astype(np.float32)


def layout_params(params: dict, scan_blocks: bool = False, **_) -> dict:
    return jax_vit.stack_blocks(params) if scan_blocks else params


def assert_close(actual, expected, rtol: float = 1e-6) -> None:
    """Relative to the array's largest magnitude: float32 rounding, summed over a few layers."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * np.abs(expected).max())


def test_scanned_params_are_the_blocks_stacked_over_depth(params):
    scanned = jax.eval_shape(
        jax_vit.ViT(CONFIG, scan_blocks=True).init, jax.random.key(0), jnp.zeros((1, 16, 24, 3))
    )["params"]
    stacked = jax_vit.stack_blocks(params)
    assert jax.tree.structure(scanned) == jax.tree.structure(stacked)
    assert jax.tree.map(lambda a: a.shape, scanned) == jax.tree.map(lambda a: a.shape, stacked)
    assert stacked["blocks"]["attn"]["qkv"]["kernel"].shape == (3, 32, 96)
    assert not any(k.startswith("blocks_") for k in stacked)
    # init_params gives either layout of the same values.
    fresh = jax_vit.init_params(CONFIG, 7)
    fresh_scanned = jax_vit.init_params(CONFIG, 7, scan_blocks=True)
    assert jax.tree.all(jax.tree.map(np.array_equal, jax_vit.stack_blocks(fresh), fresh_scanned))
    # Converting back and forth is exact, and each converter leaves the other layout alone.
    assert jax.tree.all(jax.tree.map(np.array_equal, jax_vit.unstack_blocks(stacked), params))
    assert jax.tree.all(jax.tree.map(np.array_equal, jax_vit.stack_blocks(stacked), stacked))
    assert jax.tree.all(jax.tree.map(np.array_equal, jax_vit.unstack_blocks(params), params))


@pytest.mark.parametrize("layout", LAYOUTS, ids=str)
def test_same_logits_and_gradients_as_the_block_loop(params, images, layout):
    def loss_and_grads(model: jax_vit.ViT, p: dict):
        def loss(p):
            logits = model.apply({"params": p}, images)
            return optax.softmax_cross_entropy_with_integer_labels(logits, jnp.arange(4)).mean(), logits

        return jax.jit(jax.value_and_grad(loss, has_aux=True))(p)

    (loss, logits), grads = loss_and_grads(jax_vit.ViT(CONFIG), params)
    (loss2, logits2), grads2 = loss_and_grads(jax_vit.ViT(CONFIG, **layout), layout_params(params, **layout))
    assert_close(logits2, logits)
    assert_close(loss2, loss)
    grads2 = jax_vit.unstack_blocks(grads2)
    assert jax.tree.structure(grads2) == jax.tree.structure(grads)
    for (path, g2), g in zip(jax.tree_util.tree_flatten_with_path(grads2)[0], jax.tree.leaves(grads)):
        assert_close(g2, g, rtol=2e-6), jax.tree_util.keystr(path)


@pytest.mark.parametrize("layout", LAYOUTS, ids=str)
def test_intermediates_are_split_back_per_block(params, images, layout):
    _, expected = jax_vit.ViT(CONFIG).apply({"params": params}, images, return_intermediates=True)
    logits, inter = jax_vit.ViT(CONFIG, **layout).apply(
        {"params": layout_params(params, **layout)}, images, return_intermediates=True
    )
    assert isinstance(inter["blocks"], tuple) and isinstance(inter["attn"], tuple)
    assert len(inter["blocks"]) == len(inter["attn"]) == CONFIG.depth
    for key in ("blocks", "attn"):
        for got, want in zip(inter[key], expected[key]):
            assert_close(got, want)
    np.testing.assert_allclose(np.asarray(inter["attn"][-1]).sum(-1), 1.0, rtol=1e-6)
    assert_close(inter["logits"], expected["logits"])


def test_train_mode_without_randomness_needs_no_key_and_matches(params, images):
    # Rates of 0 draw nothing: train=True then computes the eval function in both layouts.
    loop = jax_vit.ViT(CONFIG).apply({"params": params}, images, train=True)
    scan = jax_vit.ViT(CONFIG, scan_blocks=True, remat=True).apply(
        {"params": jax_vit.stack_blocks(params)}, images, train=True
    )
    assert_close(scan, loop)


@pytest.mark.parametrize("rate", [0.0, 0.1, 1 / 30, 0.25, 0.6])
def test_drop_path_at_a_traced_rate_is_nn_dropout_exactly(rate):
    y = jax.random.normal(jax.random.key(0), (64, 5, 8))
    dropout = jax.jit(lambda y, key: nn.Dropout(rate, broadcast_dims=(1, 2)).apply({}, y, deterministic=False, rng=key))
    for seed in range(4):
        key = jax.random.key(seed)
        got, expected = np.asarray(jax.jit(drop_path_by_rate)(y, jnp.float32(rate), key)), np.asarray(dropout(y, key))
        np.testing.assert_array_equal(got == 0, expected == 0)  # the same samples dropped, from the same key
        # The kept ones scaled by 1 / keep to the last bit: XLA turns a division by a traced scalar into a
        # multiplication by its reciprocal, where nn.Dropout divides by a constant.
        np.testing.assert_allclose(got, expected, rtol=1.2e-7, atol=0)


@pytest.mark.parametrize("scan_blocks", [False, True])
def test_stochastic_depth_drops_each_layer_at_its_rate(scan_blocks):
    # Both branches of block i are dropped for a sample with probability rate_i**2: its output is then
    # exactly its input. Rates 0, 0.2, 0.4, 0.6.
    config = ViTConfig(image_size=8, patch_size=4, width=16, depth=4, heads=2, mlp_dim=32, num_classes=3, drop_path=0.6)
    params = jax_vit.params_from_state_dict(config, random_weights(config, seed=2))
    params = jax_vit.stack_blocks(params) if scan_blocks else params
    n = 4000
    x = np.random.default_rng(1).standard_normal((n, 8, 8, 3)).astype(np.float32)
    model = jax_vit.ViT(config, scan_blocks=scan_blocks)
    apply = jax.jit(lambda p, x, key: model.apply({"params": p}, x, train=True, rngs={"dropout": key}, return_intermediates=True)[1])
    inter = apply(params, x, jax.random.key(3))
    inputs = (inter["embed"],) + inter["blocks"][:-1]
    for i, rate in enumerate(config.drop_path_rates()):
        skipped = np.all(np.asarray(inter["blocks"][i]) == np.asarray(inputs[i]), axis=(1, 2)).mean()
        tolerance = 5 * np.sqrt(rate**2 * (1 - rate**2) / n)
        assert abs(skipped - rate**2) <= tolerance, (i, rate, skipped)
    # Deterministic in the key, and another key draws other masks.
    again, other = apply(params, x, jax.random.key(3)), apply(params, x, jax.random.key(4))
    assert np.array_equal(again["logits"], inter["logits"])
    assert not np.array_equal(other["logits"], inter["logits"])


def test_train_mode_gradients_are_finite_and_deterministic(params, images):
    config = CONFIG.replace(dropout=0.1, attention_dropout=0.1, drop_path=0.3)
    model = jax_vit.ViT(config, scan_blocks=True, remat=True)
    stacked = jax_vit.stack_blocks(params)

    @jax.jit
    def grads(p, key):
        return jax.grad(lambda p: model.apply({"params": p}, images, train=True, rngs={"dropout": key}).sum())(p)

    a, b, c = grads(stacked, jax.random.key(0)), grads(stacked, jax.random.key(0)), grads(stacked, jax.random.key(1))
    assert jax.tree.all(jax.tree.map(lambda x: bool(np.all(np.isfinite(x))), a))
    assert jax.tree.all(jax.tree.map(np.array_equal, a, b))
    assert not jax.tree.all(jax.tree.map(np.array_equal, a, c))


def file_contents(path) -> tuple[dict, bytes]:
    """A .safetensors file as (its JSON header, its tensor bytes).

    Not the raw bytes: safetensors 0.8 writes the metadata's keys in the order of a Rust HashMap,
    which changes from one save to the next (two saves of the same params differ there too). The
    header's content, the tensors' order and offsets and every tensor byte are compared.
    """
    data = Path(path).read_bytes()
    size = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + size]), data[8 + size :]


def test_files_are_identical_from_either_layout_and_load_as_either(tmp_path, params):
    jax_vit.save(tmp_path / "loop.safetensors", CONFIG, params)
    jax_vit.save(tmp_path / "scan.safetensors", CONFIG, jax_vit.stack_blocks(params))
    # Device arrays too, as a training run holds them.
    jax_vit.save(tmp_path / "device.safetensors", CONFIG, jax.device_put(jax_vit.stack_blocks(params)))
    header, tensors = file_contents(tmp_path / "loop.safetensors")
    for name in ("scan", "device"):
        other_header, other_tensors = file_contents(tmp_path / f"{name}.safetensors")
        assert list(other_header) == list(header)  # the tensors in the same order, at the same offsets
        assert other_header == header and other_tensors == tensors, name
    config, loop = jax_vit.load(tmp_path / "scan.safetensors")
    _, scan = jax_vit.load(tmp_path / "loop.safetensors", scan_blocks=True)
    assert config == CONFIG
    assert jax.tree.all(jax.tree.map(np.array_equal, loop, params))
    assert jax.tree.all(jax.tree.map(np.array_equal, scan, jax_vit.stack_blocks(params)))
    assert set(load_weights(tmp_path / "scan.safetensors")[1]) == set(load_weights(tmp_path / "loop.safetensors")[1])


def test_mixed_layouts_are_refused(params):
    mixed = {**jax_vit.stack_blocks(params), "blocks_0": params["blocks_0"]}
    with pytest.raises(ValueError, match="both"):
        jax_vit.unstack_blocks(mixed)
    with pytest.raises(ValueError, match="both"):
        jax_vit.stack_blocks(mixed)


@pytest.mark.parametrize("scan_blocks", [False, True])
def test_bfloat16_step_keeps_float32_params_and_optimizer_state(scan_blocks):
    config = ViTConfig.from_variant("mu/8", num_classes=10, image_size=32, drop_path=0.1)
    recipe = RECIPES["default"]
    tx, schedule = optim.make_optimizer(recipe, 10, 100)
    model = jax_vit.ViT(config, dtype=jnp.bfloat16, scan_blocks=scan_blocks)
    state = TrainState.create(jax_vit.init_params(config, 0, scan_blocks=scan_blocks), tx)
    step = make_train_step(model, tx, schedule, recipe.augment, 10)
    rng = np.random.default_rng(0)
    batch = (rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 16).astype(np.int32))
    for _ in range(2):
        state, metrics = step(state, batch, jax.random.key(0))
    floats = lambda tree: {x.dtype for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)}
    assert floats(state.params) == {jnp.dtype(jnp.float32)}  # master weights
    assert floats(state.opt_state) == {jnp.dtype(jnp.float32)}  # Adam's moments
    assert metrics["loss"].dtype == jnp.float32 and np.isfinite(metrics["loss"])
    # The activations are bfloat16 (attention probabilities too, after a float32 softmax).
    x = jnp.asarray(rng.standard_normal((2, 32, 32, 3)), jnp.float32)
    # Jitted: op by op, bfloat16 on the CPU takes seconds per call.
    apply = jax.jit(model.apply, static_argnames="return_intermediates")
    logits, inter = apply({"params": state.params}, x, return_intermediates=True)
    assert logits.dtype == jnp.bfloat16
    for key in ("patch_embed", "embed", "encoded", "pooled"):
        assert inter[key].dtype == jnp.bfloat16, key
    assert {b.dtype for b in inter["blocks"] + inter["attn"]} == {jnp.dtype(jnp.bfloat16)}
    # ... and the gradients float32, as the parameters.
    grads = jax.jit(jax.grad(lambda p: apply({"params": p}, x).astype(jnp.float32).sum()))(state.params)
    assert floats(grads) == {jnp.dtype(jnp.float32)}


def test_compile_benchmark_reports_every_depth_and_layout():
    from vit_bench.compile import format_compile, measure_compile

    result = measure_compile(depths=(1, 2), width=16, heads=2, mlp_dim=32, image_size=8, patch_size=4, batch=2,
                             layouts=("loop", "scan+remat"))
    assert [(r["depth"], r["layout"]) for r in result["rows"]] == [(1, "loop"), (1, "scan+remat"), (2, "loop"), (2, "scan+remat")]
    for row in result["rows"]:
        assert row["lower_s"] > 0 and row["compile_s"] > 0 and row["argument_bytes"] > 0
    table = format_compile(result)
    assert table.count("\n| 2 | scan+remat |") == 1 and "temp MiB" in table
    with pytest.raises(ValueError, match="unknown layouts"):
        measure_compile(depths=(1,), layouts=("unrolled",))


def test_compile_figures_say_when_the_persistent_cache_may_have_served_them():
    from vit_bench.compile import format_compile

    result = {"device": "1 x cpu (cpu)", "jax": jax.__version__, "rows": [],
              "shape": dict(width=16, heads=2, mlp_dim=32, image_size=8, patch_size=4, tokens=5, batch=2,
                            dtype="float32", drop_path=0.1, repeats=3)}
    assert "persistent compilation cache" not in format_compile({**result, "compilation_cache": None})
    table = format_compile({**result, "compilation_cache": "/cache/jax"})
    assert ("JAX's persistent compilation cache is on (/cache/jax): a program it held was loaded, not compiled; "
            "unset JAX_COMPILATION_CACHE_DIR for compile times") in table.splitlines()[1]

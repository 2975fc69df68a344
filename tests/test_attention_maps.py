"""What `vit attention` and `vit embeddings` compute, on numpy arrays: rollout, pooled relevance, upsampling,
position-embedding similarity and the patch filters' principal components."""

from __future__ import annotations

import numpy as np
import pytest

from vit_spec import ViTConfig, WeightsError, random_weights, sincos_2d
from vit_spec.attention_maps import normalise_map, pooled_relevance, pooling_maps, rollout, upsample
from vit_spec.embedding_maps import mosaic, patch_filter_components, position_similarity, row_column_parts

TINY = dict(image_size=(16, 24), patch_size=4, num_classes=10, width=32, depth=3, heads=4, mlp_dim=64)


def random_attention(batch: int, heads: int, tokens: int, layers: int, seed: int = 0) -> list[np.ndarray]:
    """Peaked row-stochastic matrices, as a trained model's."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(layers):
        scores = 3 * rng.standard_normal((batch, heads, tokens, tokens))
        p = np.exp(scores)
        out.append(p / p.sum(-1, keepdims=True))
    return out


def test_every_rollout_row_sums_to_one():
    joint = rollout(random_attention(2, 4, 17, layers=6))
    assert joint.shape == (2, 17, 17)
    np.testing.assert_allclose(joint.sum(-1), 1.0, atol=1e-12)
    assert (joint >= 0).all()


def test_rollout_is_the_product_of_head_means_with_the_residual_added():
    layers = random_attention(1, 3, 5, layers=2)
    step = [(a.mean(1)[0] + np.eye(5)) / 2 for a in layers]  # rows of a + I sum to 2
    np.testing.assert_allclose(rollout(layers)[0], step[1] @ step[0], atol=1e-12)


def test_rollout_of_one_layer_keeps_half_the_weight_on_the_token_itself():
    joint = rollout(random_attention(1, 2, 9, layers=1))[0]
    assert (np.diag(joint) >= 0.5 - 1e-12).all()


def test_rollout_refuses_no_layers():
    with pytest.raises(ValueError, match="at least one layer"):
        rollout([])


def test_cls_relevance_is_the_cls_row_over_the_patches_in_grid_order():
    config = ViTConfig(**TINY)
    t = config.num_tokens
    attention = np.zeros((t, t))
    attention[0, 1 + 5] = 1.0  # patch 5 = row 0, column 5 of the 4 x 6 grid
    maps = pooled_relevance(attention, config)
    assert maps.shape == config.grid == (4, 6)
    assert maps[0, 5] == 1.0 and maps.sum() == 1.0


def test_mean_pool_relevance_is_the_attention_each_patch_receives():
    config = ViTConfig(**TINY, pool="mean")
    attention = random_attention(2, 1, config.num_tokens, 1)[0][:, 0]
    maps = pooled_relevance(attention, config)
    assert maps.shape == (2, 4, 6)
    np.testing.assert_allclose(maps.reshape(2, -1), attention.mean(axis=1))
    np.testing.assert_allclose(maps.sum(axis=(1, 2)), 1.0)


def test_upsampling_keeps_a_constant_map_and_the_mean_of_a_patch():
    np.testing.assert_allclose(upsample(np.full((3, 4), 0.25), (12, 16)), 0.25)
    m = np.random.default_rng(0).random((2, 4, 4))
    up = upsample(m, (32, 32))
    assert up.shape == (2, 32, 32)
    # Bilinear with aligned centres: the interior of each 8x8 block averages to its patch value only
    # approximately, but extremes never grow.
    assert up.min() >= m.min() - 1e-12 and up.max() <= m.max() + 1e-12


def test_display_normalisation_spans_zero_to_one_and_flattens_constants():
    m = np.array([[1.0, 3.0], [2.0, 5.0]])
    n = normalise_map(m)
    assert n.min() == 0 and n.max() == 1
    assert (normalise_map(np.ones((2, 2))) == 0).all()


def test_sincos_similarity_is_one_at_each_position_and_falls_with_distance():
    config = ViTConfig(**TINY, pos_embed="sincos2d")
    s = position_similarity({}, config)  # no table in the weights: computed from the config
    gh, gw = config.grid
    assert s.shape == (gh, gw, gh, gw)
    for i in range(gh):
        for j in range(gw):
            assert s[i, j, i, j] == pytest.approx(1.0)
            assert s[i, j].argmax() == i * gw + j
    # Along a row, the similarity with patch (0, 0) falls over the first patches (further on, the
    # table's highest frequencies come round again).
    assert (np.diff(s[0, 0, 0, :4]) < 0).all()


def test_similarity_reads_the_learned_table_without_the_cls_slot():
    config = ViTConfig(**TINY)
    weights = random_weights(config)
    table = weights["pos_embed"][0, 1:]
    s = position_similarity(weights, config)
    a, b = table[3], table[10]
    expected = a @ b / np.linalg.norm(a) / np.linalg.norm(b)
    assert s.reshape(24, 24)[3, 10] == pytest.approx(expected)


def test_a_sincos_table_is_all_row_and_column_parts():
    parts = row_column_parts({}, ViTConfig(**TINY, pos_embed="sincos2d"))
    assert parts.share == pytest.approx(1.0, abs=1e-9)
    assert parts.chance == pytest.approx((4 + 6 - 2) / (4 * 6 - 1))  # the 4 x 6 grid of TINY
    assert parts.rows.shape == (4, 4) and parts.columns.shape == (6, 6)


def test_random_vectors_put_the_chance_share_into_rows_and_columns():
    config = ViTConfig(**{**TINY, "width": 4096, "heads": 4})
    table = np.random.default_rng(0).normal(size=(1, 1 + 24, 4096))
    parts = row_column_parts({"pos_embed": table}, config)
    assert parts.share == pytest.approx(parts.chance, abs=0.02)


def test_row_and_column_parts_tell_an_ordered_code_from_a_mirrored_one():
    """Rows coded by their index (row 0 opposite row 3) and columns by their distance from the centre (column 0
    like column 5, as horizontal flips teach): the parts' similarities say which."""
    config = ViTConfig(**TINY)
    gh, gw = config.grid
    rng = np.random.default_rng(1)
    u, v = rng.normal(size=(2, config.width))
    grid = np.array([[i * u + abs(j - (gw - 1) / 2) * v for j in range(gw)] for i in range(gh)])
    table = np.concatenate([rng.normal(size=(1, config.width)), grid.reshape(gh * gw, -1)])[None]  # [CLS] slot first
    parts = row_column_parts({"pos_embed": table}, config)
    assert parts.share == pytest.approx(1.0)
    assert parts.rows[0, -1] == pytest.approx(-1.0) and parts.columns[0, -1] == pytest.approx(1.0)
    assert parts.rows[0, 1] == pytest.approx(1.0)  # rows 0 and 1 both lie on the negative side of the mean row


def test_row_and_column_parts_of_a_single_row_grid_or_a_constant_table_are_none():
    assert row_column_parts({}, ViTConfig(**{**TINY, "image_size": (4, 24)}, pos_embed="sincos2d")) is None
    config = ViTConfig(**TINY)
    assert row_column_parts({"pos_embed": np.ones((1, 25, config.width))}, config) is None


def test_the_sincos_table_in_a_file_and_the_computed_one_agree():
    config = ViTConfig(**TINY, pos_embed="sincos2d", pool="mean")
    np.testing.assert_allclose(position_similarity({"pos_embed": sincos_2d(config)}, config),
                               position_similarity({}, config), atol=1e-6)


def test_filter_components_are_orthonormal_and_ordered_by_variance():
    config = ViTConfig(**TINY)
    weights = random_weights(config)
    tiles, ratio = patch_filter_components(weights, config, count=28)
    c, (ph, pw) = config.channels, config.patch_hw
    assert tiles.shape == (28, ph, pw, c)  # 28 <= min(width 32, 3*4*4 = 48)
    flat = tiles.transpose(0, 3, 1, 2).reshape(28, -1)
    np.testing.assert_allclose(flat @ flat.T, np.eye(28), atol=1e-10)
    assert (np.diff(ratio) <= 1e-12).all() and 0 < ratio.sum() <= 1


def test_filters_varying_along_one_direction_give_that_direction_first():
    config = ViTConfig(**TINY)
    direction = np.random.default_rng(1).standard_normal((3, 4, 4))
    direction /= np.linalg.norm(direction)
    coefficients = np.random.default_rng(2).standard_normal(config.width)
    weights = {"patch_embed.proj.weight": coefficients[:, None, None, None] * direction}
    tiles, ratio = patch_filter_components(weights, config, count=3)
    first = tiles[0].transpose(2, 0, 1)
    assert abs((first * direction).sum()) == pytest.approx(1.0)
    assert ratio[0] == pytest.approx(1.0)


def test_mosaic_lays_tiles_out_with_gaps():
    tiles = np.arange(2 * 3 * 2 * 2, dtype=float).reshape(2, 3, 2, 2)
    m = mosaic(tiles, gap=1)
    assert m.shape == (5, 8)
    np.testing.assert_array_equal(m[3:5, 6:8], tiles[1, 2])
    assert np.isnan(m[2]).all() and np.isnan(m[:, 2]).all()


# timm's architecture features: prefix tokens beyond [CLS] (registers, distillation token), a [CLS] token beside
# mean pooling, MAP pooling, and position tables over the patches only.


def test_registers_columns_are_left_out_and_the_cls_row_is_read():
    config = ViTConfig(**TINY, reg_tokens=2)
    t, p = config.num_tokens, config.num_prefix_tokens
    assert p == 3
    attention = np.zeros((t, t))
    attention[0, 1] = attention[0, 2] = 0.5  # all on the registers: no patch gets any of it
    attention[0, p + 7] = 0.25
    maps = pooled_relevance(attention, config)
    assert maps.shape == (4, 6) and maps.reshape(-1)[7] == 0.25 and maps.sum() == 0.25


def test_a_distilled_model_reads_the_mean_of_its_cls_and_distillation_rows():
    config = ViTConfig(**TINY, distilled=True)
    attention = random_attention(1, 1, config.num_tokens, 1)[0][0, 0]
    maps = pooled_relevance(attention, config)
    np.testing.assert_allclose(maps.reshape(-1), attention[:2, 2:].mean(axis=0))


def test_a_cls_token_beside_mean_pooling_is_left_out_rows_and_columns():
    config = ViTConfig(**TINY, pool="mean", class_token=True, reg_tokens=1)
    attention = random_attention(2, 1, config.num_tokens, 1)[0][:, 0]
    maps = pooled_relevance(attention, config)
    np.testing.assert_allclose(maps.reshape(2, -1), attention[:, 2:, 2:].mean(axis=1))


def test_map_relevance_weights_the_patch_rows_by_the_pooling_attention():
    config = ViTConfig(**TINY, pool="map")
    layers = random_attention(2, 4, config.num_tokens, 3)
    joint = rollout(layers)
    pool = np.zeros((2, config.num_patches))
    pool[:, 5] = 1.0  # the latent reads patch 5 alone: the map is patch 5's rolled-out row
    maps = pooled_relevance(joint, config, pool)
    np.testing.assert_allclose(maps.reshape(2, -1), joint[:, 5])
    with pytest.raises(ValueError, match="pooling attention"):
        pooled_relevance(joint, config)
    heads = pooling_maps(np.ones((2, 4, 1, config.num_patches)), config)
    assert heads.shape == (2, 4, 4, 6)


def test_rollout_over_prefix_tokens_keeps_every_token_and_reads_the_patch_columns():
    config = ViTConfig(**TINY, reg_tokens=4)
    layers = random_attention(1, 2, config.num_tokens, 2)
    joint = rollout(layers)
    assert joint.shape == (1, config.num_tokens, config.num_tokens)
    np.testing.assert_allclose(joint.sum(-1), 1.0)
    maps = pooled_relevance(joint, config)
    np.testing.assert_allclose(maps.reshape(-1), joint[0, 0, 5:])  # less than one: the registers hold the rest
    assert maps.sum() < 1.0


@pytest.mark.parametrize("covers", [True, False])
def test_similarity_reads_the_patch_rows_of_a_table_with_or_without_prefix_slots(covers):
    config = ViTConfig(**TINY, reg_tokens=2, pos_embed_covers_prefix=covers)
    weights = random_weights(config)
    table = weights["pos_embed"][0]
    assert len(table) == (config.num_tokens if covers else config.num_patches)
    patches = table[3:] if covers else table
    s = position_similarity(weights, config)
    a, b = patches[3], patches[10]
    assert s.reshape(24, 24)[3, 10] == pytest.approx(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    with pytest.raises(WeightsError, match="pos_embed has 1 rows"):
        position_similarity({"pos_embed": table[:1]}, config)


def test_a_sincos_table_over_the_patches_only_is_computed_alike():
    config = ViTConfig(**TINY, pos_embed="sincos2d", reg_tokens=1, pos_embed_covers_prefix=False)
    np.testing.assert_allclose(position_similarity({"pos_embed": sincos_2d(config)}, config),
                               position_similarity({}, config), atol=1e-6)

"""parity_tests.coverage_report on a handful of architectures: each classified as the converter reads it (built on
the meta device, nothing downloaded)."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("timm")

from parity_tests import coverage_report  # noqa: E402

ARCHS = ["vit_small_patch14_reg4_dinov2", "deit_tiny_distilled_patch16_224", "vit_base_patch16_siglip_224",
         "vit_small_r26_s32_224", "aimv2_large_patch14_224", "resnet18"]


def test_a_handful_of_architectures_is_classified():
    archs = coverage_report.vision_transformer_archs(ARCHS)
    assert "resnet18" not in archs  # not a VisionTransformer: not counted
    rows = {row.arch: row for arch, tags in archs.items() if (row := coverage_report.classify(arch, tags))}
    assert set(rows) == set(ARCHS) - {"resnet18"}
    for arch in ("vit_small_patch14_reg4_dinov2", "deit_tiny_distilled_patch16_224", "vit_base_patch16_siglip_224"):
        assert rows[arch].supported, rows[arch].reason
    assert rows["vit_small_patch14_reg4_dinov2"].family == "DINOv2 with registers"
    assert rows["deit_tiny_distilled_patch16_224"].tags == ["deit_tiny_distilled_patch16_224.fb_in1k"]
    hybrid = rows["vit_small_r26_s32_224"]
    assert not hybrid.supported and "HybridEmbed" in hybrid.reason and hybrid.family == "hybrid ResNet stem"
    aimv2 = rows["aimv2_large_patch14_224"]  # a norm on the patch embeddings, bias-free projections
    assert aimv2.supported and aimv2.family == "AIMv2", aimv2.reason
    table = coverage_report.report(list(rows.values()))
    assert "| DINOv2 with registers | 1 | 1 | 1 |" in table and "HybridEmbed" in table


def test_the_command_prints_the_table(capsys):
    assert coverage_report.main(["--archs", "deit3_small_patch16_224", "vit_base_patch16_rpn_224", "beit3_base_patch16_224",
                                 "test_vit3"]) == 0
    out = capsys.readouterr().out
    assert "| DeiT III | 1 | 2 | 2 |" in out and "post-norm blocks (ResPostBlock)" in out
    assert "| BEiT-3 | 1 | 4 | 4 |" in out and "| timm test models | 1 | 1 | 1 |" in out  # attn norm; prefix pooling

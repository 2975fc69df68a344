"""Which of timm's pretrained VisionTransformer models `vit convert` reads and the twins compute.

    python -m parity_tests.coverage_report [--archs NAME ...] [--tags]

Walks timm.list_models(pretrained=True) (tags only: nothing is downloaded), keeps the tags whose architecture
(the part before the '.') builds a timm VisionTransformer or VisionTransformerDistilled, builds each architecture
once on the meta device (shapes only) and runs its state dict's shapes through the converter's config detection
with the architecture's name as --variant (vit_spec.formats.timm.from_timm): supported, or refused with the
feature the twins lack. A supported one is checked once more: the timm model `vit convert --to timm` would print
for the converted config, built on the meta device too, must have the same modules' fields and the same state dict
(names, order, shapes). Prints a table per family and the total. Runs from the repository root.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import importlib
import re
import sys
import time

import numpy as np

# Families: (name, pattern on the architecture name), first match wins.
FAMILIES = (
    ("DINOv2 with registers", r"_reg\d+_dinov2"),
    ("DINOv2", r"_dinov2"),
    ("DeiT III", r"^deit3_"),
    ("DeiT distilled", r"^deit_.*distilled"),
    ("DeiT", r"^deit_"),
    ("SigLIP 2", r"siglip2"),
    ("SigLIP", r"siglip"),
    ("CLIP", r"_clip_"),
    ("AIMv2", r"^aimv2_"),
    ("BEiT-3", r"^beit3_"),
    ("ViTamin (hybrid)", r"^vitamin_"),
    ("hybrid ResNet stem", r"_r\d+_s\d+_|_r_s\d+_"),
    ("MobileCLIP hybrid", r"_mci_"),
    ("RADIO", r"_radio_"),
    ("TIPS", r"tips"),
    ("EVA-01 MIM (mean + fc_norm)", r"^eva_"),
    ("timm SBB (registers, gap/map)", r"_reg\d+_(gap|map)"),
    ("InternViT", r"intern"),
    ("timm test models", r"^test_vit"),
    ("FlexiViT", r"^flexivit_"),
    ("ViT (Google, augreg, MAE, DINO, MIIL, gap, ...)", r"^vit_"),
)


def family(arch: str) -> str:
    return next((name for name, pattern in FAMILIES if re.search(pattern, arch)), "other")


@dataclasses.dataclass
class Row:
    arch: str
    tags: list[str]
    family: str
    supported: bool
    reason: str  # the feature the twins lack ("" when supported)


def vision_transformer_archs(only: list[str] | None = None) -> dict[str, list[str]]:
    """Architecture -> its pretrained tags, for the architectures whose timm module defines VisionTransformer
    (the classes are checked when each is built)."""
    import timm
    from timm.models._registry import _model_to_module  # noqa: PLC2701 (timm's registry of entrypoint modules)

    archs: dict[str, list[str]] = collections.OrderedDict()
    for tag in timm.list_models(pretrained=True):
        archs.setdefault(tag.split(".")[0], []).append(tag)
    if only:
        archs = {a: archs.get(a, [a]) for a in only}
    keep = {}
    for arch, tags in archs.items():
        module = _model_to_module.get(arch)
        if module and hasattr(importlib.import_module(f"timm.models.{module}"), "VisionTransformer"):
            keep[arch] = tags
    return keep


def short_reason(message: str) -> str:
    """The feature the twins lack, from a converter's refusal."""
    for pattern in (r"is a timm model that (.*?); this project", r"timm's \S+ (.*?); this project", r"error: (.*)"):
        match = re.search(pattern, message)
        if match:
            return re.sub(r" \('[^']*'\)$", "", match.group(1))
    return message


def classify(arch: str, tags: list[str]) -> Row | None:
    """None when the architecture builds no VisionTransformer."""
    from vit_spec.formats.errors import FormatError
    from vit_spec.formats.timm import from_timm
    from vit_spec.formats.timm_models import meta_model

    model = meta_model(arch)
    if type(model).__name__ not in ("VisionTransformer", "VisionTransformerDistilled"):
        return None
    zero = np.zeros((), np.float32)
    shapes = {k: np.broadcast_to(zero, tuple(v.shape)) for k, v in model.state_dict().items()}  # no memory
    try:
        config = from_timm(shapes, {}, arch, variant=arch).config
    except FormatError as e:
        return Row(arch, tags, family(arch), False, short_reason(str(e)))
    wrong = rebuilt_differences(config, model, arch)
    return Row(arch, tags, family(arch), not wrong, f"converter error: {wrong}" if wrong else "")


def rebuilt_differences(config, model, arch: str) -> str:
    """What differs between timm's model and the one `vit convert --to timm` would print for the converted config,
    both on the meta device: the fields read off their modules, and their state dicts' names, order and shapes."""
    from parity_tests.peers import timm_class, timm_kwargs
    from vit_spec.formats.timm_models import model_fields

    rebuilt = timm_class(config)(**timm_kwargs(config), device="meta")
    theirs, ours = model_fields(model, arch)[0], model_fields(rebuilt, arch)[0]
    fields = [f"{k}: {theirs[k]!r} vs {ours[k]!r}" for k in ours if k in theirs and theirs[k] != ours[k]]
    shapes = lambda m: [(k, tuple(v.shape)) for k, v in m.state_dict().items()]  # noqa: E731
    if shapes(model) != shapes(rebuilt):
        fields.append("state dict names/shapes")
    return "; ".join(fields)


def report(rows: list[Row], show_tags: bool = False, total_expected: int | None = None) -> str:
    """The per-family table (tags supported / tags) and the refusals' reasons, as markdown."""
    by_family: dict[str, list[Row]] = collections.defaultdict(list)
    for row in rows:
        by_family[row.family].append(row)
    lines = ["| family | architectures | tags | supported tags | not computed: why (tags) |", "|---|---|---|---|---|"]
    order = [name for name, _ in FAMILIES] + ["other"]
    for name in sorted(by_family, key=order.index):
        group = by_family[name]
        tags = sum(len(r.tags) for r in group)
        ok = sum(len(r.tags) for r in group if r.supported)
        why = collections.Counter()
        for r in group:
            if not r.supported:
                why[r.reason] += len(r.tags)
        reasons = "; ".join(f"{reason} ({n})" for reason, n in why.most_common())
        lines.append(f"| {name} | {len(group)} | {tags} | {ok} | {reasons} |")
    tags = sum(len(r.tags) for r in rows)
    ok = sum(len(r.tags) for r in rows if r.supported)
    archs_ok = sum(r.supported for r in rows)
    lines.append(f"| **total** | {len(rows)} | {tags} | **{ok}** ({100 * ok / max(tags, 1):.1f}%) | |")
    lines.append("")
    lines.append(f"{ok} of {tags} pretrained VisionTransformer tags ({100 * ok / max(tags, 1):.1f}%), {archs_ok} of "
                 f"{len(rows)} architectures, are read by `vit convert` and computed by both twins.")
    if total_expected is not None and tags != total_expected:
        lines.append(f"(timm lists {tags} such tags here, not {total_expected}: another timm version)")
    reasons = collections.Counter()
    for r in rows:
        if not r.supported:
            reasons[r.reason] += len(r.tags)
    if reasons:
        lines.append("")
        lines.append("Not computed, by reason (tags): " + "; ".join(f"{k} ({n})" for k, n in reasons.most_common()) + ".")
    if show_tags:
        lines.append("")
        for r in rows:
            lines.append(f"- {r.arch}: {'yes' if r.supported else 'no: ' + r.reason} ({', '.join(r.tags)})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", nargs="+", metavar="NAME", help="only these architectures (default: every one)")
    parser.add_argument("--tags", action="store_true", help="also list every architecture with its tags")
    args = parser.parse_args(argv)
    import timm

    start = time.perf_counter()
    rows = [row for arch, tags in vision_transformer_archs(args.archs).items() if (row := classify(arch, tags))]
    print(f"timm {timm.__version__}: {len(rows)} VisionTransformer architectures, built on the meta device in "
          f"{time.perf_counter() - start:.0f} s\n")
    print(report(rows, args.tags, None if args.archs else 362))
    return 0


if __name__ == "__main__":
    sys.exit(main())

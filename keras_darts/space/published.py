"""Published genotypes as data, with their source and reported figures.

Every genotype is written as its source publishes it
(docs/evaluation.md#published-genotypes): `op:input` pairs, two per node, with the
abbreviations of `_ABBREVIATIONS`; NAO's cells as their 40 integers.
`param_counts` holds the exact parameter counts the reference code's layer
shapes give (trainable weights; BatchNorm moving statistics excluded), per
evaluation setting of `PAPER_SETTINGS`: (without auxiliary head, with it or None when not given).
`reported_*` are the papers' own figures, verbatim.

Look a genotype up by name with `keras_darts.space.genotype.load_genotype(name)`.
"""

import dataclasses

from keras_darts.space import nao_arch
from keras_darts.space.genotype import Genotype

_ABBREVIATIONS = {
    "s3": "sep_conv_3x3", "s5": "sep_conv_5x5", "d3": "dil_conv_3x3", "d5": "dil_conv_5x5",
    "mp": "max_pool_3x3", "ap": "avg_pool_3x3", "sk": "skip_connect",
    # sharpDARTS's further ops (op family "sharp").
    "s7": "sep_conv_7x7", "f3": "flood_conv_3x3", "f5": "flood_conv_5x5",
    "df3": "dil_flood_conv_3x3", "c3": "choke_conv_3x3", "dc3": "dil_choke_conv_3x3",
}
_CONCAT = (2, 3, 4, 5)  # Every genotype below concatenates all four nodes.

# The evaluation networks the parameter counts refer to (keyword arguments of
# eval_net.build_network).
PAPER_SETTINGS = {
    "cifar10": {"kind": "cifar", "channels": 36, "num_layers": 20, "num_classes": 10},
    "cifar100": {"kind": "cifar", "channels": 36, "num_layers": 20, "num_classes": 100},
    "cifar10_8cells": {"kind": "cifar", "channels": 36, "num_layers": 8, "num_classes": 10},
    "imagenet": {"kind": "imagenet", "channels": 48, "num_layers": 14, "num_classes": 1000},
    # sharpDARTS's ImageNet run of its choke cell with a middle width of 96.
    "imagenet_mid96": {"kind": "imagenet", "channels": 48, "num_layers": 14,
                       "num_classes": 1000, "op_options": {"mid_channels": 96}},
    # NAO's networks: N cells per stage, 3N + 2 cells.  CIFAR-10 at N=6 (= "cifar10",
    # but the auxiliary head's input is the loose ends of the reduction cell), at
    # NAO-V2's search size N=3, and ImageNet at N=4.
    "cifar10_nao": {"kind": "cifar", "channels": 36, "num_layers": 20, "num_classes": 10},
    "cifar10_nao_search": {"kind": "cifar", "channels": 20, "num_layers": 11,
                           "num_classes": 10},
    "imagenet_nao": {"kind": "imagenet", "channels": 52, "num_layers": 14, "num_classes": 1000},
}


@dataclasses.dataclass(frozen=True)
class PublishedGenotype:
    """A genotype from a paper or its code, and the figures reported for it."""

    name: str
    genotype: Genotype
    source: str
    reported_error: str
    reported_params: str
    param_counts: dict  # PAPER_SETTINGS key -> (without aux, with aux or None)
    note: str = ""


def _genotype(normal, reduce, op_family="darts"):
    def pairs(text):
        return tuple((_ABBREVIATIONS[op], int(i))
                     for op, i in (item.split(":") for item in text.split()))
    return Genotype(normal=pairs(normal), normal_concat=_CONCAT,
                    reduce=pairs(reduce), reduce_concat=_CONCAT, op_family=op_family)


_DARTS_SOURCE = ("DARTS (Liu, Simonyan, Yang, ICLR 2019, arXiv 1806.09055); "
                 "quark0/darts cnn/genotypes.py")
_SHARP_SOURCE = ("sharpDARTS (Hundt, Jain, Hager, arXiv 1903.09900); ahundt/sharpDARTS "
                 "cnn/genotypes.py")
_PT_SOURCE = "DARTS-PT (arXiv 2108.04392); ruocwang/darts-pt sota/cnn/genotypes.py"


def _darts_pt(name, normal, reduce, params, fixed_alpha=False, note=""):
    """A DARTS-PT genotype (CIFAR-10, DARTS space without `none`); the paper reports
    figures per method (DARTS+PT: over its 4 searches), not per genotype."""
    if fixed_alpha:  # `blank_pt`: alphas never trained, then perturbation selection.
        error, params_text = "CIFAR-10 2.87 % (DARTS+PT fix alpha, Table 4)", "-"
    else:
        error = "CIFAR-10 2.61 +- 0.08 % (DARTS+PT, mean of the 4 searches; best 2.48 %)"
        params_text = "3.0M (mean of the 4)"
    return PublishedGenotype(name, _genotype(normal, reduce), _PT_SOURCE, error, params_text,
                             {"cifar10": (params, None)}, note)


_ENTRIES = [
    PublishedGenotype(
        "DARTS_V1",
        _genotype("s3:1 s3:0 sk:0 s3:1 sk:0 s3:1 s3:0 sk:2",
                  "mp:0 mp:1 sk:2 mp:0 mp:0 sk:2 sk:2 ap:0"),
        _DARTS_SOURCE + " (first order)",
        "CIFAR-10 3.00 +- 0.14 % (10 runs, cutout)", "3.3M",
        {"cifar10": (3_169_414, 3_645_840), "imagenet": (4_510_432, 5_771_208)},
        "The paper's 3.3M does not match this cell's 3.17M (docs/evaluation.md#parameter-counts)."),
    PublishedGenotype(
        "DARTS_V2",
        _genotype("s3:0 s3:1 s3:0 s3:1 s3:1 sk:0 sk:0 d3:2",
                  "mp:0 mp:1 sk:2 mp:1 mp:0 sk:2 sk:2 mp:1"),
        _DARTS_SOURCE + " (second order; the paper's cell)",
        "CIFAR-10 2.76 +- 0.09 % (10 runs, cutout); ImageNet mobile 26.7 % top-1, 8.7 % top-5",
        "3.3M (CIFAR-10), 4.7M (ImageNet)",
        {"cifar10": (3_349_342, 3_825_768), "cifar100": (3_401_272, 3_946_908),
         "imagenet": (4_718_752, 5_979_528)}),
    _darts_pt("darts_pt_s5_0", "s3:0 s3:1 s5:0 d3:1 sk:0 sk:2 sk:0 mp:4",
              "s3:0 ap:1 d5:1 d3:2 ap:0 mp:2 s3:2 sk:4", 2_851_246),
    _darts_pt("darts_pt_s5_1", "s3:0 s3:1 s3:0 d3:1 mp:0 sk:2 sk:0 d3:4",
              "d5:0 ap:1 mp:0 s5:2 mp:1 d3:3 s5:0 s3:4", 3_053_206),
    _darts_pt("darts_pt_s5_2", "sk:0 s3:1 s3:0 d3:1 sk:2 d3:3 mp:1 sk:2",
              "ap:0 mp:1 ap:0 s3:1 d5:2 sk:3 s3:2 s5:4", 2_658_142),
    _darts_pt("darts_pt_s5_3", "s3:0 s3:1 s3:0 s3:1 sk:0 sk:2 s3:1 sk:3",
              "ap:0 s5:1 mp:1 sk:2 d5:1 mp:3 s5:2 sk:3", 3_328_174,
              note="Presumably the 2.48 % / 3.3M 'best' (specs: INFERRED)."),
    _darts_pt("blank_pt_s5_0", "s3:0 s5:1 s3:0 s3:1 ap:1 sk:3 mp:0 ap:2",
              "sk:0 s5:1 d3:1 s5:2 mp:0 sk:3 mp:0 mp:2", 3_039_598,
              fixed_alpha=True),
    _darts_pt("blank_pt_s5_1", "ap:0 ap:1 s3:0 mp:2 sk:2 s3:3 s5:0 s5:1",
              "mp:0 d5:1 s3:0 sk:1 ap:2 mp:3 s5:3 s5:4", 3_148_030,
              fixed_alpha=True),
    _darts_pt("blank_pt_s5_2", "ap:0 d3:1 s5:0 mp:1 mp:0 sk:1 s5:1 ap:2",
              "s3:0 ap:1 ap:0 s5:1 mp:0 s5:3 mp:2 d5:4", 2_581_894,
              fixed_alpha=True),
    _darts_pt("blank_pt_s5_3", "s3:0 s3:1 s3:0 sk:1 mp:2 s3:3 ap:0 s5:1",
              "d5:0 s5:1 s5:0 d3:1 ap:1 sk:2 mp:0 sk:4", 3_404_854,
              fixed_alpha=True),
    PublishedGenotype(
        "MSRDARTS",
        _genotype("s3:1 s3:0 s3:2 d5:1 d3:3 d3:0 s5:1 d5:2",
                  "s3:0 d3:1 d3:1 s5:0 s3:0 d3:1 s3:0 s5:1"),
        "MSR-DARTS (arXiv 2009.09209 v2, IJCNN 2022); mtaecchhi/msrdarts genotypes.py",
        "CIFAR-10 2.54 % (v2 abstract)", "4.0M",
        {"cifar10": (4_007_710, 4_484_136), "cifar10_8cells": (1_628_830, None)},
        "v1's 1.7M model (2.92 %) is presumably this cell at 8 cells (specs: INFERRED)."),
]


def _sharp(name, normal, reduce, error, params_text, param_counts, note=""):
    """A sharpDARTS genotype: ops of the "sharp" family (SharpSepConv; choke ops
    with a middle width of 32 unless the setting says otherwise)."""
    return PublishedGenotype(name, _genotype(normal, reduce, op_family="sharp"), _SHARP_SOURCE,
                             error, params_text, param_counts, note)


_ENTRIES += [
    _sharp("SHARPSEPCONV_DARTS",
           "s3:0 s3:1 s3:0 s3:2 sk:0 s3:1 sk:0 s3:1",
           "mp:0 sk:1 sk:2 ap:0 sk:2 ap:0 sk:2 sk:3",
           "CIFAR-10 1.98 +- 0.07 % (AutoAugment; 2.45 % without); ImageNet 25.1 % top-1, "
           "7.8 % top-5", "3.6M (CIFAR-10), 4.9M (ImageNet)",
           {"cifar10": (3_555_622, 4_032_048), "imagenet": (4_973_728, None)},
           "Searched over --primitives=sharpsep_darts (the DARTS names as SharpSepConv)."),
    _sharp("DARTS_V2_SHARPSEPCONV",
           "s3:0 s3:1 s3:0 s3:1 s3:1 sk:0 sk:0 d3:2",
           "mp:0 mp:1 sk:2 mp:1 mp:0 sk:2 sk:2 mp:1",
           "CIFAR-10 2.05 +- 0.14 % (AutoAugment; 2.55 % without)", "3.5M",
           {"cifar10": (3_529_270, 4_005_696)},
           "DARTS_V2's cell built with sharpDARTS's ops, no search of its own."),
    _sharp("SHARP_DARTS",
           "c3:0 c3:1 sk:0 c3:1 sk:0 sk:1 sk:0 sk:1",
           "mp:0 sk:1 mp:0 sk:2 mp:0 sk:2 sk:2 f3:0",
           "CIFAR-10 2.29 +- 0.06 % (AutoAugment; 2.97 % without); ImageNet 31.3 % top-1 "
           "(mid width 32), 27.8 % (mid width 96)", "1.98M (CIFAR-10), 3.17M / 3.71M (ImageNet)",
           {"cifar10": (1_974_934, 2_451_360), "imagenet": (3_173_440, None),
            "imagenet_mid96": (3_714_880, None)},
           "Searched over --primitives=sharp; choke ops use --mid_channels (32)."),
    _sharp("SHARPER_MAX_W",
           "s3:0 d5:1 mp:0 s7:2 ap:3 f3:0 f3:1 sk:2",
           "f5:0 df3:1 s3:0 sk:2 s3:0 sk:2 d5:4 s3:0",
           "ImageNet 24.0 % top-1, 7.3 % top-5 (SharperDARTS-MaxW)", "8.3M (ImageNet)",
           {"cifar10": (6_087_142, 6_563_568), "imagenet": (8_267_296, None)},
           "Searched over --primitives=sharper with --weighting=max_w; identified as the "
           "ImageNet table's SharperDARTS-MaxW by its exact parameter count."),
    _sharp("SHARPSEPCONV_DARTS_MAX_W",
           "d3:0 d5:1 s3:2 d5:1 ap:2 s3:0 ap:4 mp:3",
           "mp:0 sk:1 s5:0 sk:2 s5:0 d5:3 s5:4 sk:3",
           "not reported", "-", {"cifar10": (3_546_550, 4_022_976)},
           "Searched over --primitives=sharpsep_darts with --weighting=max_w (the later of the "
           "reference's two definitions)."),
]


_NAO_SOURCE = ("NAO (Luo et al., NeurIPS 2018, arXiv 1808.07233) / NAO-V2 (arXiv 1909.11926); "
               "renqianluo/NAO_pytorch")


def _nao(name, text, source, error, param_counts, note=""):
    """A NAO genotype from its 40-integer form (keras_darts/space/nao_arch.py): op
    family "nao", 5 nodes, loose-end concats.  NAO publishes no parameter counts
    for these cells (the counts are derived from the layer shapes)."""
    genotype = nao_arch.to_genotype(nao_arch.parse_text(text, where=name))
    return PublishedGenotype(name, genotype, f"{_NAO_SOURCE} {source}", error,
                             "not reported", param_counts, note)


_ENTRIES += [
    _nao("NAONet_V2",
         "1 1 0 1 2 4 0 0 0 0 2 1 0 0 0 2 0 3 0 0 0 2 0 2 2 2 1 0 0 0 0 1 0 0 0 3 0 0 0 1",
         "NAO_V2/train_NAONet_V2_*.sh (fixed_arc)",
         "CIFAR-10 2.60 % (abstract; 2.57 % for the repo's NAONet-V2-36 checkpoint); "
         "ImageNet mobile 74.4 % top-1 (abstract; README: 25.5 % top-1 / 8.2 % top-5 error)",
         {"cifar10_nao": (4_387_654, 4_864_080), "cifar10_nao_search": (800_830, None),
          "imagenet_nao": (7_026_850, 8_295_818)},
         "NAO-V2's final cell; N=6 C=36 on CIFAR, N=4 C=52 on ImageNet (docs/evaluation.md"
         "#nao-networks)."),
    _nao("NAONet_B",
         "0 1 0 2 0 1 2 2 1 3 0 2 4 0 1 3 2 1 0 3 1 1 1 0 2 1 2 4 1 0 2 3 3 1 2 2 0 2 0 2",
         "NAO_V1/train_NAONet_B_*.sh (NAO-WS, small space)",
         "CIFAR-10 2.93 % (C=36; NAO_V1 README)",
         {"cifar10_nao": (2_921_302, 3_379_296)},
         "NAONet-A is left out: it uses NAO's 11-op 'large' space."),
]

# name -> PublishedGenotype; "DARTS" is the reference code's alias of DARTS_V2.
REGISTRY = {entry.name: entry for entry in _ENTRIES}
REGISTRY["DARTS"] = REGISTRY["DARTS_V2"]

DARTS_V1 = REGISTRY["DARTS_V1"].genotype
DARTS_V2 = REGISTRY["DARTS_V2"].genotype
PUBLISHED = {name: entry.genotype for name, entry in REGISTRY.items()}


def names():
    """Registered names, sorted."""
    return sorted(REGISTRY)

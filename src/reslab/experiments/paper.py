"""The ResNet paper's numbers that our experiments are set beside (He et al. 2015)."""

from __future__ import annotations

PAPER = "He et al. 2015, Deep Residual Learning for Image Recognition"

TABLE6_TEST_ERR: dict[int, float] = {20: 8.75, 32: 7.51, 44: 7.17, 56: 6.97, 110: 6.43, 1202: 7.93}
"""Table 6: CIFAR-10 test error (%) of ResNet-20 ... ResNet-1202 (option A, 64k iterations).
ResNet-110 is the best of 5 runs; their mean is 6.61 +- 0.16."""

TABLE6_PARAMS_M: dict[int, float] = {20: 0.27, 32: 0.46, 44: 0.66, 56: 0.85, 110: 1.7, 1202: 19.4}
"""Table 6: parameters (millions), as printed (two decimals below 1M, one above)."""

TABLE6_RESNET110_MEAN_STD = (6.61, 0.16)

TABLE3_TOP1_ERR: dict[str, float] = {"A": 25.03, "B": 24.52, "C": 24.19}
"""Table 3: ImageNet validation top-1 error (%, 10-crop) of ResNet-34 with shortcut options A, B, C."""

TABLE3_TOP5_ERR: dict[str, float] = {"A": 7.76, "B": 7.46, "C": 7.40}

FIG6_PLAIN = ("deeper plain nets have higher training error and higher test error "
              "(plain-56 above plain-20 throughout training, Fig. 6 left)")
FIG6_RESNET = "deeper ResNets have lower training and test error (ResNet-56 below ResNet-20, Fig. 6 right)"
FIG7 = ("ResNets have generally smaller responses than their plain counterparts, and the deeper "
        "ResNet has smaller responses (Fig. 7)")


def paper_params_match(depth: int, params: int | None) -> bool | None:
    """Whether ``params`` rounds to Table 6's printed figure for a ResNet of ``depth`` layers."""
    if params is None or depth not in TABLE6_PARAMS_M:
        return None
    printed = TABLE6_PARAMS_M[depth]
    digits = 2 if printed < 1 else 1
    return round(params / 1e6, digits) == printed

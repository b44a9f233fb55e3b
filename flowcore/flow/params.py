"""TV-L1 optical-flow parameters, shared by every flow backend.

Defaults equal OpenCV's CPU `cv2.optflow.DualTVL1OpticalFlow_create()` (checked in the tests).
Symbols follow Zach, Pock & Bischof (2007) and Sanchez Perez, Meinhardt-Llopis & Facciolo,
"TV-L1 Optical Flow Estimation", IPOL 2013, which describe the algorithm OpenCV implements.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class TVL1Params:
    """One TV-L1 parameter set (frozen: hashable, safe to store beside results).

    tau: time step of the dual (Chambolle) update, tau / theta per iteration; < 0.25 is stable.
    lambda_: weight of the data term (lambda); smaller gives smoother flow.
    theta: coupling between the flow u and its auxiliary copy v (theta).
    n_scales: pyramid levels, coarsest first processed; fewer when a level drops below 16 px.
    scale_step: size ratio between consecutive pyramid levels (0 < step < 1).
    n_warps: warps of the second image per pyramid level.
    epsilon: stopping threshold; a warp stops once the mean squared flow update < epsilon**2.
    inner_iterations: iterations between two median filterings of the flow.
    outer_iterations: median filterings per warp (so at most inner * outer iterations per warp).
    median_filtering: side of the median filter applied to the flow (1 disables it).
    gamma: weight of the illumination-change term (0 disables it, OpenCV's default).
    """

    tau: float = 0.25
    lambda_: float = 0.15
    theta: float = 0.3
    n_scales: int = 5
    scale_step: float = 0.8
    n_warps: int = 5
    epsilon: float = 0.01
    inner_iterations: int = 30
    outer_iterations: int = 10
    median_filtering: int = 5
    gamma: float = 0.0

    def __post_init__(self):
        checks = [
            (self.tau > 0, "tau must be > 0"),
            (self.lambda_ > 0, "lambda_ must be > 0"),
            (self.theta > 0, "theta must be > 0"),
            (self.n_scales >= 1, "n_scales must be >= 1"),
            (0 < self.scale_step < 1, "scale_step must lie in (0, 1)"),
            (self.n_warps >= 1, "n_warps must be >= 1"),
            (self.epsilon >= 0, "epsilon must be >= 0"),
            (self.inner_iterations >= 1, "inner_iterations must be >= 1"),
            (self.outer_iterations >= 1, "outer_iterations must be >= 1"),
            (self.median_filtering in (1, 3, 5), "median_filtering must be 1, 3 or 5"),
            (self.gamma >= 0, "gamma must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"{message}, got {self}")

    def to_dict(self) -> dict:
        """Plain JSON-able {name: value}, in field order."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

"""What every solver returns: an assignment and its cost, re-evaluated by `cost.cost`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .cost import Objective


class InfeasibleError(ValueError):
    """No assignment satisfies the memory limits (raised by the exact solvers).

    A ValueError because it is a property of the input: the devices do not have the memory
    for these modules under the allowed placements.
    """


@dataclass(frozen=True)
class Solution:
    """assignment[j] = device of module j (None if the heuristic found nothing feasible).

    `cost` is always recomputed from the assignment with `cost.cost`, never copied from a
    solver's internal objective, so solvers are compared on one and the same formula.
    `optimal` is True only when the solver proves optimality (over its search space).
    """

    assignment: tuple[int, ...] | None
    cost: float
    objective: Objective
    solver: str
    optimal: bool
    seconds: float
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def feasible(self) -> bool:
        return self.assignment is not None and math.isfinite(self.cost)

    def gap(self, best: "Solution | float") -> float:
        """Relative optimality gap (cost - best) / best; inf if this solution is infeasible."""
        ref = best.cost if isinstance(best, Solution) else float(best)
        if not self.feasible:
            return math.inf
        return (self.cost - ref) / ref if ref > 0 else (0.0 if self.cost == ref else math.inf)


def no_fit_message(problem: Any, where: str) -> str:
    where = f"{where} " if where else ""
    return (f"no {where}assignment of the {problem.k} modules fits in the devices' memory "
            f"(modules need {problem.m.sum():.4g} bytes in total, devices have {problem.M.sum():.4g}); "
            "add devices or memory, or shrink the modules (activation checkpointing, sharding)")

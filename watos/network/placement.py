"""Placement: which die of a 2D mesh each device rank runs on.

Ranks follow Megatron's order, ``rank = t + g·(d + dp·p)`` for position t inside a TP·CP group of g
ranks, data-parallel replica d and pipeline stage p; a *unit* is the group (d, p). Strategies:

* ``row_major``: rank r on die r (row-major die order): Megatron's layout taken to a mesh, the baseline.
  Stage p's replicas sit next to each other, so consecutive pipeline stages are dp units apart.
* ``snake``: units in pipeline order (replica by replica, stage by stage) on consecutive runs of g dies
  along a boustrophedon walk of the mesh: consecutive stages touch.
* ``compact``: units in pipeline order on compact rectangles of g dies, themselves walked as a
  boustrophedon, so a TP group's ring is a Hamiltonian cycle (every hop one link) and stages touch
  (rows below the last band of full rectangles hold flatter ones).
* ``optimized``: ``compact`` refined by seeded pairwise swaps of units, minimising the WATOS placement
  objective (the paper's §Strategy 4): Σ bytes · hops over the pipeline sends and the checkpoint transfers
  between Sender/Helper stages, plus the bytes of every path that shares a link with a heavier one.

On a wafer with dead dies (a fault map), every strategy places on the working dies only: row-major takes them
in order, rectangles holding a dead die are skipped, and the boustrophedon walk steps over dead dies. The
non-robust alternative, :func:`move_off_dead`, keeps a fault-free placement and moves each dead die's ranks
to the nearest working die (:func:`crowding` then says how much work the busiest die carries).
"""
from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from typing import Literal, get_args

from watos.errors import WatosError
from watos.network.routing import route_xy

Placement = Literal["row_major", "snake", "compact", "optimized"]
PLACEMENTS: tuple[Placement, ...] = get_args(Placement)
Coord = tuple[int, int]


def place(strategy: Placement, rows: int, cols: int, group: int, dp: int, pp: int, *,
          pipeline_bytes: float = 1.0, pairs: Sequence[tuple[int, int, float]] = (), seed: int = 0,
          swaps: int = 400, wafers: int = 1, dead: frozenset[int] = frozenset()) -> list[int]:
    """The die of every rank (row-major index; wafer w's dies follow wafer w−1's). ``pairs``: (sender
    stage, helper stage, bytes) of cross-die checkpoint traffic, which ``optimized`` pulls close
    together. Several wafers take units in pipeline order, filling one wafer's slots before the next's.
    ``dead``: dies no rank may use (module docstring)."""
    units, per = dp * pp, rows * cols
    if units * group > per * wafers - len(dead):
        raise WatosError(f"placement: the plan needs {units * group} dies, the target has "
                         f"{wafers} x {rows}x{cols} = {per * wafers}" + (f", {len(dead)} of them dead" if dead else ""))
    if strategy == "row_major":
        return [d for d in range(per * wafers) if d not in dead][:units * group]
    per_wafer = max(1, -(-units // wafers))
    rectangles = _rectangles(rows, cols, group, per_wafer) if strategy in ("compact", "optimized") else None
    slots = [[w * per + d for d in slot] for w in range(wafers) for slot in rectangles or ()
             if not any(w * per + d in dead for d in slot)]
    if len(slots) < units:
        slots = [[w * per + d for d in slot] for w in range(wafers)
                 for slot in _runs(rows, cols, group, frozenset(d - w * per for d in dead if d // per == w))]
    if len(slots) < units:
        raise WatosError(f"placement {strategy}: {units} groups of {group} dies do not fit whole on "
                         f"{wafers} x {rows}x{cols} dies (only {len(slots)} do); use row_major")
    order = list(range(units))  # unit u = d·pp + p sits on slot order[u]
    if strategy == "optimized":
        order = _optimise(order, slots, cols, group, dp, pp, pipeline_bytes, pairs, seed, swaps)
    dies = [0] * (units * group)
    for d in range(dp):
        for p in range(pp):
            for t, die in enumerate(slots[order[d * pp + p]]):
                dies[t + group * (d + dp * p)] = die
    return dies


def move_off_dead(dies: Sequence[int], dead: frozenset[int], rows: int, cols: int) -> list[int]:
    """The non-robust placement: every rank on a dead die moved to the nearest working die of its wafer
    (fewest mesh hops, then the lowest index), which then runs both ranks' work."""
    per = rows * cols

    def nearest(die: int) -> int:
        wafer, (r, c) = die // per, divmod(die % per, cols)
        working = [d for d in range(wafer * per, (wafer + 1) * per) if d not in dead]
        if not working:
            raise WatosError(f"placement: every die of wafer {wafer} is dead")
        return min(working, key=lambda d: (abs(divmod(d % per, cols)[0] - r) + abs(d % cols - c), d))

    return [nearest(d) if d in dead else d for d in dies]


def crowding(dies: Sequence[int], compute: Callable[[int], float] = lambda die: 1.0) -> tuple[int, float]:
    """(the most ranks one die runs, the most work one die carries per unit of its compute): a die with two
    ranks, or with half its cores working, carries twice the work, and a synchronous step waits for it."""
    ranks = Counter(dies)
    return max(ranks.values()), max(n / compute(d) for d, n in ranks.items())


def objective(dies: Sequence[int], cols: int, group: int, dp: int, pp: int, pipeline_bytes: float = 1.0,
              pairs: Sequence[tuple[int, int, float]] = ()) -> float:
    """The placement objective of a rank → die map: Σ bytes · hops of every pipeline send (rank t of
    stage p to rank t of stage p+1, each replica) and checkpoint transfer, plus, on every link, the
    bytes of all but its heaviest path (a penalty where paths overlap)."""
    def coord(d: int, p: int, t: int) -> Coord:
        return divmod(dies[t + group * (d + dp * p)], cols)

    flows = [(coord(d, p, t), coord(d, p + 1, t), pipeline_bytes)
             for d in range(dp) for p in range(pp - 1) for t in range(group)]
    flows += [(coord(d, s, t), coord(d, h, t), nbytes) for s, h, nbytes in pairs for d in range(dp) for t in range(group)]
    distance = 0.0
    on_link: dict[tuple, list[float]] = defaultdict(list)
    for src, dst, nbytes in flows:
        hops = route_xy(src, dst)
        distance += nbytes * len(hops)
        for link in hops:
            on_link[link].append(nbytes)
    overlap = sum(sum(b) - max(b) for b in on_link.values())
    return distance + overlap


def pipeline_hops(dies: Sequence[int], cols: int, group: int, dp: int, pp: int) -> float:
    """Mean hops of a pipeline send (0 with one stage)."""
    if pp < 2:
        return 0.0
    return objective(dies, cols, group, dp, pp) / (dp * (pp - 1) * group) if dp * group else 0.0


def _snake(rows: int, cols: int) -> list[Coord]:
    return [(r, c if r % 2 == 0 else cols - 1 - c) for r in range(rows) for c in range(cols)]


def _runs(rows: int, cols: int, group: int, dead: frozenset[int] = frozenset()) -> list[list[int]]:
    """Consecutive runs of ``group`` working dies along the boustrophedon walk."""
    walk = [r * cols + c for r, c in _snake(rows, cols) if r * cols + c not in dead]
    return [walk[i:i + group] for i in range(0, len(walk) - group + 1, group)]


def _rectangles(rows: int, cols: int, group: int, units: int) -> list[list[int]] | None:
    """Disjoint rectangles of ``group`` dies, as square as fits (a x b, a Hamiltonian cycle where a or b
    is even), laid in bands of a rows walked as a boustrophedon; rows left below the last full band hold
    flatter rectangles. None when fewer than ``units`` fit."""
    shapes = sorted(((a, group // a) for a in range(1, group + 1) if group % a == 0),
                    key=lambda s: (abs(s[0] - s[1]), s[0] % 2 and s[1] % 2, -s[1]))
    for a, b in shapes:
        if a > rows or b > cols:
            continue
        bands = [(top, a, b) for top in range(0, rows - rows % a, a)]
        left = rows % a
        flat = next(((h, group // h) for h in range(left, 0, -1) if group % h == 0 and group // h <= cols), None)
        if flat:
            bands.append((rows - left, *flat))
        slots = []
        for index, (top, height, width) in enumerate(bands):
            starts = list(range(0, cols - cols % width, width))
            for left_col in (starts if index % 2 == 0 else starts[::-1]):
                slots.append([(top + i) * cols + left_col + j for i in range(height) for j in range(width)])
        if len(slots) >= units:
            return slots
    return None


def _optimise(order: list[int], slots: list[list[int]], cols: int, group: int, dp: int, pp: int,
              pipeline_bytes: float, pairs, seed: int, swaps: int) -> list[int]:
    """Seeded local search over unit → slot assignments (including free slots): keep a swap when
    it lowers :func:`objective`."""
    rng = random.Random(seed)
    free = [s for s in range(len(slots)) if s not in set(order)]

    def dies_of(assign: list[int]) -> list[int]:
        dies = [0] * (dp * pp * group)
        for d in range(dp):
            for p in range(pp):
                for t, die in enumerate(slots[assign[d * pp + p]]):
                    dies[t + group * (d + dp * p)] = die
        return dies

    best = objective(dies_of(order), cols, group, dp, pp, pipeline_bytes, pairs)
    for _ in range(swaps):
        trial = list(order)
        i = rng.randrange(len(trial))
        if free and rng.random() < len(free) / (len(free) + len(trial)):
            k = rng.randrange(len(free))
            trial[i], free_slot = free[k], trial[i]
        else:
            j = rng.randrange(len(trial))
            trial[i], trial[j] = trial[j], trial[i]
            k = free_slot = None
        score = objective(dies_of(trial), cols, group, dp, pp, pipeline_bytes, pairs)
        if score < best:
            best, order = score, trial
            if k is not None:
                free[k] = free_slot
    return order

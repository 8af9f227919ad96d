"""The built-in pixel grid world (GLAMOR's 7x7 empty grid, plus custom layouts).

The agent occupies one free cell and has 4 actions::

    0 = up (row - 1), 1 = down (row + 1), 2 = left (col - 1), 3 = right (col + 1)

A move into a wall or out of the grid leaves the agent where it is.  Every
free cell is a goal; success means reaching exactly that cell.

Observation: a grayscale uint8 image of shape ``((rows + 2) * cell_px,
(cols + 2) * cell_px)``: the grid with a 1-cell wall border, each cell drawn
as a ``cell_px x cell_px`` block with intensity ``FLOOR`` (0), ``WALL`` (128)
or ``AGENT`` (255).  The default 7x7 grid with ``cell_px=3`` gives 27x27
frames.

Features: ``(row, col)`` of the agent (float64, layout coordinates without
the border), ranges ``0..rows-1`` and ``0..cols-1``, tolerance 0.5 so that
only the exact cell counts as success.

Layouts are ASCII: ``#`` wall, ``.`` floor, optionally one ``S`` (a floor cell
used as the start).  Blank leading/trailing lines and common indentation are
ignored; all rows must have the same length; all free cells must be connected.
"""
from __future__ import annotations

import os
import textwrap
from collections import deque
from typing import Any, Sequence

import gymnasium as gym
import numpy as np

from .core import Goal, GoalEnv, GoalSpec, as_rng

__all__ = ["GridWorld", "parse_layout", "BUILTIN_LAYOUTS", "FLOOR", "WALL", "AGENT", "ACTIONS"]

FLOOR = 0
WALL = 128
AGENT = 255

#: action index -> (d_row, d_col), and the names in order
ACTIONS = ("up", "down", "left", "right")
_MOVES = ((-1, 0), (1, 0), (0, -1), (0, 1))

#: Sutton, Precup & Singh's four rooms (11x11 interior; the border is added when rendering).
FOURROOMS = """
.....#.....
.....#.....
...........
.....#.....
.....#.....
#.####.....
.....###.##
.....#.....
.....#.....
...........
.....#.....
"""

#: A 9x9 maze with corridors and dead ends (pixelplan's own, for checking that the grid
#: preset carries over to layouts it was not tuned on): 50 free cells, shortest paths from
#: the start S of up to 16 steps (T = 32), three dead ends.
MAZE9 = """
.....#...
.###.#.#.
.#...#.#.
.#.###.#.
.#..S..#.
.#####.##
...#...#.
.#.#.###.
.#.......
"""

BUILTIN_LAYOUTS: dict[str, str] = {"fourrooms": FOURROOMS, "maze9": MAZE9}

_LAYOUT_CHARS = set("#.S")


def parse_layout(text: str) -> tuple[np.ndarray, tuple[int, int] | None]:
    """Parse an ASCII layout into ``(walls: bool array (rows, cols), start cell or None)``."""
    lines = textwrap.dedent(text.expandtabs()).splitlines()
    lines = [ln.rstrip() for ln in lines]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise ValueError("layout is empty: use '#' for walls and '.' for floor, one line per row")
    widths = {len(ln) for ln in lines}
    if len(widths) != 1:
        raise ValueError(f"layout rows have different lengths {sorted(widths)}: every row must have the same width")
    bad = {ch for ln in lines for ch in ln} - _LAYOUT_CHARS
    if bad:
        raise ValueError(
            f"layout has unknown character(s) {sorted(bad)}: use '#' (wall), '.' (floor) and at most one 'S' (start)"
        )
    grid = np.array([list(ln) for ln in lines])
    starts = np.argwhere(grid == "S")
    if len(starts) > 1:
        raise ValueError(f"layout has {len(starts)} 'S' cells; at most one start is allowed")
    walls = grid == "#"
    if walls.all():
        raise ValueError("layout has no free cell ('.' or 'S')")
    start = (int(starts[0][0]), int(starts[0][1])) if len(starts) else None
    return walls, start


def _resolve_layout(layout: str | os.PathLike) -> str:
    if isinstance(layout, os.PathLike):
        with open(layout) as fh:
            return fh.read()
    if not isinstance(layout, str):
        raise TypeError(f"layout must be a string (layout text, file path or builtin name), got {type(layout).__name__}")
    if layout in BUILTIN_LAYOUTS:
        return BUILTIN_LAYOUTS[layout]
    stripped = set(layout) - set(" \t\r\n")
    if "\n" in layout or stripped <= _LAYOUT_CHARS:
        return layout
    if os.path.isfile(layout):
        with open(layout) as fh:
            return fh.read()
    raise ValueError(
        f"layout {layout!r} is not a builtin layout ({', '.join(sorted(BUILTIN_LAYOUTS))}), "
        "an existing file, or an ASCII layout string"
    )


class GridWorld(GoalEnv):
    """Pixel grid world implementing the :class:`~pixelplan.envs.core.GoalEnv` contract.

    Args:
        size: side of an open square grid (ignored when ``layout`` is given), >= 2.
        layout: ASCII layout text, a path to a file holding one, or a builtin
            name (``"fourrooms"``). Overrides ``size``.
        start: ``"centre"`` (the layout's ``S`` if any, else the centre cell or
            the free cell closest to it, ties broken in row-major order),
            ``"random"`` (uniform over free cells at each reset, drawn from
            ``self.np_random``), or a ``(row, col)`` free cell.
        max_episode_steps: horizon T. Default: twice the largest shortest-path
            distance from the possible start cell(s) to any free cell (12 for
            the 7x7 grid with the centre start).
        cell_px: pixels per cell side.
        render_mode: ``None`` (``render()`` returns the grayscale frame) or
            ``"rgb_array"`` (``render()`` returns an ``(H, W, 3)`` copy).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        size: int = 7,
        layout: str | os.PathLike | None = None,
        start: str | Sequence[int] = "centre",
        max_episode_steps: int | None = None,
        cell_px: int = 3,
        render_mode: str | None = None,
    ) -> None:
        if layout is not None:
            walls, s_cell = parse_layout(_resolve_layout(layout))
        else:
            if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 2:
                raise ValueError(f"size must be an integer >= 2, got {size!r}")
            walls, s_cell = np.zeros((int(size), int(size)), dtype=bool), None
        if isinstance(cell_px, bool) or not isinstance(cell_px, (int, np.integer)) or cell_px < 1:
            raise ValueError(f"cell_px must be an integer >= 1, got {cell_px!r}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.render_mode = render_mode
        self.walls = walls
        self.rows, self.cols = walls.shape
        self.cell_px = int(cell_px)

        # Free cells in row-major order, index maps and the transition table.
        free = np.argwhere(~walls)
        self.free_cells: list[tuple[int, int]] = [(int(r), int(c)) for r, c in free]
        self._index = {cell: i for i, cell in enumerate(self.free_cells)}
        self._next = np.empty((len(self.free_cells), 4), dtype=np.int64)
        for i, (r, c) in enumerate(self.free_cells):
            for a, (dr, dc) in enumerate(_MOVES):
                self._next[i, a] = self._index.get((r + dr, c + dc), i)
        self._next_list = self._next.tolist()
        self._dist_cache: dict[int, np.ndarray] = {}
        reach = self._distances_from(0)
        if np.any(reach < 0):
            cut = self.free_cells[int(np.argmax(reach < 0))]
            raise ValueError(
                f"layout has free cells that cannot reach each other (e.g. {self.free_cells[0]} and {cut}); "
                "every free cell must be reachable"
            )

        # Start cell(s).
        if isinstance(start, str):
            if start in ("centre", "center"):
                self.random_start = False
                self.start_cell = s_cell if s_cell is not None else self._closest_to_centre()
            elif start == "random":
                self.random_start = True
                self.start_cell = None
            else:
                raise ValueError(f"start must be 'centre', 'random' or a (row, col) free cell, got {start!r}")
        else:
            self.random_start = False
            self.start_cell = self._check_cell(start, "start")
        start_ids = range(len(self.free_cells)) if self.random_start else [self._index[self.start_cell]]
        self.max_start_distance = int(max(self._distances_from(i).max() for i in start_ids))

        if max_episode_steps is None:
            max_episode_steps = max(1, 2 * self.max_start_distance)
        if isinstance(max_episode_steps, bool) or not isinstance(max_episode_steps, (int, np.integer)) or max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be an integer >= 1 or None, got {max_episode_steps!r}")
        self.max_episode_steps = int(max_episode_steps)

        # Rendering: background (border + walls) precomputed once.
        p = self.cell_px
        cells = np.ones((self.rows + 2, self.cols + 2), dtype=bool)
        cells[1:-1, 1:-1] = walls
        self._background = np.where(np.kron(cells, np.ones((p, p), dtype=bool)), WALL, FLOOR).astype(np.uint8)
        self._background.setflags(write=False)

        self.observation_space = gym.spaces.Box(0, 255, self._background.shape, np.uint8)
        self.action_space = gym.spaces.Discrete(4)
        self.goal_spec = GoalSpec(
            names=("row", "col"),
            low=np.zeros(2),
            high=np.array([self.rows - 1, self.cols - 1], dtype=np.float64),
            tolerance=np.array([0.5, 0.5]),
        )
        self._cell_id = -1
        self._t = 0
        self._frame: np.ndarray | None = None

    # ------------------------------------------------------------------ helpers
    def _closest_to_centre(self) -> tuple[int, int]:
        cr, cc = (self.rows - 1) / 2, (self.cols - 1) / 2
        return min(self.free_cells, key=lambda rc: ((rc[0] - cr) ** 2 + (rc[1] - cc) ** 2, rc))

    def _check_cell(self, cell: Any, what: str = "cell") -> tuple[int, int]:
        try:
            r, c = (int(v) for v in cell)
        except (TypeError, ValueError):
            raise ValueError(f"{what} must be a (row, col) pair, got {cell!r}") from None
        if (r, c) not in self._index:
            where = "outside the grid" if not (0 <= r < self.rows and 0 <= c < self.cols) else "a wall"
            raise ValueError(f"{what} {(r, c)} is {where}, not a free cell of this {self.rows}x{self.cols} layout")
        return (r, c)

    def _cell_of_features(self, features: Any, what: str) -> tuple[int, int]:
        f = np.asarray(features, dtype=np.float64).reshape(-1)
        if f.shape != (2,):
            raise ValueError(f"{what} must be (row, col), got shape {np.shape(features)}")
        return self._check_cell(np.rint(f).astype(int), what)

    def _distances_from(self, i: int) -> np.ndarray:
        d = self._dist_cache.get(i)
        if d is None:
            d = np.full(len(self.free_cells), -1, dtype=np.int64)
            d[i] = 0
            queue = deque([i])
            nxt = self._next_list
            while queue:
                u = queue.popleft()
                du = d[u] + 1
                for v in nxt[u]:
                    if d[v] < 0:
                        d[v] = du
                        queue.append(v)
            d.setflags(write=False)
            self._dist_cache[i] = d
        return d

    def _render_cell(self, i: int) -> np.ndarray:
        r, c = self.free_cells[i]
        p = self.cell_px
        frame = self._background.copy()
        frame[(r + 1) * p:(r + 2) * p, (c + 1) * p:(c + 2) * p] = AGENT
        return frame

    def _features(self) -> np.ndarray:
        r, c = self.free_cells[self._cell_id]
        return np.array([r, c], dtype=np.float64)

    # ------------------------------------------------------------------ gym API
    @property
    def agent_cell(self) -> tuple[int, int]:
        """The agent's current ``(row, col)``."""
        if self._cell_id < 0:
            raise RuntimeError("call reset() first")
        return self.free_cells[self._cell_id]

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if self.random_start:
            self._cell_id = int(self.np_random.integers(len(self.free_cells)))
        else:
            self._cell_id = self._index[self.start_cell]
        self._t = 0
        self._frame = self._render_cell(self._cell_id)
        return self._frame, {"features": self._features()}

    def step(self, action):
        if self._cell_id < 0:
            raise RuntimeError("call reset() before step()")
        row = self._next_list[self._cell_id]
        try:
            if action < 0:
                raise IndexError
            self._cell_id = row[action]
        except (IndexError, TypeError):
            raise ValueError(f"action must be an integer in 0..3 (up, down, left, right), got {action!r}") from None
        self._t += 1
        self._frame = self._render_cell(self._cell_id)
        return self._frame, 0.0, False, self._t >= self.max_episode_steps, {"features": self._features()}

    def render(self):
        if self._frame is None:
            raise RuntimeError("call reset() before render()")
        if self.render_mode == "rgb_array":
            return np.repeat(self._frame[:, :, None], 3, axis=2)
        return self._frame.copy()

    # ------------------------------------------------------------------ goals
    def goal_at(self, cell: Sequence[int]) -> Goal:
        """The goal of standing on ``cell`` (frame rendered with the agent there)."""
        r, c = self._check_cell(cell)
        i = self._index[(r, c)]
        return Goal(self._render_cell(i), np.array([r, c], dtype=np.float64))

    def current_goal(self) -> Goal:
        return self.goal_at(self.agent_cell)

    def evaluation_goals(self) -> list[Goal]:
        """One goal per free cell, in row-major order."""
        return [self.goal_at(cell) for cell in self.free_cells]

    def training_goals(self, n: int, rng: np.random.Generator | int | None = None) -> list[Goal]:
        """``n`` goals drawn uniformly (with replacement) over the free cells.

        Every free cell is a goal (as in the GLAMOR paper), so training and
        evaluation goals cover the same set of cells. Does not touch the env state.
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        ids = as_rng(rng).integers(len(self.free_cells), size=n)
        return [self.goal_at(self.free_cells[int(i)]) for i in ids]

    # ------------------------------------------------------------------ distances
    def shortest_path_length(self, cell_a: Sequence[int], cell_b: Sequence[int]) -> int:
        """Fewest moves from ``cell_a`` to ``cell_b`` (BFS over free cells, cached per source)."""
        a = self._index[self._check_cell(cell_a, "cell_a")]
        b = self._index[self._check_cell(cell_b, "cell_b")]
        return int(self._distances_from(a)[b])

    def distance_matrix(self) -> np.ndarray:
        """All-pairs shortest-path lengths between free cells (row-major order), int64."""
        return np.stack([self._distances_from(i) for i in range(len(self.free_cells))])

    def optimal_steps(self, start_features: Any, goal_features: Any) -> int:
        a = self._cell_of_features(start_features, "start_features")
        b = self._cell_of_features(goal_features, "goal_features")
        return self.shortest_path_length(a, b)

    def __repr__(self) -> str:
        start = "random" if self.random_start else self.start_cell
        return (
            f"GridWorld({self.rows}x{self.cols}, free={len(self.free_cells)}, start={start}, "
            f"T={self.max_episode_steps}, frame={self.observation_space.shape})"
        )

    __str__ = __repr__

"""EnvPool: worker processes give exactly what in-process envs give; errors surface clearly."""

import numpy as np
import pytest

from pixelplan.envs.vector import EnvFactory, EnvPool, default_workers

FACTORY = EnvFactory("gridworld", {"start": "random"}, frame_stack=2)


def _trajectory(pool: EnvPool, seed: int):
    rng = np.random.default_rng(seed)
    out = []
    obs, infos = pool.reset(range(len(pool)), [seed + i for i in range(len(pool))])
    out.append((obs, [i["features"] for i in infos]))
    for _ in range(6):
        rows = np.flatnonzero(rng.random(len(pool)) < 0.7)  # a subset of rows, as when episodes end
        if len(rows) == 0:
            continue
        step = pool.step(rows, rng.integers(0, 4, len(rows)))
        out.append((rows, step[0], step[1], step[2], step[3], [i["features"] for i in step[4]]))
    return out


def _same(a, b):
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return np.array_equal(a, b)


def test_workers_match_in_process():
    with EnvPool(FACTORY, 5, workers=0) as local, EnvPool(FACTORY, 5, workers=2) as remote:
        assert _same(_trajectory(local, 3), _trajectory(remote, 3))
        assert local.get("goal_spec") == remote.get("goal_spec")
        calls = [(np.array([3.0, 3.0]), np.array([0.0, 1.0])), (np.array([1.0, 1.0]), np.array([1.0, 1.0]))]
        assert local.call("optimal_steps", calls) == remote.call("optimal_steps", calls) == [5, 0]


def test_rows_are_split_over_workers_and_results_keep_row_order():
    with EnvPool(FACTORY, 5, workers=2) as pool:
        assert pool.workers == 2
        obs, _ = pool.reset([4, 0, 2], [1, 2, 3])
        ref = [FACTORY().reset(seed=s)[0] for s in (1, 2, 3)]
        assert all(np.array_equal(o, r) for o, r in zip(obs, ref))


def test_worker_errors_surface_with_the_workers_traceback():
    with EnvPool(FACTORY, 2, workers=2) as pool:
        pool.reset([0, 1], [0, 0])
        with pytest.raises(RuntimeError, match="env worker process failed"):
            pool.step([0, 1], [0, 99])
        # the pool stays usable: both workers' answers were drained
        obs, *_ = pool.step([0, 1], [0, 1])
        assert obs.shape[0] == 2
    with pytest.raises(RuntimeError, match="unknown env"):
        EnvPool(EnvFactory("no-such-env"), 2, workers=1)


def test_bad_arguments():
    with pytest.raises(ValueError, match="n >= 1"):
        EnvPool(FACTORY, 0)
    with pytest.raises(ValueError, match="workers must be >= 0"):
        EnvPool(FACTORY, 2, workers=-1)
    with EnvPool(FACTORY, 2) as pool, pytest.raises(IndexError, match="rows must be in 0..1"):
        pool.reset([2], [0])
    assert 1 <= default_workers(64) and default_workers(1) == 1

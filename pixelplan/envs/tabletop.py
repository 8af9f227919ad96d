"""MBOLD's tabletop scenes (Tian et al. 2021, section 5 and appendix A.3) on the pinned MuJoCo.

``make("tabletop:<scene>")`` builds a :class:`TabletopEnv`; the scenes are

* ``reach``: the arm alone; the hand resets at a fixed point; success: the end effector within
  0.05 m of its goal position;
* ``push1``: one block; success: the moved block within 0.05 m of its goal position (in xy);
* ``push3``: three differently coloured and textured blocks, two of them distractors; the hand
  resets uniformly over U(-0.2, 0.2)^2 around the table centre;
* ``door``: a door sliding on a rail, moved by pushing its handle or its edge with the gripper;
  success: the slide within 0.075 m of its goal position.

The scenes are our own MJCF, written below (the official Sawyer and Franka scenes are not
ours to copy, and they need mujoco-py). What an agent sees and does, per the paper and the
facts gathered in the issue:

* Actions: ``Box(-1, 1, (4,))``: the end effector's x, y, z displacement at 0.1 m per unit per
  step (the target is clipped to the scene's hand box), and the gripper (-1 closed, +1 open;
  an absolute opening command). Physics dt 0.0025 s with 5 physics steps per action (frame
  skip 5); the hand moves a fifth of its displacement in each physics step.
* Frames: 64 x 64 RGB from one fixed camera, ``cam0``, at (0, 1.2, 0.8) looking at the table
  from the front, pitched down 45 degrees (MBOLD's cam0), field of view 30 degrees. One light,
  no cast shadows and no multisampling: a shadow map costs 7 ms a frame under llvmpipe against
  0.6-0.7 ms without; a flat disc under the gripper stands in for its shadow (a depth cue).
* Episodes: T = 30 actions (31 frames); reward 0 (a goal task).
* ``info["features"]``: the end effector's x, y, z, the gripper opening, the arm's three joint
  angles (shoulder yaw, shoulder pitch, elbow), then each block's x, y, or the door's slide.
  They are stored beside the frames by ``pixelplan collect``; agents never see them.

**The arm.** A floating gripper alone would make pixel distances look better than they are:
MBOLD's central finding is that the visually dominant arm swamps small objects and occludes
them. So an arm is drawn: a pedestal at the back of the table, an upper arm and a forearm of
0.5 m each (capsules of radius 3 cm) from a fixed shoulder to a wrist above the gripper, with
the elbow solved in closed form (two-link inverse kinematics in the vertical plane through the
shoulder and the wrist, elbow up). The links follow the hand kinematically (mocap bodies) and
do not collide: only the gripper (palm and two fingers) touches objects. The camera sees the
arm from the front, so it hides whatever lies behind and under it, as the Sawyer does.

**The hand.** Its three slide joints are velocity-controlled: each physics step they get the
velocity that takes them to the next fifth of the commanded move (gravity compensated), so the
hand goes where it is commanded and MuJoCo's contacts see its real velocity. A kinematic mocap
hand has no velocity and, at 0.1 m per step, passed through blocks (measured: a 25 cm push moved
a block 1 mm). Blocks slide in x and y on joints (no rotation), heavily damped, so they stop
within a step or two when the gripper leaves them; the door slides on a joint of 0.4 m range.

**Test tasks** (:meth:`TabletopEnv.evaluation_goals`; ``tasks="regular"`` or ``"hard"``): 100
per scene, each a :class:`~pixelplan.envs.core.GoalTask` (start state, start frame, goal frame,
which features decide success and the threshold), rejection-sampled from random trajectories of
the dataset's correlated-noise policy (see :func:`build_tasks`), deterministic in ``task_seed``
and cached on disk like the other suites' goal sets.

Rendering needs an OpenGL backend: ``MUJOCO_GL=egl`` (the default set here) or ``osmesa``.
"""

from __future__ import annotations

import atexit
import math
import os
import sys
import threading
import weakref
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from pixelplan.suites import TABLETOP_NOISE_BETA, TABLETOP_NOISE_STD

from .core import Goal, GoalEnv, GoalSpec, GoalTask
from .noise import correlated_sequence

__all__ = ["TabletopEnv", "SCENES", "make_tabletop", "build_tasks", "scripted_oracle", "SceneSpec"]

#: physics
DT, FRAME_SKIP, EPISODE_STEPS = 0.0025, 5, 30
#: metres the end effector moves per unit of action per step
MOVE = 0.1
#: the table centre (x, y); the table top is z = 0
CENTRE = np.array([0.0, 0.45])
#: the arm: the shoulder, the two link lengths, the wrist's height above the end effector
SHOULDER = np.array([0.0, -0.1, 0.42])
UPPER, FORE, WRIST_UP = 0.5, 0.5, 0.12
#: finger gap (m) at gripper -1 and +1
GRIP_CLOSED, GRIP_OPEN = 0.01, 0.08
BLOCK_HALF = 0.025
#: half the thickness of a finger (x): a 2 cm finger is thicker than the hand's largest move in
#: one physics step (0.1 m / 5), so a push cannot jump past a block's face
FINGER_HALF = 0.01
#: the correlated-noise std of the dataset policy (MBOLD table 4) and its beta (pixelplan/suites.py)
REACH_PUSH_STD, DOOR_STD, NOISE_BETA = TABLETOP_NOISE_STD["push1"], TABLETOP_NOISE_STD["door"], TABLETOP_NOISE_BETA
#: contacts of the gripper with objects: a time constant of 2 physics steps (MuJoCo's smallest
#: stable one) instead of the default 0.02 s, against which the damped blocks simply let the
#: kinematic gripper pass through them (measured: a 0.25 m push moved a block 1 mm)
SOLREF = "0.005 1"
#: the door's slide range (m) either side of its centre
DOOR_RANGE = 0.2


@dataclass(frozen=True)
class SceneSpec:
    """One scene's numbers."""

    name: str
    n_blocks: int
    door: bool
    hand_low: tuple            # the hand box (x, y, z), metres
    hand_high: tuple
    hand_reset: tuple          # a fixed reset point, or None: uniform in hand_reset_range
    hand_reset_range: float    # half-width around the table centre (xy) when hand_reset is None
    hand_reset_z: float
    relevant: str              # what decides success: "hand", "block" or "door"
    threshold: float           # success distance, metres (table 4)
    noise_std: tuple           # the dataset's correlated-noise std
    task_sets: tuple           # the test-task sets the paper has


#: the hand box; its far, high corner is kept inside cam0's view (at z = 0.3 only y >= 0.33 is)
_HAND_LOW, _HAND_HIGH = (-0.25, 0.22, 0.02), (0.25, 0.70, 0.22)
SCENES = {
    "reach": SceneSpec("reach", 0, False, _HAND_LOW, _HAND_HIGH, (0.0, 0.45, 0.15), 0.0, 0.15, "hand", 0.05,
                       REACH_PUSH_STD, ("regular",)),
    "push1": SceneSpec("push1", 1, False, _HAND_LOW, _HAND_HIGH, (0.0, 0.45, 0.06), 0.0, 0.06, "block", 0.05,
                       REACH_PUSH_STD, ("regular", "hard")),
    "push3": SceneSpec("push3", 3, False, _HAND_LOW, _HAND_HIGH, None, 0.2, 0.06, "block", 0.05,
                       REACH_PUSH_STD, ("regular", "hard")),
    "door": SceneSpec("door", 0, True, (-0.25, 0.345, 0.02), (0.25, 0.70, 0.22), (0.0, 0.47, 0.09), 0.0, 0.09,
                      "door", 0.075, DOOR_STD, ("regular",)),
}
#: the door's rail: y of the panel's centre plane, and the height of its centre
DOOR_Y, DOOR_Z = 0.30, 0.11
#: the handle's centre relative to the panel's centre (on the camera's side)
HANDLE = (0.0, 0.035, -0.02)
BLOCK_RGB = ((0.15, 0.35, 0.85), (0.15, 0.7, 0.25), (0.9, 0.75, 0.1))


def _scene_xml(scene: SceneSpec, height: int, width: int) -> str:
    """The MJCF of one scene. Collision bits: the table (2) touches nothing; blocks and the door
    (1, affinity 5) touch each other and the gripper (4, affinity 0); arm links touch nothing."""
    cx, cy = CENTRE
    blocks, textures = [], []
    for i in range(scene.n_blocks):
        r, g, b = BLOCK_RGB[i]
        textures.append(
            f'<texture name="tex{i}" type="2d" builtin="checker" width="32" height="32" rgb1="{r} {g} {b}" '
            f'rgb2="{r * 0.55:.3f} {g * 0.55:.3f} {b * 0.55:.3f}" mark="edge" markrgb="1 1 1"/>'
            f'<material name="mat{i}" texture="tex{i}" texrepeat="{2 + i} {2 + i}"/>')
        blocks.append(
            f'<body name="block{i}" pos="{cx} {cy} {BLOCK_HALF}">'
            f'<joint name="block{i}_x" type="slide" axis="1 0 0" range="-0.3 0.3" limited="true" damping="20" '
            f'frictionloss="0.5"/>'
            f'<joint name="block{i}_y" type="slide" axis="0 1 0" range="-0.3 0.3" limited="true" damping="20" '
            f'frictionloss="0.5"/>'
            f'<inertial pos="0 0 0" mass="0.2" diaginertia="1e-4 1e-4 1e-4"/>'
            f'<geom name="block{i}" type="box" size="{BLOCK_HALF} {BLOCK_HALF} {BLOCK_HALF}" material="mat{i}" '
            f'contype="1" conaffinity="5" friction="0.6 0.005 0.0001" solref="{SOLREF}"/></body>')
    door = ""
    if scene.door:
        hx, hy, hz = HANDLE
        door = (
            f'<body name="door" pos="{cx} {DOOR_Y} {DOOR_Z}">'
            f'<joint name="door" type="slide" axis="1 0 0" range="{-DOOR_RANGE} {DOOR_RANGE}" limited="true" '
            f'damping="8" frictionloss="0.3"/>'
            f'<inertial pos="0 0 0" mass="0.5" diaginertia="1e-3 1e-3 1e-3"/>'
            f'<geom name="door" type="box" size="0.12 0.015 0.1" rgba="0.62 0.42 0.22 1" contype="1" conaffinity="5" '
            f'solref="{SOLREF}"/>'
            f'<geom name="handle" type="box" pos="{hx} {hy} {hz}" size="0.015 0.02 0.045" rgba="0.2 0.2 0.22 1" '
            f'contype="1" conaffinity="5" solref="{SOLREF}"/></body>'
            f'<geom name="rail" type="box" pos="{cx} {DOOR_Y} {DOOR_Z + 0.115}" size="0.36 0.025 0.012" '
            f'rgba="0.35 0.35 0.38 1" contype="0" conaffinity="0"/>'
            f'<geom name="rail_low" type="box" pos="{cx} {DOOR_Y} 0.004" size="0.36 0.025 0.004" '
            f'rgba="0.35 0.35 0.38 1" contype="0" conaffinity="0"/>')
    arm = 'rgba="0.72 0.12 0.12 1" contype="0" conaffinity="0"'
    return f"""<mujoco model="pixelplan-tabletop-{scene.name}">
  <option timestep="{DT}" gravity="0 0 -9.81"/>
  <visual>
    <global offwidth="{max(width, 64)}" offheight="{max(height, 64)}"/>
    <quality shadowsize="0" offsamples="0"/>
    <headlight active="0"/>
  </visual>
  <asset>
    <texture name="wood" type="2d" builtin="flat" width="8" height="8" rgb1="0.78 0.72 0.62"/>
    <material name="table" texture="wood"/>
    {''.join(textures)}
  </asset>
  <worldbody>
    <light name="sun" directional="true" pos="0.2 0.9 1.5" dir="-0.15 -0.3 -1" diffuse="0.6 0.6 0.6"
           ambient="0.45 0.45 0.45" specular="0.1 0.1 0.1" castshadow="false"/>
    <camera name="cam0" pos="0 1.2 0.8" xyaxes="-1 0 0 0 -0.7071068 0.7071068" fovy="30"/>
    <geom name="table" type="box" pos="{cx} {cy - 0.2} -0.02" size="0.8 0.9 0.02" material="table" contype="2"
          conaffinity="2"/>
    <geom name="pedestal" type="cylinder" fromto="{SHOULDER[0]} {SHOULDER[1]} -0.5 {SHOULDER[0]} {SHOULDER[1]}
          {SHOULDER[2] - 0.05}" size="0.06" {arm}/>
    <geom name="shoulder" type="sphere" pos="{SHOULDER[0]} {SHOULDER[1]} {SHOULDER[2]}" size="0.055" {arm}/>
    {''.join(blocks)}
    {door}
    <body name="upper_arm" mocap="true" pos="0 0.3 0.5">
      <geom name="upper_arm" type="capsule" size="0.04 {UPPER / 2}" {arm}/>
    </body>
    <body name="forearm" mocap="true" pos="0 0.5 0.4">
      <geom name="forearm" type="capsule" size="0.035 {FORE / 2}" {arm}/>
      <geom name="elbow" type="sphere" pos="0 0 {-FORE / 2}" size="0.045" {arm}/>
    </body>
    <body name="hand_shadow" mocap="true" pos="0 0.6 0.001">
      <geom name="hand_shadow" type="cylinder" size="0.035 0.0005" rgba="0.3 0.28 0.25 1" contype="0"
            conaffinity="0"/>
    </body>
    <body name="hand" pos="0 0 0" gravcomp="1">
      <joint name="hand_x" type="slide" axis="1 0 0"/>
      <joint name="hand_y" type="slide" axis="0 1 0"/>
      <joint name="hand_z" type="slide" axis="0 0 1"/>
      <inertial pos="0 0 0.06" mass="5" diaginertia="0.01 0.01 0.01"/>
      <geom name="palm" type="box" pos="0 0 0.065" size="0.05 0.02 0.015" rgba="0.25 0.25 0.28 1" contype="4"
            conaffinity="0" solref="{SOLREF}"/>
      <geom name="wrist" type="cylinder" fromto="0 0 0.08 0 0 {WRIST_UP}" size="0.022" rgba="0.3 0.3 0.32 1"
            contype="0" conaffinity="0"/>
      <body name="finger_left" pos="{-(GRIP_CLOSED / 2 + FINGER_HALF)} 0 0" gravcomp="1">
        <joint name="finger_left" type="slide" axis="1 0 0"/>
        <inertial pos="0 0 0.02" mass="0.5" diaginertia="1e-3 1e-3 1e-3"/>
        <geom name="finger_left" type="box" pos="0 0 0.02" size="{FINGER_HALF} 0.02 0.03" rgba="0.85 0.85 0.85 1"
              contype="4" conaffinity="0" solref="{SOLREF}"/>
      </body>
      <body name="finger_right" pos="{GRIP_CLOSED / 2 + FINGER_HALF} 0 0" gravcomp="1">
        <joint name="finger_right" type="slide" axis="1 0 0"/>
        <inertial pos="0 0 0.02" mass="0.5" diaginertia="1e-3 1e-3 1e-3"/>
        <geom name="finger_right" type="box" pos="0 0 0.02" size="{FINGER_HALF} 0.02 0.03" rgba="0.85 0.85 0.85 1"
              contype="4" conaffinity="0" solref="{SOLREF}"/>
      </body>
    </body>
  </worldbody>
</mujoco>
"""


def arm_pose(hand: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Elbow position, wrist position and joint angles (shoulder yaw, shoulder pitch, elbow) of
    the drawn arm for the end effector at ``hand``: two-link IK in the vertical plane through
    the shoulder and the wrist, elbow up (law of cosines; a wrist out of reach is clamped)."""
    wrist = np.asarray(hand, np.float64) + np.array([0.0, 0.0, WRIST_UP])
    delta = wrist - SHOULDER
    d = float(np.linalg.norm(delta))
    d = min(max(d, abs(UPPER - FORE) + 1e-6), UPPER + FORE - 1e-6)
    u = delta / max(np.linalg.norm(delta), 1e-9)
    up = np.array([0.0, 0.0, 1.0]) - u[2] * u
    up /= max(np.linalg.norm(up), 1e-9)
    a = math.acos((UPPER ** 2 + d ** 2 - FORE ** 2) / (2 * UPPER * d))       # angle at the shoulder
    elbow = SHOULDER + UPPER * (math.cos(a) * u + math.sin(a) * up)
    yaw = math.atan2(delta[0], delta[1])
    link = elbow - SHOULDER
    pitch = math.atan2(link[2], math.hypot(link[0], link[1]))
    bend = math.pi - math.acos((UPPER ** 2 + FORE ** 2 - d ** 2) / (2 * UPPER * FORE))
    return elbow, wrist, np.array([yaw, pitch, bend])


def _link_pose(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre and quaternion (w, x, y, z) of a capsule whose z axis runs from ``a`` to ``b``."""
    v = b - a
    v = v / max(np.linalg.norm(v), 1e-9)
    z = np.array([0.0, 0.0, 1.0])
    axis = np.cross(z, v)
    s, c = np.linalg.norm(axis), float(np.dot(z, v))
    if s < 1e-9:
        quat = np.array([1.0, 0.0, 0.0, 0.0]) if c > 0 else np.array([0.0, 1.0, 0.0, 0.0])
    else:
        angle = math.atan2(s, c)
        quat = np.concatenate([[math.cos(angle / 2)], math.sin(angle / 2) * axis / s])
    return (a + b) / 2, quat


def _setup_rendering() -> None:
    # Before mujoco is first imported: it picks its GL backend then. Called at import of this
    # module too, so that a program that imports pixelplan.envs before mujoco renders headless.
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("LP_NUM_THREADS", "0")   # llvmpipe threads fight the agent for 2 cores


_setup_rendering()


class TabletopEnv(GoalEnv):
    """One of MBOLD's tabletop scenes as a goal env (see the module docstring).

    Options:

    * ``scene``: ``reach``, ``push1``, ``push3`` or ``door``;
    * ``tasks``: the test-task set that :meth:`evaluation_goals` serves, ``regular`` (default)
      or ``hard`` (pushing only: the arm also ends at least 12.5 cm from the moved block);
    * ``object_range``: objects reset uniformly over U(-r, r)^2 around the table centre (default
      0.2; MBOLD's table 5 uses the restricted 0.05);
    * ``n_tasks`` (100) and ``task_seed`` (0): the size and seed of the test-task set;
    * ``height``, ``width`` (64), ``max_episode_steps`` (30), ``cache_dir``, ``render_mode``.

    ``reset(seed=..., options={"state": s})`` restores a state saved by :meth:`get_state`
    (a test task's start); otherwise the scene resets at random from the seed.
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, scene: str = "push1", tasks: str = "regular", object_range: float = 0.2, n_tasks: int = 100,
                 task_seed: int = 0, height: int = 64, width: int = 64, max_episode_steps: int = EPISODE_STEPS,
                 cache_dir: str | None = None, render_mode: str | None = None):
        if scene not in SCENES:
            raise ValueError(f"unknown tabletop scene {scene!r}; scenes: "
                             f"{', '.join('tabletop:' + s for s in SCENES)}")
        self.scene = SCENES[scene]
        if tasks not in self.scene.task_sets:
            raise ValueError(f"tabletop:{scene} has the test-task set(s) {', '.join(self.scene.task_sets)}, not "
                             f"{tasks!r} (MBOLD's 'hard' sets exist for pushing only)")
        if isinstance(object_range, bool) or not isinstance(object_range, (int, float, np.number)):
            raise ValueError(f"object_range must be a number of metres in [0, 0.25], got {object_range!r}")
        object_range = float(object_range)
        if not 0 <= object_range <= 0.25:
            raise ValueError(f"object_range must be in [0, 0.25] m (the table's reach), got {object_range}")
        for name, value, low in (("n_tasks", n_tasks, 1), ("task_seed", task_seed, 0), ("height", height, 8),
                                 ("width", width, 8), ("max_episode_steps", max_episode_steps, 1)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value}")
        _setup_rendering()
        import mujoco

        self._mj = mujoco
        self.name = f"tabletop:{scene}"
        self.task_set, self.object_range = tasks, object_range
        self.n_tasks, self.task_seed = int(n_tasks), int(task_seed)
        self.height, self.width = int(height), int(width)
        self.max_episode_steps = int(max_episode_steps)
        self.goal_cache_dir = None if cache_dir is None else os.fspath(cache_dir)
        self.render_mode = render_mode
        self.model = mujoco.MjModel.from_xml_string(_scene_xml(self.scene, self.height, self.width))
        self.data = mujoco.MjData(self.model)
        self._renderer = None
        self._mocap = {n: int(self.model.body(n).mocapid[0]) for n in ("upper_arm", "forearm", "hand_shadow")}
        joint = self.model.joint
        self._hand_q = slice(int(joint("hand_x").qposadr[0]), int(joint("hand_x").qposadr[0]) + 3)
        self._hand_v = slice(int(joint("hand_x").dofadr[0]), int(joint("hand_x").dofadr[0]) + 3)
        self._finger_q = [int(joint(n).qposadr[0]) for n in ("finger_left", "finger_right")]
        self._finger_v = [int(joint(n).dofadr[0]) for n in ("finger_left", "finger_right")]
        self._block_qpos = [int(self.model.joint(f"block{i}_x").qposadr[0]) for i in range(self.scene.n_blocks)]
        self._door_qpos = int(self.model.joint("door").qposadr[0]) if self.scene.door else None

        self.action_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
        self.observation_space = gym.spaces.Box(0, 255, (self.height, self.width, 3), np.uint8)
        self.hand_low, self.hand_high = np.array(self.scene.hand_low), np.array(self.scene.hand_high)
        names = ["hand_x", "hand_y", "hand_z", "gripper", "shoulder_yaw", "shoulder_pitch", "elbow"]
        low = [*self.hand_low, GRIP_CLOSED, -math.pi, -math.pi / 2, 0.0]
        high = [*self.hand_high, GRIP_OPEN, math.pi, math.pi / 2, math.pi]
        tol = [self.scene.threshold] * 3 + [GRIP_OPEN, 2 * math.pi, math.pi, math.pi]
        for i in range(self.scene.n_blocks):
            names += [f"block{i}_x", f"block{i}_y"]
            low += [CENTRE[0] - 0.3, CENTRE[1] - 0.3]
            high += [CENTRE[0] + 0.3, CENTRE[1] + 0.3]
            tol += [self.scene.threshold] * 2
        if self.scene.door:
            names.append("door")
            low.append(-DOOR_RANGE)
            high.append(DOOR_RANGE)
            tol.append(self.scene.threshold)
        # Success on a test task is its own rule (GoalTask); this spec's per-feature tolerance
        # (the scene's threshold on positions, everything else ignored) only judges plain goals.
        self.goal_spec = GoalSpec(tuple(names), np.array(low), np.array(high), np.array(tol))
        # the arm's three joint angles: what MBOLD's negative mining compares (its "arm joint l2")
        self.actuated_features = tuple(names.index(n) for n in ("shoulder_yaw", "shoulder_pitch", "elbow"))
        self.collection_noise = {"std": list(self.scene.noise_std), "beta": NOISE_BETA}
        self._hand = np.array(self.scene.hand_reset or (CENTRE[0], CENTRE[1], self.scene.hand_reset_z), np.float64)
        self._grip = 0.5 * (GRIP_CLOSED + GRIP_OPEN)
        self._frame: np.ndarray | None = None
        self._t = 0
        self._tasks: list | None = None
        self.goal_cache_path = None

    # ------------------------------------------------------------------ state
    @property
    def state_size(self) -> int:
        return 4 + self.model.nq + self.model.nv

    def get_state(self) -> np.ndarray:
        """Everything that determines the future: hand target, gripper opening, qpos, qvel."""
        return np.concatenate([self._hand, [self._grip], self.data.qpos, self.data.qvel]).astype(np.float64)

    def set_state(self, state: Any) -> None:
        state = np.asarray(state, dtype=np.float64).reshape(-1)
        if state.shape != (self.state_size,) or not np.all(np.isfinite(state)):
            raise ValueError(f"{self.name}: a state is {self.state_size} finite numbers (env.get_state()), got "
                             f"shape {state.shape}")
        nq = self.model.nq
        self._hand, self._grip = state[:3].copy(), float(state[3])
        self.data.qpos[:] = state[4:4 + nq]
        self.data.qvel[:] = state[4 + nq:]
        self.data.qacc_warmstart[:] = 0
        self._place_hand()
        self._mj.mj_forward(self.model, self.data)

    def frames_with_block_at(self, state: Any, block: int, xy: np.ndarray) -> np.ndarray:
        """Frames of ``state`` with block ``block`` moved to each of the table positions ``xy``
        (N, 2) in metres, everything else as in ``state``: the images of MBOLD's figure 6. The
        env is left in ``state``."""
        if not 0 <= block < self.scene.n_blocks:
            raise ValueError(f"{self.name} has {self.scene.n_blocks} block(s), no block {block}")
        frames = []
        for x, y in np.asarray(xy, dtype=np.float64).reshape(-1, 2):
            self.set_state(state)
            adr = self._block_qpos[block]
            self.data.qpos[adr], self.data.qpos[adr + 1] = x - CENTRE[0], y - CENTRE[1]
            frames.append(self._render())
        self.set_state(state)
        self._frame = self._render()
        return np.stack(frames)

    def _place_hand(self) -> None:
        """Move the drawn arm and the hand's shadow (mocap bodies that touch nothing) to where
        the end effector is."""
        hand = self.data.qpos[self._hand_q]
        mp, mq = self.data.mocap_pos, self.data.mocap_quat
        mp[self._mocap["hand_shadow"]] = (hand[0], hand[1], 0.0006)
        elbow, wrist, _ = arm_pose(hand)
        for name, a, b in (("upper_arm", SHOULDER, elbow), ("forearm", elbow, wrist)):
            # the forearm's elbow sphere sits at its -z end: the link runs elbow -> wrist
            centre, quat = _link_pose(a, b)
            mp[self._mocap[name]], mq[self._mocap[name]] = centre, quat

    @staticmethod
    def _finger_offsets(grip: float) -> tuple[float, float]:
        """The fingers' joint positions (left moves -x, right +x) for a gap of ``grip``."""
        half = (grip - GRIP_CLOSED) / 2
        return -half, half

    def _put_hand(self, hand: np.ndarray, grip: float) -> None:
        self.data.qpos[self._hand_q] = hand
        self.data.qvel[self._hand_v] = 0.0
        for adr, dof, q in zip(self._finger_q, self._finger_v, self._finger_offsets(grip)):
            self.data.qpos[adr], self.data.qvel[dof] = q, 0.0

    def features(self) -> np.ndarray:
        hand = self.data.qpos[self._hand_q]
        _, _, joints = arm_pose(hand)
        grip = GRIP_CLOSED + self.data.qpos[self._finger_q[1]] - self.data.qpos[self._finger_q[0]]
        out = [*hand, grip, *joints]
        for i, adr in enumerate(self._block_qpos):
            out += [CENTRE[0] + self.data.qpos[adr], CENTRE[1] + self.data.qpos[adr + 1]]
        if self.scene.door:
            out.append(self.data.qpos[self._door_qpos])
        return np.array(out, dtype=np.float64)

    # ------------------------------------------------------------------ dynamics
    def _random_reset(self, rng: np.random.Generator, door: float | None = None) -> None:
        """A random start: hand at its reset point (or uniform), objects uniform over their range
        (blocks of push3 at least 8 cm apart), the door uniform over its range (or at ``door``),
        the gripper half open."""
        self._mj.mj_resetData(self.model, self.data)
        scene = self.scene
        if scene.hand_reset is not None:
            hand = np.array(scene.hand_reset, np.float64)
        else:
            xy = CENTRE + rng.uniform(-scene.hand_reset_range, scene.hand_reset_range, 2)
            hand = np.array([xy[0], xy[1], scene.hand_reset_z])
        placed: list[np.ndarray] = []
        for adr in self._block_qpos:
            for _ in range(1000):
                p = rng.uniform(-self.object_range, self.object_range, 2)
                if all(np.max(np.abs(p - q)) >= 0.08 for q in placed):
                    break
            placed.append(p)
            self.data.qpos[adr:adr + 2] = p
        if scene.door:
            self.data.qpos[self._door_qpos] = rng.uniform(-DOOR_RANGE, DOOR_RANGE) if door is None else door
        self._hand, self._grip = np.clip(hand, self.hand_low, self.hand_high), 0.5 * (GRIP_CLOSED + GRIP_OPEN)
        self._put_hand(self._hand, self._grip)
        self._place_hand()
        self._mj.mj_forward(self.model, self.data)
        # (MBOLD settles its free blocks for 100 steps after a reset; ours slide on x/y joints
        # and start at rest, where settling changes nothing, so it is skipped)

    def _advance(self, action: Any) -> None:
        """One agent step of physics (no render)."""
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (4,) or not np.all(np.isfinite(a)):
            raise ValueError(f"{self.name} takes a finite action of shape (4,) (dx, dy, dz, gripper), got "
                             f"{np.asarray(action).shape} {np.asarray(action).tolist()}")
        a = np.clip(a, -1.0, 1.0)
        start, target = self._hand, np.clip(self._hand + MOVE * a[:3], self.hand_low, self.hand_high)
        grip0, grip1 = self._grip, GRIP_CLOSED + (a[3] + 1) / 2 * (GRIP_OPEN - GRIP_CLOSED)
        qpos, qvel = self.data.qpos, self.data.qvel
        for k in range(1, FRAME_SKIP + 1):
            # Velocity control: each physics step the hand's joints get the velocity that takes
            # them to the next fifth of the move, so MuJoCo's contacts see the hand's real
            # velocity (a kinematic mocap hand has none, and pushes blocks only by penetration).
            f = k / FRAME_SKIP
            qvel[self._hand_v] = (start + f * (target - start) - qpos[self._hand_q]) / DT
            for adr, dof, q in zip(self._finger_q, self._finger_v, self._finger_offsets(grip0 + f * (grip1 - grip0))):
                qvel[dof] = (q - qpos[adr]) / DT
            self._mj.mj_step(self.model, self.data)
        self._hand, self._grip = target, float(grip1)
        self._place_hand()      # the drawn arm follows, once per step
        self._t += 1

    def _render(self) -> np.ndarray:
        if self._renderer is None:
            self._renderer = _new_renderer(self.model, self.height, self.width)
        self._mj.mj_forward(self.model, self.data)   # mocap moves reach the rendered geoms
        self._renderer.update_scene(self.data, camera="cam0")
        frame = self._renderer.render().copy()
        _forget_dm_control_context()
        return frame

    # ------------------------------------------------------------------ the contract
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = dict(options or {})
        state = options.pop("state", None)
        if options:
            raise ValueError(f"{self.name}.reset: unknown option(s) {sorted(options)}; the one option is 'state'")
        if state is None:
            self._random_reset(self.np_random)
        else:
            self.set_state(state)
        self._t = 0
        self._frame = self._render()
        return self._frame, {"features": self.features()}

    def step(self, action):
        if self._frame is None:
            raise RuntimeError("call reset() before step()")
        self._advance(action)
        self._frame = self._render()
        return self._frame, 0.0, False, self._t >= self.max_episode_steps, {"features": self.features()}

    def current_goal(self) -> Goal:
        if self._frame is None:
            raise RuntimeError("call reset() before current_goal()")
        return Goal(self._frame, self.features())

    def random_rollout(self, rng: np.random.Generator, capture_frame: bool = True) -> Goal:
        """The final state of one episode of the dataset's correlated-noise policy, of random
        length ``L ~ Uniform{1..T}``, rendering only the final frame."""
        self._random_reset(np.random.default_rng(int(rng.integers(2**31 - 1))))
        steps = int(rng.integers(1, self.max_episode_steps + 1))
        for a in correlated_sequence(rng, steps, self.scene.noise_std, -1, 1, NOISE_BETA):
            self._advance(a)
        self._frame = self._render() if capture_frame else np.zeros(self.observation_space.shape, np.uint8)
        return Goal(self._frame, self.features())

    def evaluation_goals(self) -> list[GoalTask]:
        """The scene's test tasks (``tasks`` set, ``n_tasks`` of them, ``task_seed``): built by
        :func:`build_tasks` on first use and cached on disk (``$PIXELPLAN_CACHE``)."""
        if self._tasks is None:
            from .goals import cached_tasks

            key = {"env": self.name, "tasks": self.task_set, "object_range": self.object_range,
                   "n": self.n_tasks, "seed": self.task_seed, "frame": [self.height, self.width],
                   "T": self.max_episode_steps, "versions": _versions(), "fingerprint": _fingerprint(self)}
            self._tasks, self.goal_cache_path = cached_tasks(
                key, lambda: build_tasks(self, self.task_set, self.n_tasks, self.task_seed), self.goal_cache_dir)
        return list(self._tasks)

    def render(self):
        return self._frame if self._frame is not None else self._render()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


_RENDERERS: "weakref.WeakSet" = None


def _new_renderer(model, height: int, width: int):
    """A ``mujoco.Renderer``, closed at interpreter exit before the GL display goes (else each
    one left open prints an EGL error as the interpreter shuts down)."""
    global _RENDERERS
    import mujoco

    try:
        renderer = mujoco.Renderer(model, height, width)
    except Exception as exc:  # noqa: BLE001 - one line that says what to do
        raise RuntimeError(f"tabletop: MuJoCo cannot render headless ({type(exc).__name__}: {exc}); set "
                           f"MUJOCO_GL=egl (or osmesa) before mujoco is first imported (now "
                           f"MUJOCO_GL={os.environ.get('MUJOCO_GL')!r})") from None
    if _RENDERERS is None:
        # registered after the first renderer exists, so after mujoco's GL module registered its
        # own exit handler: ours runs first (atexit is last in, first out)
        _RENDERERS = weakref.WeakSet()

        def close_all() -> None:
            for each in list(_RENDERERS):
                try:
                    each.close()
                except Exception:  # noqa: BLE001 - the display may already be gone
                    pass
        atexit.register(close_all)
    _RENDERERS.add(renderer)
    return renderer


def _forget_dm_control_context() -> None:
    """Tell dm_control that its GL context is no longer current on this thread.

    dm_control remembers which of its contexts it made current per thread and skips
    ``eglMakeCurrent`` when it thinks its own still is; our ``mujoco.Renderer`` makes its own
    context current, so without this a DM Control env in the same process would render into
    ours (measured: the same reset gave another frame). mujoco's Renderer makes its context
    current on every render, so only dm_control's side needs telling. dm_control's record is
    private; if its layout changes this does nothing, and ``tests/test_tabletop.py`` fails.
    """
    base = sys.modules.get("dm_control._render.base")
    if base is None:
        return
    try:
        thread = threading.current_thread()
        current = base._CURRENT_CONTEXT_FOR_THREAD.pop(thread, None)
        if current is not None:
            base._CURRENT_THREAD_FOR_CONTEXT.pop(current, None)
    except AttributeError:
        pass


def _versions() -> dict:
    import mujoco

    from pixelplan import __version__
    return {"mujoco": mujoco.__version__, "pixelplan": __version__}


def _fingerprint(env: TabletopEnv) -> str:
    """A hash of one fixed random episode's frames and features: the scene's code changing
    rebuilds its cached tasks."""
    from .goals import env_fingerprint
    return env_fingerprint(env)


# ---------------------------------------------------------------------- test tasks
#: rejection sampling gives up after this many trajectories per accepted task
MAX_TRIES_PER_TASK = 2000


def build_tasks(env: TabletopEnv, task_set: str, n: int, seed: int) -> list[GoalTask]:
    """``n`` test tasks of ``env``'s scene, rejection-sampled from trajectories of the dataset's
    correlated-noise policy (MBOLD A.3), deterministic in ``seed``.

    Each candidate is a random reset (seeded from the stream ``[seed, set]``) followed by T
    actions of the policy; its first state is the task's start, its last the goal.

    * reach: accepted when the end effector moved at least 15 cm in xy;
    * push (``regular``): exactly one block moved more than 1 cm, and the largest move exceeds
      7.5 cm; ``hard``: in addition the end effector ends at least 12.5 cm from the moved block;
    * door: the start and goal slides are 0.30 apart around a centre drawn in U(-0.05, 0.05):
      the start state is a reset at one end, the goal the end of a random trajectory from a reset
      at the other (the goal's slide is where that trajectory left the door).
    """
    scene = env.scene
    rng = np.random.default_rng([seed, {"regular": 0, "hard": 1}[task_set]])
    names = env.goal_spec.names
    tasks: list[GoalTask] = []
    tries = 0
    while len(tasks) < n:
        tries += 1
        if tries > MAX_TRIES_PER_TASK * n:
            raise RuntimeError(f"{env.name}: found only {len(tasks)} of {n} {task_set} tasks in {tries - 1} "
                               "random trajectories")
        reset_rng = np.random.default_rng(int(rng.integers(2**31 - 1)))
        actions = correlated_sequence(rng, env.max_episode_steps, scene.noise_std, -1, 1, NOISE_BETA)
        if scene.door:
            centre, sign = rng.uniform(-0.05, 0.05), rng.choice([-1.0, 1.0])
            env._random_reset(reset_rng, door=centre - sign * 0.15)
            start_state, start_features = env.get_state(), env.features()
            start_frame = env._render()
            env._random_reset(reset_rng, door=centre + sign * 0.15)
        else:
            env._random_reset(reset_rng)
            start_state, start_features = env.get_state(), env.features()
            start_frame = None
        for a in actions:
            env._advance(a)
        goal_features = env.features()
        relevant = np.zeros(len(names), bool)
        if scene.relevant == "hand":
            if np.linalg.norm(goal_features[:2] - start_features[:2]) < 0.15:
                continue
            relevant[:3] = True
        elif scene.relevant == "block":
            moves = np.array([np.linalg.norm(goal_features[7 + 2 * i:9 + 2 * i] - start_features[7 + 2 * i:9 + 2 * i])
                              for i in range(scene.n_blocks)])
            if (moves > 0.01).sum() != 1 or moves.max() <= 0.075:
                continue
            moved = int(np.argmax(moves))
            block = np.array([*goal_features[7 + 2 * moved:9 + 2 * moved], BLOCK_HALF])
            if task_set == "hard" and np.linalg.norm(goal_features[:3] - block) < 0.125:
                continue
            relevant[7 + 2 * moved:9 + 2 * moved] = True
        else:
            relevant[names.index("door")] = True
        goal_frame = env._render()
        if start_frame is None:
            env.set_state(start_state)
            start_frame = env._render()
        tasks.append(GoalTask(goal_frame, goal_features, start_state=start_state, start_frame=start_frame,
                              start_features=start_features, relevant=relevant, threshold=scene.threshold))
    return tasks


# ---------------------------------------------------------------------- the scripted oracle
def scripted_oracle(features: np.ndarray, task: GoalTask, scene: str) -> np.ndarray:
    """A privileged policy for a test task: it reads the true state (``features``) and the goal's,
    which no agent sees, and drives the relevant object to its goal. It shows the tasks are
    solvable within T and gives the ceiling of the success rate (benchmarks/tabletop_speed.py).

    reach: straight to the goal. push: lift, go behind the block on the line through the goal,
    lower the closed gripper, push along the line. door: go beside the handle, push it along the
    rail.
    """
    f, g = np.asarray(features, np.float64), task.features
    hand = f[:3]
    out = np.zeros(4)
    out[3] = -1.0                                            # gripper closed: a narrow pusher

    def toward(target):
        return np.clip((np.asarray(target) - hand) / MOVE, -1, 1)

    if scene == "reach":
        out[:3] = toward(g[:3])
        return out.astype(np.float32)
    if scene == "door":
        door, goal = f[-1], g[-1]
        if abs(goal - door) < 0.01:
            out[:3] = 0
            return out.astype(np.float32)
        s = 1.0 if goal > door else -1.0
        hx = CENTRE[0] + door + HANDLE[0]
        side = np.array([hx - s * 0.075, SCENES["door"].hand_low[1], DOOR_Z + HANDLE[2] - 0.03])
        if abs(hand[0] - side[0]) > 0.02 or abs(hand[1] - side[1]) > 0.02 or abs(hand[2] - side[2]) > 0.03:
            # not beside the handle yet: keep in front of the door (y) until level with the side
            if abs(hand[0] - side[0]) > 0.02:
                out[:3] = toward([side[0], max(hand[1], side[1] + 0.08), side[2]])
            else:
                out[:3] = toward(side)
            return out.astype(np.float32)
        out[:3] = toward([CENTRE[0] + goal + HANDLE[0] - s * 0.075, side[1], side[2]])
        return out.astype(np.float32)
    # push: the relevant block
    idx = np.flatnonzero(task.relevant)
    p, goal = f[idx], g[idx]
    gap = goal - p
    dist = float(np.linalg.norm(gap))
    if dist < 0.01:
        out[:3] = toward([hand[0], hand[1], 0.12])           # done: lift away
        return out.astype(np.float32)
    d = gap / dist
    reach = BLOCK_HALF * math.sqrt(2) + 0.025
    behind = p - d * reach
    along = float(np.dot(hand[:2] - p, d))
    lateral = float(np.linalg.norm(hand[:2] - p - along * d))
    low_z, high_z = 0.03, 0.12
    if along < -reach + 0.025 and lateral < 0.02 and hand[2] < low_z + 0.02:
        # behind the block on the line to the goal, low: push at most 5 cm a step, re-centred
        # on the line through the block's current centre (the block drifts sideways)
        target = behind + d * min(dist + 0.005, 0.05)
        out[:3] = toward([target[0], target[1], low_z])
        return out.astype(np.float32)
    if np.linalg.norm(hand[:2] - behind) < 0.015:
        out[:3] = toward([behind[0], behind[1], low_z])      # above the spot: lower
        return out.astype(np.float32)
    if hand[2] < high_z - 0.02 and np.linalg.norm(hand[:2] - p) < reach + 0.05:
        out[:3] = toward([hand[0], hand[1], high_z])         # near the block and low: lift first
        return out.astype(np.float32)
    out[:3] = toward([behind[0], behind[1], high_z])
    return out.astype(np.float32)


def make_tabletop(scene: str, **options) -> TabletopEnv:
    """``make("tabletop:<scene>", **options)``."""
    return TabletopEnv(scene, **options)

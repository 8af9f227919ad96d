"""Data storage: the frame replay buffer with hindsight relabelling."""

from pixelplan.data.replay import PAD, HindsightBatch, ReplayBuffer

__all__ = ["PAD", "HindsightBatch", "ReplayBuffer"]

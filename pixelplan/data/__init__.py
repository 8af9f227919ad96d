"""Data: the episode store (each frame once) and the samplers that draw batches from it."""

from pixelplan.data.replay import PAD, HindsightBatch, ReplayBuffer
from pixelplan.data.samplers import (GoalPairBatch, GoalPairSampler, HindsightSampler, SequenceBatch,
                                     SequenceSampler)

__all__ = ["PAD", "HindsightBatch", "ReplayBuffer", "HindsightSampler", "SequenceSampler", "SequenceBatch",
           "GoalPairSampler", "GoalPairBatch"]

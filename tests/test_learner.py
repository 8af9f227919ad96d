"""The shared learner step (agents/base.py Learner): clip, norm, counter, checkpoint keys."""

import copy

import torch

from pixelplan.agents.base import Learner


def test_step_clips_to_the_global_norm_and_reports_the_norm_before_clipping():
    w = torch.nn.Parameter(torch.zeros(4))
    learner = Learner([w], lr=0.1, weight_decay=0.0, grad_clip=1.0)
    seen = {}
    w.register_hook(lambda g: seen.setdefault("grad", g.clone()))
    norm = learner.step((w * torch.tensor([3.0, 4.0, 0.0, 0.0])).sum())   # gradient (3, 4, 0, 0)
    assert abs(norm - 5.0) < 1e-6
    assert torch.allclose(w.grad, torch.tensor([0.6, 0.8, 0.0, 0.0]), atol=1e-6)   # clipped to norm 1
    assert learner.updates == 0 and learner.count() == 1 and learner.updates == 1


def test_state_dict_round_trip_continues_identically():
    def make():
        torch.manual_seed(0)
        net = torch.nn.Linear(3, 2)
        return net, Learner(net.parameters(), lr=1e-2, weight_decay=0.01, grad_clip=0.5)
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(1))
    a_net, a = make()
    for _ in range(3):
        a.step(a_net(x).pow(2).sum()); a.count()
    b_net, b = make()
    b_net.load_state_dict(a_net.state_dict())
    # A checkpoint is a copy: torch's optimiser would otherwise share a's moment tensors.
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    assert set(a.state_dict()) == {"optimizer", "updates"} and b.updates == 3
    for learner, net in ((a, a_net), (b, b_net)):
        learner.step(net(x).pow(2).sum())
    for p, q in zip(a_net.parameters(), b_net.parameters()):
        assert torch.equal(p, q)

"""Matcher, losses and learning-rate schedule of opensam3.train against direct computations."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from opensam3.ops.boxes import cxcywh_to_xyxy, generalized_box_iou
from opensam3.train.losses import classification_loss, dice_loss, paired_giou, sigmoid_focal_loss
from opensam3.train.matcher import HungarianMatcher, focal_class_cost
from opensam3.train.optim import warmup_cosine


def random_boxes(n: int, gen: torch.Generator) -> torch.Tensor:
    centre = torch.rand(n, 2, generator=gen) * 0.6 + 0.2
    size = torch.rand(n, 2, generator=gen) * 0.3 + 0.05
    return torch.cat((centre, size), dim=1)


@pytest.mark.parametrize("seed", range(8))
def test_matcher_finds_the_brute_force_minimum(seed):
    gen = torch.Generator().manual_seed(seed)
    num_queries, num_targets = 5, int(torch.randint(1, 4, (1,), generator=gen))
    logits = torch.randn(1, num_queries, generator=gen) * 2
    boxes = random_boxes(num_queries, gen)[None]
    targets = random_boxes(num_targets, gen)
    matcher = HungarianMatcher()
    cost = matcher.cost_matrix(logits[0], boxes[0], targets)
    best = min(sum(cost[q, t] for t, q in enumerate(perm))
               for perm in itertools.permutations(range(num_queries), num_targets))
    (queries, target_idx), = matcher(logits, boxes, [targets])
    assert len(queries) == num_targets and sorted(target_idx.tolist()) == list(range(num_targets))
    assert float(cost[queries, target_idx].sum()) == pytest.approx(float(best), abs=1e-5)


def test_matcher_cost_terms_and_empty_pairs():
    logits = torch.tensor([0.3, -1.2])
    boxes = torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.3, 0.4, 0.1, 0.3]])
    target = torch.tensor([[0.45, 0.5, 0.2, 0.25]])
    cost = HungarianMatcher(cost_class=2, cost_bbox=5, cost_giou=2).cost_matrix(logits, boxes, target)
    for q in range(2):
        p = 1 / (1 + math.exp(-float(logits[q])))
        focal = 0.25 * (1 - p) ** 2 * -math.log(p) - 0.75 * p ** 2 * -math.log(1 - p)
        l1 = float((boxes[q] - target[0]).abs().sum())
        giou = float(generalized_box_iou(cxcywh_to_xyxy(boxes[q:q + 1]), cxcywh_to_xyxy(target))[0, 0])
        assert float(cost[q, 0]) == pytest.approx(2 * focal + 5 * l1 - 2 * giou, rel=1e-5)
    assert float(focal_class_cost(torch.tensor([0.0]), 0.25, 2.0)) == pytest.approx(
        0.25 * 0.25 * math.log(2) - 0.75 * 0.25 * math.log(2))
    (q, t), = HungarianMatcher()(logits[None], boxes[None], [torch.zeros(0, 4)])
    assert q.numel() == 0 and t.numel() == 0


def test_sigmoid_focal_loss_by_hand():
    x, y = torch.tensor([0.7, -0.4]), torch.tensor([1.0, 0.0])
    p = torch.sigmoid(x)
    expected = [0.25 * (1 - p[0]) ** 2 * -torch.log(p[0]), 0.75 * p[1] ** 2 * -torch.log(1 - p[1])]
    torch.testing.assert_close(sigmoid_focal_loss(x, y), torch.stack(expected))
    # gamma 0 and no alpha is plain BCE
    torch.testing.assert_close(sigmoid_focal_loss(x, y, alpha=-1, gamma=0),
                               torch.nn.functional.binary_cross_entropy_with_logits(x, y, reduction="none"))


def test_dice_loss_by_hand():
    logits = torch.tensor([[[0.0, 2.0], [-1.0, 1.0]]])
    target = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])
    p = torch.sigmoid(logits).flatten()
    expected = 1 - (2 * (p[0] + p[1]) + 1) / (p.sum() + 2 + 1)
    torch.testing.assert_close(dice_loss(logits, target), expected[None])


def test_paired_giou_by_hand():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0]])
    iou, giou = paired_giou(a, b)
    assert float(iou) == pytest.approx(1 / 7)
    assert float(giou) == pytest.approx(1 / 7 - (9 - 7) / 9)


def test_classification_loss_by_hand():
    logits = torch.tensor([[1.0, -1.0, 0.5], [0.2, 0.3, -0.1], [0.4, -2.0, 1.5]])
    pair_idx, query_idx = torch.tensor([0, 2]), torch.tensor([0, 2])
    iou = torch.tensor([0.5, 0.9])
    has_instance = torch.tensor([True, False, True])
    exhaustive = torch.tensor([True, True, False])
    loss = classification_loss(logits, iou, pair_idx, query_idx, has_instance, exhaustive,
                               alpha=0.25, gamma=2.0, pos_weight=10.0)

    def bce(x, t):
        p = 1 / (1 + math.exp(-x))
        return -(t * math.log(p) + (1 - t) * math.log(1 - p))

    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    total = 0.0
    # pair 0 (exhaustive): matched query 0, negatives 1 and 2
    t0 = max(sig(1.0) ** 0.25 * 0.5 ** 0.75, 0.01)
    total += 10 * bce(1.0, t0) + sig(-1.0) ** 2 * bce(-1.0, 0) + sig(0.5) ** 2 * bce(0.5, 0)
    # pair 1 has no instance: nothing (presence handles it)
    # pair 2 is not exhaustive: only its matched query 2 counts
    t2 = max(sig(1.5) ** 0.25 * 0.9 ** 0.75, 0.01)
    total += 10 * bce(1.5, t2)
    assert float(loss) == pytest.approx(total / 9, rel=1e-5)


def test_warmup_cosine_schedule():
    values = [warmup_cosine(s, total_steps=110, warmup_steps=10, min_ratio=0.1) for s in range(111)]
    assert values[0] == pytest.approx(0.1) and values[4] == pytest.approx(0.5) and values[9] == pytest.approx(1.0)
    assert values[10] == pytest.approx(1.0)
    assert values[60] == pytest.approx(0.1 + 0.9 * 0.5)  # half way through the cosine
    assert values[110] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(values[10:], values[11:]))
    assert warmup_cosine(500, 110, 10, 0.1) == pytest.approx(0.1)  # clamped after the end


def test_one_to_many_matcher_takes_the_top_quality_queries():
    from opensam3.train.matcher import OneToManyMatcher

    target = torch.tensor([[0.5, 0.5, 0.2, 0.2]])
    # queries 0-4 sit on the instance (IoU 1 down to ~0.5), 5-7 are far away
    boxes = torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.51, 0.5, 0.2, 0.2], [0.5, 0.52, 0.2, 0.2], [0.53, 0.5, 0.2, 0.2],
                          [0.55, 0.55, 0.2, 0.2], [0.1, 0.1, 0.1, 0.1], [0.9, 0.9, 0.1, 0.1], [0.1, 0.9, 0.1, 0.1]])
    logits = torch.zeros(8)
    (q, t), = OneToManyMatcher(topk=4)(logits[None], boxes[None], [target])
    # several queries per instance (what one-to-one matching never gives), the best ones
    assert sorted(q.tolist()) == [0, 1, 2, 3] and t.tolist() == [0] * 4
    (q, t), = OneToManyMatcher(threshold=0.95)(logits[None], boxes[None], [target])
    assert q.numel() == 0  # quality 0.3 * 0.5 + 0.7 * IoU never reaches 0.95
    (q, t), = OneToManyMatcher()(logits[None], boxes[None], [torch.zeros(0, 4)])
    assert q.numel() == 0 and t.numel() == 0


def test_time_budget_follows_the_recent_step_rate():
    from opensam3.train.optim import TimeBudget

    budget = TimeBudget(seconds=100.0, max_steps=1000, window=20, every=20)
    elapsed = 0.0
    for step in range(1, 41):  # a slow start (caching, a busy machine): 2 s per step
        elapsed += 2.0
        total = budget.update(step, elapsed)
    assert total == 40 + int(20 / 2.0)
    for step in range(41, 61):  # then 0.25 s per step: the estimate recovers instead of staying cut
        elapsed += 0.25
        total = budget.update(step, elapsed)
    assert total == 60 + int((100 - elapsed) / 0.25)
    assert TimeBudget(seconds=1e6, max_steps=30, every=20).update(20, 1.0) == 30  # never above max_steps
    late = TimeBudget(seconds=10.0, max_steps=1000, every=20)
    assert late.update(20, 50.0) == 21  # over budget: stop after the next step

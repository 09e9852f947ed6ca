import math

import pytest
import torch

from mnv2core.strategies import kd_loss


def softmax(values, temperature):
    exps = [math.exp(v / temperature) for v in values]
    return [e / sum(exps) for e in exps]


def hand_kd(student, teacher, label, temperature, alpha):
    p_s, p_t = softmax(student, temperature), softmax(teacher, temperature)
    kl = sum(t * math.log(t / s) for t, s in zip(p_t, p_s, strict=True))
    ce = -math.log(softmax(student, 1.0)[label])
    return alpha * kl * temperature ** 2 + (1 - alpha) * ce


STUDENT = [[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]]
TEACHER = [[3.0, 1.0, -2.0], [-1.0, 0.0, 2.5]]
LABELS = [0, 2]


@pytest.mark.parametrize("temperature, alpha", [(4.0, 0.9), (1.0, 0.5), (2.0, 0.0), (3.0, 1.0)])
def test_kd_loss_matches_hand_computation(temperature, alpha):
    expected = sum(hand_kd(s, t, y, temperature, alpha) for s, t, y in zip(STUDENT, TEACHER, LABELS, strict=True)) / 2
    got = kd_loss(torch.tensor(STUDENT), torch.tensor(TEACHER), torch.tensor(LABELS), temperature, alpha)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_soft_term_vanishes_when_student_matches_teacher():
    logits = torch.tensor(TEACHER)
    assert kd_loss(logits, logits, torch.tensor(LABELS), 4.0, 1.0).item() == pytest.approx(0.0, abs=1e-6)


def test_gradient_flows_to_student_only():
    student = torch.tensor(STUDENT, requires_grad=True)
    teacher = torch.tensor(TEACHER, requires_grad=True)
    kd_loss(student, teacher.detach(), torch.tensor(LABELS), 4.0, 0.9).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None

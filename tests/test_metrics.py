"""reslab.metrics against values worked out by hand (no reslab code computes the expectations)."""

import math

import torch

from reslab.metrics import confusion_matrix, per_class_accuracy, topk_correct

# 4 samples, 6 classes. Ranking of the classes per row (best first):
#   row 0: 2, 0, 5, 1, 3, 4        target 2 -> rank 1
#   row 1: 4, 3, 1, 0, 2, 5        target 0 -> rank 4
#   row 2: 0, 1, 2, 3, 4, 5        target 5 -> rank 6
#   row 3: 5, 4, 3, 2, 1, 0        target 3 -> rank 3
LOGITS = torch.tensor([
    [5.0, 3.0, 9.0, 1.0, 0.0, 2.0],
    [3.0, 4.0, 2.0, 5.0, 6.0, 1.0],
    [6.0, 5.0, 4.0, 3.0, 2.0, 1.0],
    [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
])
TARGET = torch.tensor([2, 0, 5, 3])


def test_topk_correct_counts_targets_within_the_top_k():
    got = topk_correct(LOGITS, TARGET, (1, 2, 3, 4, 5, 6))
    # ranks 1, 4, 6, 3: within top-1: 1 sample; top-2: 1; top-3: 2; top-4: 3; top-5: 3; top-6: 4
    assert [int(c) for c in got] == [1, 1, 2, 3, 3, 4]
    assert all(c.dim() == 0 for c in got)


def test_topk_correct_default_ks_are_top1_and_top5():
    top1, top5 = topk_correct(LOGITS, TARGET)
    assert (int(top1), int(top5)) == (1, 3)


def test_topk_correct_with_k_above_the_number_of_classes_counts_every_sample():
    logits, target = LOGITS[:, :3], torch.tensor([0, 1, 2, 2])
    # three classes; rankings: row 0 [5, 3, 9] -> 2, 0, 1 (target 0: rank 2); row 1 [3, 4, 2] -> 1, 0, 2
    # (target 1: rank 1); row 2 [6, 5, 4] -> 0, 1, 2 (target 2: rank 3); row 3 [1, 2, 3] -> 2, 1, 0 (rank 1)
    got = topk_correct(logits, target, (1, 5, 2))
    assert [int(c) for c in got] == [2, 4, 3]  # top-5 of 3 classes: every sample


def test_confusion_matrix_rows_are_true_classes_columns_predictions():
    pred = torch.tensor([0, 1, 1, 2, 0, 0])
    target = torch.tensor([0, 1, 2, 2, 2, 1])
    cm = confusion_matrix(pred, target, 4)  # class 3 never occurs: the matrix is still 4 x 4
    want = torch.tensor([
        [1, 0, 0, 0],
        [1, 1, 0, 0],
        [1, 1, 1, 0],
        [0, 0, 0, 0],
    ])
    assert cm.dtype == torch.int64 and torch.equal(cm, want)


def test_confusion_matrix_of_nothing_is_zeros():
    cm = confusion_matrix(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), 3)
    assert torch.equal(cm, torch.zeros(3, 3, dtype=torch.int64))


def test_per_class_accuracy_is_the_diagonal_over_row_sums_in_percent_and_nan_without_samples():
    cm = torch.tensor([
        [3, 1, 0],
        [0, 0, 0],
        [1, 1, 2],
    ])
    acc = per_class_accuracy(cm)
    assert acc.dtype == torch.float64
    assert acc[0].item() == 75.0 and acc[2].item() == 50.0
    assert math.isnan(acc[1].item())

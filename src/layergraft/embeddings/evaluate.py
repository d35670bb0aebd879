"""How close a student's embeddings stay to the teacher's, and what they are still good for.

- `mean_cosine`: mean cosine between student and teacher embeddings of the same sentences
- `neighbour_agreement`: the overlap of each sentence's k nearest neighbours (cosine,
  itself excluded) in a corpus, student vs teacher, averaged
- `probe_accuracy`: a logistic-regression probe on frozen embeddings of a task's train
  split, scored on its test split (scikit-learn)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from layergraft.errors import LayergraftError


def mean_cosine(student: torch.Tensor, teacher: torch.Tensor) -> float:
    return float(F.cosine_similarity(student.float(), teacher.float(), dim=-1).mean())


def nearest(embeddings: torch.Tensor, k: int, chunk: int = 1024) -> torch.Tensor:
    """Indices [n, k] of each row's k nearest other rows by cosine."""
    unit = F.normalize(embeddings.float(), dim=-1)
    rows = []
    for start in range(0, len(unit), chunk):
        similarity = unit[start:start + chunk] @ unit.T
        own = torch.arange(start, start + len(similarity))
        similarity[torch.arange(len(similarity)), own] = -float("inf")
        rows.append(similarity.topk(k, dim=1).indices)
    return torch.cat(rows)


def neighbour_agreement(student: torch.Tensor, teacher: torch.Tensor, k: int = 10) -> float:
    """Mean fraction of each sentence's k nearest neighbours that student and teacher share."""
    if len(teacher) < 2:
        raise LayergraftError("neighbour agreement needs a corpus of at least 2 sentences")
    k = min(k, len(teacher) - 1)
    ours, theirs = nearest(student, k), nearest(teacher, k)
    shared = (ours[:, :, None] == theirs[:, None, :]).any(-1).float().sum(1)
    return float((shared / k).mean())


def probe_accuracy(train: torch.Tensor, train_labels, test: torch.Tensor, test_labels,
                   seed: int = 0) -> float:
    """Test accuracy of a logistic-regression probe fitted on frozen train embeddings."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    probe = LogisticRegression(max_iter=2000, random_state=seed)
    probe.fit(train.float().numpy(), np.asarray(train_labels))
    return float(probe.score(test.float().numpy(), np.asarray(test_labels)))

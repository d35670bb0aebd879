"""How close a student's embeddings stay to the teacher's, and what they are still good for.

- `mean_cosine`: mean cosine between student and teacher embeddings of the same sentences
- `neighbour_agreement`: the overlap of each sentence's k nearest neighbours (cosine,
  itself excluded) in a corpus, student vs teacher, averaged
- `probe_accuracy`: a logistic-regression probe on frozen embeddings of a task's train
  split, scored on its test split (scikit-learn)
- `knn_accuracy`: a cosine k-nearest-neighbour vote among the train embeddings, on test
- `ridge_spearman`: ridge regression on frozen embeddings (train -> test), Spearman on test
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


def knn_accuracy(train: torch.Tensor, train_labels, test: torch.Tensor, test_labels,
                 k: int = 10) -> float:
    """Test accuracy of a k-nearest-neighbour vote (cosine) among frozen train embeddings:
    what a retrieval use of the embedding sees, with nothing fitted."""
    import numpy as np
    from sklearn.neighbors import KNeighborsClassifier

    k = min(k, len(train))
    vote = KNeighborsClassifier(n_neighbors=k, metric="cosine")
    vote.fit(train.float().numpy(), np.asarray(train_labels))
    return float(vote.score(test.float().numpy(), np.asarray(test_labels)))


RIDGE_ALPHAS = tuple(10.0 ** e for e in range(-3, 4))


def ridge_spearman(train: torch.Tensor, train_targets, test: torch.Tensor, test_targets,
                   alphas: tuple[float, ...] = RIDGE_ALPHAS) -> float:
    """Spearman correlation with the test targets of a ridge regression fitted on frozen train
    embeddings (the penalty chosen among `alphas` by leave-one-out on train: RidgeCV)."""
    import numpy as np
    from scipy.stats import spearmanr
    from sklearn.linear_model import RidgeCV

    ridge = RidgeCV(alphas=list(alphas)).fit(train.float().numpy(), np.asarray(train_targets))
    predicted = ridge.predict(test.float().numpy())
    return float(spearmanr(predicted, np.asarray(test_targets)).statistic)

"""Retrieval evaluation: exact, streamed ranking metrics and clustering NMI.

Entry point: :func:`retrieval_metrics`. The package, each module on the ones above it only:

- :mod:`~dml.evaluate.metrics`: the metrics as pure functions of relevant items' ranks;
- :mod:`~dml.evaluate.catalog`: each reported figure's declaration (title, order, needs) and key;
- :mod:`~dml.evaluate.geometry`: each geometry's declaration, how vectors are prepared and scored;
- :mod:`~dml.evaluate.kernels`: rank counting, block sizes, the one thread pool;
- :mod:`~dml.evaluate.relevance`: which items are relevant (labels, a matrix, a callback, grades);
- :mod:`~dml.evaluate.full_ranking`: every relevant item's position (for the whole-ranking mAP);
- :mod:`~dml.evaluate.top_ranking`: exact ranks within each query's top ``max(R, K)`` only;
- :mod:`~dml.evaluate.candidates`: optional, approximate: each query's candidates from a faiss
  index, re-ranked exactly, and their measured recall;
- :mod:`~dml.evaluate.inputs`: the checked inputs (options, embeddings, labels, exclusions);
- :mod:`~dml.evaluate.engine`: :func:`retrieval_metrics` and :func:`per_query_metrics`;
- :mod:`~dml.evaluate.protocols`: who queries whom (query/gallery roles, domains, scales, labels);
- :mod:`~dml.evaluate.experiment`: a pipeline run's evaluation (its rows, splits and indexes).
"""

from dml.evaluate.engine import per_query_metrics, retrieval_metrics
from dml.evaluate.relevance import Grades, Relevance, label_relevance

__all__ = ["Grades", "Relevance", "label_relevance", "per_query_metrics", "retrieval_metrics"]

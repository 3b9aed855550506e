"""Every relevant item's position: each query ranked against the whole gallery, in blocks.

No top-k cap: a query's R relevant items may be thousands (coarse DyML scales), and the
average precision over the whole ranking needs the position of every one of them. Memory stays
flat as the gallery grows: one block's ``B x N`` scores and relevance flags are alive at a time,
never the ``Q x N`` matrix. A block is scored once (one GEMM) and its ranks counted once for
every relevance (:func:`dml.evaluate.kernels.ranks_in_block`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from dml.evaluate.geometry import block_scores
from dml.evaluate.kernels import ranks_in_block, relevant_scores, rows_per_block
from dml.evaluate.metrics import ndcg_at_k
from dml.evaluate.relevance import Grades, LabelRelevance, Relevance, exclude_in_block, relevance_matrix

__all__ = ["full_ranked_blocks", "rank_in_full"]

def full_ranked_blocks(
    query: torch.Tensor,
    gallery: torch.Tensor,
    relevances: Sequence[Relevance],
    *,
    exclude: torch.Tensor | None,
    block_bytes: int,
    metric: str,
    sq_norms: torch.Tensor | None,
    grades: Grades | None = None,
    ndcg_ks: Sequence[int] = (),
    ndcg_gain: str = "linear",
) -> Iterator[tuple[torch.Tensor, list, list, list]]:
    """Blocks ``(rows, (ranks, ties), n_relevant, ndcg)`` of :func:`dml.evaluate.engine.ranked_blocks`
    in full, one list entry per relevance, :func:`rows_per_block` queries at a time."""
    n_query = query.shape[0]
    step = rows_per_block(gallery.shape[0], block_bytes)
    for start in range(0, n_query, step):
        rows = torch.arange(start, min(start + step, n_query), device=query.device)
        own = exclude[rows] if exclude is not None else None
        yield (rows, *rank_in_full(query[rows], rows, gallery, relevances, own=own, metric=metric, sq_norms=sq_norms,
                                   grades=grades, ndcg_ks=ndcg_ks, ndcg_gain=ndcg_gain))


def rank_in_full(
    query_rows: torch.Tensor,
    rows: torch.Tensor,
    gallery: torch.Tensor,
    relevances: Sequence[Relevance],
    *,
    own: torch.Tensor | None,
    metric: str,
    sq_norms: torch.Tensor | None,
    grades: Grades | None = None,
    ndcg_ks: Sequence[int] = (),
    ndcg_gain: str = "linear",
) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], list[torch.Tensor], list[dict[int, torch.Tensor]]]:
    """Every relevant item's position for one block of queries (rows ``rows``, vectors
    ``query_rows``), one entry per relevance: ``((ranks, ties), n_relevant, ndcg)`` lists.

    The block is scored and sorted once; ``own`` are the excluded gallery positions (-1: none)."""
    n_gallery = gallery.shape[0]
    scores = block_scores(query_rows, gallery, metric, sq_norms)
    excluded = exclude_in_block(own)
    if excluded is not None:
        scores[excluded] = -torch.inf
    found, ndcgs = [], []
    for rel in relevances:
        if isinstance(rel, LabelRelevance) and not ndcg_ks:  # the class's items: no B x N relevance matrix
            found.append(_class_scores(scores, rel.members(rows)))
            ndcgs.append({})
            continue
        relevant = relevance_matrix(rel, rows, n_gallery)
        if excluded is not None:
            relevant[excluded] = False
        ndcg: dict[int, torch.Tensor] = {}
        if ndcg_ks:
            graded = grades(rows).to(torch.float64)
            if graded.shape != scores.shape:
                raise ValueError(f"grades must return [{len(rows)}, {n_gallery}], got {list(graded.shape)}")
            graded = torch.where(relevant, graded, torch.zeros_like(graded))
            ndcg = {k: ndcg_at_k(scores, graded, k, ndcg_gain) for k in ndcg_ks}
        found.append(relevant_scores(scores, relevant))
        ndcgs.append(ndcg)
        del relevant  # one B x N relevance matrix alive at a time
    return ranks_in_block(scores, found), [n_rel for _, n_rel in found], ndcgs


def _class_scores(scores: torch.Tensor, members: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`~dml.evaluate.kernels.relevant_scores` from each row's relevant positions
    (``members``, -1 padded): their scores in decreasing order, padded with ``-inf``, and their
    count. An excluded item scores ``-inf`` already: it is dropped, as it is not relevant."""
    picked = scores.gather(1, members.clamp(min=0))
    picked = torch.where(members >= 0, picked, -torch.inf)
    n_relevant = torch.isfinite(picked).sum(1)
    width = int(n_relevant.max()) if len(n_relevant) else 0  # as wide as the relevant_scores of a matrix
    return torch.sort(picked, dim=1, descending=True).values[:, :width].contiguous(), n_relevant

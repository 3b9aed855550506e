"""A differentiable soft product-quantization head (METHODS.md §2), exported as plain faiss.

The L2-normalized embedding is cut into ``M`` sub-vectors; each has its own codebook of
``K = 2**codeword_bits`` code words. In training a sub-vector is replaced by the softmax-weighted
mean of the code words, weights ``softmax(−‖x_m − c_mk‖² / temperature)`` (Product
Quantization Networks, Yu et al. 2018), so the metric loss trains the code words and the
trunk towards codes that keep the similarity. In evaluation the assignment is hard (the
nearest code word), which is exactly what faiss's ``IndexPQ`` encodes; :meth:`faiss_indexes`
exports each codebook set as such an index, searchable by plain faiss.

One codebook set per code length in ``bits`` (``M = bits / codeword_bits``), all trained
together on the same embedding: ``[B, len(bits), D]`` reconstructions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import faiss
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dml.errors import ConfigError
from dml.index import pq_from_codebooks
from dml.models.heads import HEADS

__all__ = ["SoftProductQuantizer"]


class SoftProductQuantizer(nn.Module):
    """Soft PQ of the normalized embedding at each code length; see the module docstring."""

    def __init__(self, embed_dim: int, bits: Sequence[int] = (64,), codeword_bits: int = 8,
                 temperature: float = 0.05) -> None:
        super().__init__()
        where = "model.heads.soft_pq"
        bits = [int(b) for b in ([bits] if isinstance(bits, int) else bits)]
        if not bits or len(set(bits)) != len(bits):
            raise ConfigError(f"{where}.bits: give distinct code lengths, got {bits}")
        if not 1 <= int(codeword_bits) <= 16:
            raise ConfigError(f"{where}.codeword_bits: {codeword_bits} is not in 1..16")
        if not temperature > 0:
            raise ConfigError(f"{where}.temperature: {temperature} must be > 0")
        self.embed_dim, self.bits = int(embed_dim), bits
        self.codeword_bits, self.temperature = int(codeword_bits), float(temperature)
        books = []
        for b in bits:
            m = b // self.codeword_bits
            if b % self.codeword_bits or m < 1 or self.embed_dim % m:
                raise ConfigError(f"{where}.bits: {b} bits are M = {b} / {codeword_bits} sub-"
                                  f"quantizers, which must be a whole number dividing the "
                                  f"embedding size {self.embed_dim}")
            # Code words about as long as the sub-vectors of a unit vector (each ~ sqrt(1/M)).
            books.append(nn.Parameter(torch.randn(m, 1 << self.codeword_bits, self.embed_dim // m)
                                      / math.sqrt(self.embed_dim)))
        self.codebooks = nn.ParameterList(books)

    def forward(self, features: Tensor, embeddings: Tensor) -> Tensor:
        """``[B, len(bits), D]``: soft (training) or hard (evaluation) reconstructions."""
        x = F.normalize(embeddings.float(), dim=1)
        return torch.stack([self._quantize(x, book) for book in self.codebooks], dim=1)

    def _quantize(self, x: Tensor, book: Tensor) -> Tensor:
        m, k, sub = book.shape
        parts = x.view(x.shape[0], m, sub)  # [B, M, d]
        # ‖x − c‖² = ‖x‖² − 2 x·c + ‖c‖², [B, M, K]
        squared = ((parts * parts).sum(-1, keepdim=True) - 2 * torch.einsum("bmd,mkd->bmk", parts, book)
                   + (book * book).sum(-1)[None])
        if self.training:
            weights = torch.softmax(-squared / self.temperature, dim=-1)
            return torch.einsum("bmk,mkd->bmd", weights, book).reshape(x.shape)
        nearest = squared.argmin(-1)  # [B, M]
        return book[torch.arange(m, device=x.device)[None], nearest].reshape(x.shape)

    def faiss_indexes(self, metric: str) -> dict[str, faiss.Index]:
        """Each code length's codebooks as an empty, trained faiss ``IndexPQ``, by the name
        ``softpq<bits>``: ``index.add(normalized_vectors)`` encodes them to the nearest code
        words, as this head does in evaluation."""
        return {f"softpq{b}": pq_from_codebooks(book.detach().cpu().numpy(), metric)
                for b, book in zip(self.bits, self.codebooks)}

    def extra_repr(self) -> str:
        return f"bits={self.bits}, codeword_bits={self.codeword_bits}, temperature={self.temperature}"


@HEADS.register("soft_pq")
def soft_pq(embed_dim: int, bits: Sequence[int] = (64,), codeword_bits: int = 8,
            temperature: float = 0.05) -> nn.Module:
    """Soft product quantization of the normalized embedding, one codebook set per length."""
    return SoftProductQuantizer(embed_dim, bits, codeword_bits, temperature)

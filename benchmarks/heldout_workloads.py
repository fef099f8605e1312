"""Workloads kept OUT of benchmint's own examples (src/benchmint/models/workloads.py), for
``benchmarks/replay_heldout.py``: the kinds a user brings whose step depends on its data.

* ``embbag_rec``: a recommender's embedding bags as real ones are fed: several tables of tens of thousands of
  rows, skewed (Zipf-like) indices, variable pooling factors, ``sum`` with per-sample weights, ``mean``,
  ``max`` and a ``padding_idx``; training step (BCE, SGD).
* ``embbag_infer``: the same model, inference forward only.
* ``moe_sorted``: a mixture-of-experts block dispatched the way production code does it: router, softmax,
  top-k, ``argsort`` of the flat expert ids, ``bincount`` for the per-expert token counts (read on the host
  with ``tolist``), one ``split`` per expert with those counts, per-expert matmuls of variable sizes, and
  ``index_add_`` back; the router is skewed (some experts get many more tokens than others).
* ``moe_train``: a smaller version of the same, training step (AdamW).
* ``lstm_packed``: an LSTM over padded sequences of different lengths (``pack_padded_sequence``), training.
* ``encdec_train``: ``nn.Transformer`` (encoder-decoder, causal target mask, padding masks) with token
  embeddings and a vocabulary head, label-smoothed cross-entropy, Adam.
* ``gpt_infer``: a decoder-only language model (``nn.TransformerEncoderLayer`` with a causal mask, pre-norm,
  tied embeddings) scoring a batch, inference.
* ``cnn_bn_train``: a small residual CNN with ``BatchNorm2d`` (running statistics), SGD with momentum and
  weight decay.

Each returns ``(step, description)``; sizes keep a step at a few to tens of milliseconds on one CPU thread.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def _zipf(n: int, rows: int, gen: torch.Generator, a: float = 1.1) -> torch.Tensor:
    """``n`` indices in [0, rows), skewed like real categorical features (a few hot rows), scattered."""
    ranks = torch.arange(1, rows + 1, dtype=torch.float64)
    p = ranks.pow(-a)
    hot = torch.multinomial(p / p.sum(), n, replacement=True, generator=gen)
    perm = torch.randperm(rows, generator=gen)
    return perm[hot]


class _Rec(nn.Module):
    def __init__(self, rows: list[int], dim: int, modes: list[str], dense: int = 16):
        super().__init__()
        self.bags = nn.ModuleList(
            nn.EmbeddingBag(r, dim, mode=m, padding_idx=(0 if k == 1 else None))
            for k, (r, m) in enumerate(zip(rows, modes, strict=True))
        )
        self.bottom = nn.Sequential(nn.Linear(dense, 128), nn.ReLU(), nn.Linear(128, dim), nn.ReLU())
        n = len(rows) + 1
        self.top = nn.Sequential(nn.Linear(dim + n * (n - 1) // 2, 128), nn.ReLU(), nn.Linear(128, 1))
        self.register_buffer("tri", torch.triu_indices(n, n, offset=1))

    def forward(self, dense, idx, offs, psw):
        d = self.bottom(dense)
        pooled = [bag(i, o, per_sample_weights=w) for bag, i, o, w in zip(self.bags, idx, offs, psw, strict=True)]
        feats = torch.stack([d, *pooled], dim=1)
        inter = torch.bmm(feats, feats.transpose(1, 2))[:, self.tri[0], self.tri[1]]
        return self.top(torch.cat([d, inter], dim=1)).squeeze(1)


def _rec_inputs(batch: int, rows: list[int], modes: list[str], gen: torch.Generator):
    idx, offs, psw = [], [], []
    for k, (r, m) in enumerate(zip(rows, modes, strict=True)):
        mean_len = (2, 20, 8, 40, 1, 12)[k % 6]
        lens = torch.poisson(torch.full((batch,), float(mean_len)), generator=gen).long().clamp(min=0, max=120)
        i = _zipf(int(lens.sum()), r, gen)
        if k == 1:
            i[torch.rand(i.shape, generator=gen) < 0.1] = 0  # padding entries
        idx.append(i)
        offs.append(torch.cat([torch.zeros(1, dtype=torch.long), lens.cumsum(0)[:-1]]))
        psw.append(torch.rand(i.shape, generator=gen) if m == "sum" else None)
    return idx, offs, psw


def _rec(train: bool) -> Callable[[], object]:
    gen = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    rows = [40000, 20000, 60000, 5000, 100, 30000]
    modes = ["sum", "mean", "sum", "max", "sum", "mean"]
    model = _Rec(rows, 64, modes)
    batch = 256
    dense = torch.randn(batch, 16, generator=gen)
    idx, offs, psw = _rec_inputs(batch, rows, modes, gen)
    y = torch.randint(0, 2, (batch,), generator=gen).float()
    if not train:
        model.eval()

        def infer():
            with torch.inference_mode():
                return model(dense, idx, offs, psw)

        return infer
    opt = torch.optim.SGD(model.parameters(), lr=0.01)

    def step():
        opt.zero_grad(set_to_none=True)
        nn.functional.binary_cross_entropy_with_logits(model(dense, idx, offs, psw), y).backward()
        opt.step()

    return step


class _SortedMoE(nn.Module):
    def __init__(self, dim: int, hidden: int, experts: int, k: int):
        super().__init__()
        self.k, self.e = k, experts
        self.router = nn.Linear(dim, experts, bias=False)
        with torch.no_grad():  # a skewed router: a few experts take most tokens, as trained routers do
            self.router.weight.mul_(4.0)
            self.router.weight[0] += 0.3
        self.w1 = nn.Parameter(torch.randn(experts, dim, hidden) * dim ** -0.5)
        self.w2 = nn.Parameter(torch.randn(experts, hidden, dim) * hidden ** -0.5)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        tokens = h.reshape(-1, h.shape[-1])
        probs = torch.softmax(self.router(tokens), dim=-1)
        w, chosen = torch.topk(probs, self.k, dim=-1)
        w = w / w.sum(dim=-1, keepdim=True)
        flat = chosen.reshape(-1)
        order = torch.argsort(flat, stable=True)
        counts = torch.bincount(flat, minlength=self.e).tolist()
        src = order // self.k
        xs = tokens.index_select(0, src)
        outs = []
        for e, part in enumerate(torch.split(xs, counts)):
            if counts[e] == 0:
                continue
            outs.append(nn.functional.gelu(part @ self.w1[e]) @ self.w2[e])
        y = torch.cat(outs) * w.reshape(-1)[order].unsqueeze(-1)
        out = torch.zeros_like(tokens).index_add_(0, src, y)
        return x + out.reshape(x.shape)


def _moe(train: bool) -> Callable[[], object]:
    torch.manual_seed(2)
    if train:
        model = nn.Sequential(_SortedMoE(128, 256, 8, 2), _SortedMoE(128, 256, 8, 2))
        x = torch.randn(4, 128, 128)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step():
            opt.zero_grad(set_to_none=True)
            model(x).square().mean().backward()
            opt.step()

        return step
    model = nn.Sequential(*(_SortedMoE(256, 512, 16, 2) for _ in range(2))).eval()
    x = torch.randn(8, 128, 256)

    def infer():
        with torch.inference_mode():
            return model(x)

    return infer


class _PackedLSTM(nn.Module):
    def __init__(self, vocab: int, dim: int):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim, padding_idx=0)
        self.lstm = nn.LSTM(dim, dim, num_layers=2, batch_first=True)
        self.head = nn.Linear(dim, 4)

    def forward(self, ids, lengths):
        packed = nn.utils.rnn.pack_padded_sequence(self.emb(ids), lengths, batch_first=True, enforce_sorted=False)
        _, (h, _) = self.lstm(packed)
        return self.head(h[-1])


def _lstm_packed() -> Callable[[], object]:
    gen = torch.Generator().manual_seed(3)
    torch.manual_seed(3)
    model = _PackedLSTM(5000, 128)
    lengths = torch.randint(5, 48, (16,), generator=gen)
    ids = torch.randint(1, 5000, (16, 48), generator=gen)
    for b, n in enumerate(lengths.tolist()):
        ids[b, n:] = 0
    y = torch.randint(0, 4, (16,), generator=gen)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step():
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(ids, lengths), y).backward()
        opt.step()

    return step


def _encdec_train() -> Callable[[], object]:
    gen = torch.Generator().manual_seed(4)
    torch.manual_seed(4)
    vocab, dim = 500, 64
    emb = nn.Embedding(vocab, dim, padding_idx=0)
    model = nn.Transformer(dim, nhead=4, num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=128,
                           dropout=0.1, batch_first=True)
    head = nn.Linear(dim, vocab)
    params = [*emb.parameters(), *model.parameters(), *head.parameters()]
    src = torch.randint(1, vocab, (4, 24), generator=gen)
    tgt = torch.randint(1, vocab, (4, 17), generator=gen)
    src[:, 18:] = 0
    src_pad = src == 0
    tgt_in, tgt_out = tgt[:, :-1], tgt[:, 1:]
    causal = nn.Transformer.generate_square_subsequent_mask(tgt_in.shape[1])
    opt = torch.optim.Adam(params, lr=1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        out = model(emb(src), emb(tgt_in), tgt_mask=causal, src_key_padding_mask=src_pad,
                    memory_key_padding_mask=src_pad, tgt_is_causal=True)
        loss = nn.functional.cross_entropy(head(out).reshape(-1, vocab), tgt_out.reshape(-1), label_smoothing=0.1)
        loss.backward()
        opt.step()

    return step


class _GPT(nn.Module):
    def __init__(self, vocab: int, dim: int, layers: int, ctx: int):
        super().__init__()
        self.tok = nn.Embedding(vocab, dim)
        self.pos = nn.Embedding(ctx, dim)
        self.blocks = nn.ModuleList(nn.TransformerEncoderLayer(dim, 4, 4 * dim, dropout=0.0, activation="gelu",
                                                               batch_first=True, norm_first=True)
                                    for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        t = ids.shape[1]
        x = self.tok(ids) + self.pos(torch.arange(t, device=ids.device))
        mask = nn.Transformer.generate_square_subsequent_mask(t)
        for b in self.blocks:
            x = b(x, src_mask=mask, is_causal=True)
        return self.norm(x) @ self.tok.weight.t()


def _gpt_infer() -> Callable[[], object]:
    gen = torch.Generator().manual_seed(5)
    torch.manual_seed(5)
    model = _GPT(2000, 96, 2, 48).eval()
    ids = torch.randint(0, 2000, (4, 48), generator=gen)

    def infer():
        with torch.inference_mode():
            return model(ids)

    return infer


class _ResCNN(nn.Module):
    def __init__(self, c: int = 16, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
                                   nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
        self.down = nn.Sequential(nn.Conv2d(c, 2 * c, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(2 * c),
                                  nn.ReLU())
        self.head = nn.Linear(2 * c, classes)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.block(x))
        return self.head(self.down(x).mean((2, 3)))


def _cnn_bn_train() -> Callable[[], object]:
    gen = torch.Generator().manual_seed(6)
    torch.manual_seed(6)
    model = _ResCNN()
    x = torch.randn(8, 3, 16, 16, generator=gen)
    y = torch.randint(0, 10, (8,), generator=gen)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    return step


HELDOUT: dict[str, Callable[[], Callable[[], object]]] = {
    "embbag_rec": lambda: _rec(True),
    "embbag_infer": lambda: _rec(False),
    "moe_sorted": lambda: _moe(False),
    "moe_train": lambda: _moe(True),
    "lstm_packed": _lstm_packed,
    "encdec_train": _encdec_train,
    "gpt_infer": _gpt_infer,
    "cnn_bn_train": _cnn_bn_train,
}

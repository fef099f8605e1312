"""Built-in example workloads: real model steps built from transformers configs and torch.nn, random weights.

Each workload is one step (a forward pass, or a whole training step) that benchmint can capture and replay.
They span what a replayer must get right: inference and training (forward, autograd backward, optimizer),
attention masks, encoder-decoder attention, batch norm, recurrent kernels, embedding bags with offsets, and
data-dependent routing. Sizes are small so a step takes milliseconds on 2 CPU cores; ``scale`` grows them
(the model's width); ``batch`` and ``seq`` set the step's batch size and sequence length (default: each
workload's own, in its ``meta``).

Use :func:`build` (``build("cnn_train")``) or iterate :data:`WORKLOADS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class Workload:
    """One step of a model: call :attr:`step` repeatedly."""

    name: str
    description: str
    step: Callable[[], object]
    training: bool
    parameters: int
    meta: dict = field(default_factory=dict)
    model: object = field(default=None, repr=False)  # the torch module the step runs (recorded by captures)


def _params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _train_step(model: nn.Module, opt: torch.optim.Optimizer, loss_fn: Callable[[], torch.Tensor]) -> Callable:
    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        opt.step()

    return step


def _infer_step(fn: Callable[[], object]) -> Callable[[], object]:
    def step() -> object:
        with torch.inference_mode():
            return fn()

    return step


# -- transformers models ------------------------------------------------------------------------------------
def _gpt2(scale: int = 1):
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=1024, n_positions=256, n_embd=64 * scale, n_layer=2, n_head=4,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                     bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(cfg)
    # the causal-LM loss transformers falls back to for this class anyway, named, so that the first training
    # step does not warn that loss_type None is unrecognized
    model.loss_type = "ForCausalLM"
    return model


def decoder_infer(scale: int = 1, batch: int | None = None, seq: int | None = None) -> Workload:
    """Decoder-only LM (GPT-2 architecture): one inference forward over a batch of prompts."""
    torch.manual_seed(0)
    model = _gpt2(scale).eval()
    b, s = batch or 2, seq or 64
    ids = torch.randint(0, 1024, (b, s))
    return Workload("decoder_infer", decoder_infer.__doc__ or "", _infer_step(lambda: model(input_ids=ids).logits),
                    False, _params(model), {"batch": b, "seq": s}, model=model)


def transformer_train(scale: int = 1, batch: int | None = None, seq: int | None = None) -> Workload:
    """Decoder-only LM training step: forward, loss, backward, AdamW update."""
    torch.manual_seed(0)
    model = _gpt2(scale).train()
    ids = torch.randint(0, 1024, (batch or 2, seq or 64))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)
    step = _train_step(model, opt, lambda: model(input_ids=ids, labels=ids).loss)
    return Workload("transformer_train", transformer_train.__doc__ or "", step, True, _params(model),
                    {"batch": ids.shape[0], "seq": ids.shape[1], "optimizer": "AdamW"}, model=model)


def encoder_cls(scale: int = 1, batch: int | None = None, seq: int | None = None) -> Workload:
    """Encoder classifier (BERT architecture) with a padding attention mask: inference forward."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=1024, hidden_size=64 * scale, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=256 * scale, max_position_embeddings=128, num_labels=3,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = BertForSequenceClassification(cfg).eval()
    b, s = batch or 4, seq or 48
    ids = torch.randint(0, 1024, (b, s))
    mask = torch.ones(b, s, dtype=torch.long)
    mask[1 % b, (s * 5) // 8:] = 0
    mask[3 % b, s // 4:] = 0
    return Workload("encoder_cls", encoder_cls.__doc__ or "",
                    _infer_step(lambda: model(input_ids=ids, attention_mask=mask).logits), False, _params(model),
                    {"batch": b, "seq": s}, model=model)


def encoder_decoder(scale: int = 1, batch: int | None = None, seq: int | None = None) -> Workload:
    """Encoder-decoder (T5 architecture): inference forward with decoder inputs (teacher forcing)."""
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    cfg = T5Config(vocab_size=1024, d_model=64 * scale, d_kv=16, d_ff=128 * scale, num_layers=2,
                   num_decoder_layers=2, num_heads=4, dropout_rate=0.0, decoder_start_token_id=0)
    model = T5ForConditionalGeneration(cfg).eval()
    b, s = batch or 2, seq or 48  # the target is a third of the source
    src = torch.randint(0, 1024, (b, s))
    mask = torch.ones(b, s, dtype=torch.long)
    mask[1 % b, (s * 5) // 6:] = 0
    tgt = torch.randint(0, 1024, (b, s // 3))
    return Workload("encoder_decoder", encoder_decoder.__doc__ or "",
                    _infer_step(lambda: model(input_ids=src, attention_mask=mask, decoder_input_ids=tgt).logits),
                    False, _params(model), {"batch": b, "src": s, "tgt": s // 3}, model=model)


# -- torch.nn models ------------------------------------------------------------------------------------------
class _SmallCNN(nn.Module):
    def __init__(self, width: int = 16, classes: int = 10):
        super().__init__()

        def block(cin: int, cout: int, stride: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                                 nn.ReLU(inplace=True))

        self.features = nn.Sequential(block(3, width, 1), block(width, width, 1), block(width, 2 * width, 2),
                                      block(2 * width, 2 * width, 1), nn.MaxPool2d(2))
        self.head = nn.Linear(2 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def cnn_train(scale: int = 1, batch: int | None = None, seq: int | None = None) -> Workload:
    """CNN with batch norm: training step with cross-entropy and SGD with momentum."""
    torch.manual_seed(0)
    model = _SmallCNN(16 * scale).train()
    x = torch.randn(batch or 8, 3, 32, 32)
    y = torch.randint(0, 10, (batch or 8,))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    step = _train_step(model, opt, lambda: nn.functional.cross_entropy(model(x), y))
    return Workload("cnn_train", cnn_train.__doc__ or "", step, True, _params(model),
                    {"batch": batch or 8, "image": 32, "optimizer": "SGD"}, model=model)


class _BiLSTM(nn.Module):
    def __init__(self, vocab: int, dim: int, classes: int = 5):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.lstm = nn.LSTM(dim, dim, num_layers=2, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * dim, classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.emb(ids))
        return self.head(out.mean(dim=1))


def bilstm(scale: int = 1, batch: int | None = None, seq: int | None = None) -> Workload:
    """Bidirectional 2-layer LSTM text classifier: inference forward."""
    torch.manual_seed(0)
    model = _BiLSTM(2000, 64 * scale).eval()
    ids = torch.randint(0, 2000, (batch or 8, seq or 32))
    return Workload("bilstm", bilstm.__doc__ or "", _infer_step(lambda: model(ids)), False, _params(model),
                    {"batch": ids.shape[0], "seq": ids.shape[1]}, model=model)


class _Recommender(nn.Module):
    """DLRM-style: dense MLP, embedding bags with offsets, pairwise interaction, top MLP."""

    def __init__(self, tables: int = 4, rows: int = 5000, dim: int = 32, dense: int = 13):
        super().__init__()
        self.bags = nn.ModuleList(nn.EmbeddingBag(rows, dim, mode="sum") for _ in range(tables))
        self.bottom = nn.Sequential(nn.Linear(dense, 64), nn.ReLU(), nn.Linear(64, dim), nn.ReLU())
        n = tables + 1
        self.top = nn.Sequential(nn.Linear(dim + n * (n - 1) // 2, 64), nn.ReLU(), nn.Linear(64, 1))
        self._tri = torch.triu_indices(n, n, offset=1)

    def forward(self, dense: torch.Tensor, idx: list[torch.Tensor], offs: list[torch.Tensor]) -> torch.Tensor:
        d = self.bottom(dense)
        feats = torch.stack([d] + [bag(i, o) for bag, i, o in zip(self.bags, idx, offs, strict=True)], dim=1)
        inter = torch.bmm(feats, feats.transpose(1, 2))[:, self._tri[0], self._tri[1]]
        return self.top(torch.cat([d, inter], dim=1)).squeeze(1)


def embbag_train(scale: int = 1, batch: int | None = None, seq: int | None = None) -> Workload:
    """Embedding-bag recommendation model (DLRM style): training step with BCE loss and Adagrad."""
    torch.manual_seed(0)
    rows = 5000 * scale
    model = _Recommender(rows=rows).train()
    batch = batch or 64
    dense = torch.randn(batch, 13)
    idx, offs = [], []
    for _ in range(4):
        lens = torch.randint(1, 6, (batch,))
        idx.append(torch.randint(0, rows, (int(lens.sum()),)))
        offs.append(torch.cat([torch.zeros(1, dtype=torch.long), lens.cumsum(0)[:-1]]))
    y = torch.randint(0, 2, (batch,)).float()
    opt = torch.optim.Adagrad(model.parameters(), lr=0.01)
    step = _train_step(
        model, opt, lambda: nn.functional.binary_cross_entropy_with_logits(model(dense, idx, offs), y)
    )
    return Workload("embbag_train", embbag_train.__doc__ or "", step, True, _params(model),
                    {"batch": batch, "tables": 4, "rows": rows, "optimizer": "Adagrad"}, model=model)


class _MoE(nn.Module):
    """Mixture-of-experts feed-forward layer with top-k routing (tokens gathered per expert)."""

    def __init__(self, dim: int, experts: int = 8, k: int = 2):
        super().__init__()
        self.k = k
        self.gate = nn.Linear(dim, experts, bias=False)
        self.experts = nn.ModuleList(
            nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim)) for _ in range(experts)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.reshape(-1, x.shape[-1])
        weights, chosen = torch.topk(torch.softmax(self.gate(tokens), dim=-1), self.k, dim=-1)
        weights = weights / weights.sum(dim=-1, keepdim=True)
        out = torch.zeros_like(tokens)
        for e, expert in enumerate(self.experts):
            rows, slot = torch.nonzero(chosen == e, as_tuple=True)
            if rows.numel() == 0:
                continue
            y = expert(tokens.index_select(0, rows)) * weights[rows, slot].unsqueeze(-1)
            out.index_add_(0, rows, y)
        return out.reshape(x.shape)


def moe(scale: int = 1, batch: int | None = None, seq: int | None = None) -> Workload:
    """Mixture-of-experts layer with top-2 routing over 8 experts: inference forward."""
    torch.manual_seed(0)
    model = _MoE(64 * scale).eval()
    x = torch.randn(batch or 4, seq or 64, 64 * scale)
    return Workload("moe", moe.__doc__ or "", _infer_step(lambda: model(x)), False, _params(model),
                    {"batch": x.shape[0], "tokens": x.shape[0] * x.shape[1], "experts": 8, "k": 2}, model=model)


def small_transformer(scale: int = 1, batch: int | None = None, seq: int | None = None) -> Workload:
    """The demo's small transformer: a tiny GPT-2 training step (same as ``transformer_train``)."""
    w = transformer_train(scale, batch, seq)
    w.name = "small_transformer"
    return w


WORKLOADS: dict[str, Callable[..., Workload]] = {
    "decoder_infer": decoder_infer,
    "encoder_cls": encoder_cls,
    "encoder_decoder": encoder_decoder,
    "transformer_train": transformer_train,
    "cnn_train": cnn_train,
    "bilstm": bilstm,
    "embbag_train": embbag_train,
    "moe": moe,
}


def build(name: str, scale: int = 1, batch: int | None = None, seq: int | None = None) -> Workload:
    from benchmint.core.errors import UserError

    fn = WORKLOADS.get(name) or (small_transformer if name == "small_transformer" else None)
    if fn is None:
        raise UserError(f"unknown workload {name!r}; choose one of {', '.join([*WORKLOADS, 'small_transformer'])}")
    return fn(scale, batch, seq)

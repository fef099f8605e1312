"""A data-parallel training loop to capture under torchrun: a small transformer encoder wrapped in
DistributedDataParallel (gloo on the CPU, NCCL on CUDA), one optimizer step per step, so that each rank's
capture holds the gradient all-reduces DDP issues.

    torchrun --nproc-per-node 2 -m benchmint capture --out DIR -- python -m benchmint.models.ddp_train
    benchmint replay DIR --ranks 2          (or: torchrun --nproc-per-node 2 -m benchmint replay DIR)
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


def build(hidden: int, layers: int, device: torch.device) -> nn.Module:
    layer = nn.TransformerEncoderLayer(hidden, nhead=4, dim_feedforward=4 * hidden, dropout=0.0, batch_first=True)
    return nn.Sequential(nn.TransformerEncoder(layer, layers), nn.Linear(hidden, 16)).to(device)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=40, help="training steps (the capture needs warmup + measure + "
                    "recorded ones)")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8, help="samples per rank")
    ap.add_argument("--seq", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads per rank")
    ap.add_argument("--bucket-mb", type=float, default=1.0, help="DDP's gradient bucket size")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    cuda = torch.cuda.is_available() and os.environ.get("BENCHMINT_DDP_DEVICE", "") != "cpu"
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if cuda else "gloo")
    torch.manual_seed(0)
    model = DistributedDataParallel(build(a.hidden, a.layers, device), bucket_cap_mb=a.bucket_mb)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(dist.get_rank())
    x = torch.randn(a.batch, a.seq, a.hidden, generator=g).to(device)
    y = torch.randn(a.batch, a.seq, 16, generator=g).to(device)
    for _ in range(a.steps):
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

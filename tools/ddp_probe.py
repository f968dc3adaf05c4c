"""Two distributed training steps in one process, run by gpu_check under torchrun.

The trainer forms a process group only for world size > 1, so a one-GPU run
never touches NCCL or SyncBatchNorm. This probe does, with the trainer's own
parts: init_process_group (NCCL on CUDA, gloo on CPU), convert_batchnorm
(SyncBatchNorm on CUDA, GlobalBatchNorm on CPU), DDP, the cross-process loss,
LARS, on crops from a prepared log-mel cache. Prints one JSON line.

    torchrun --nproc_per_node 1 -m tools.ddp_probe --data cache/gpu_check/mel_cache --device cuda
"""
from __future__ import annotations

import argparse
import json
import math

import torch
import torch.distributed as dist
from torch import nn

from hear_abt.encoders import build_encoder
from hear_abt.train import distributed as D
from hear_abt.train.augment import ABTAugment, MixupBank, RandomLinearFader, RandomResizeCrop
from hear_abt.train.barlow import BarlowTwinsLoss, BarlowTwinsModel
from hear_abt.train.config import TrainConfig
from hear_abt.train.data import MelCache, generator_for, global_batch
from hear_abt.train.optim import build_optimizer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", required=True, help="a built log-mel cache folder")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()
    dev = D.pick_device(args.device, int(__import__("os").environ.get("LOCAL_RANK", "0")))
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    try:
        cache = MelCache.open(args.data)
        mean, std = cache.norm_stats
        cfg = TrainConfig(data=args.data, batch_size=args.batch, projector=[512, 256])
        torch.manual_seed(0)
        model = D.convert_batchnorm(BarlowTwinsModel(build_encoder("audiontt"), cfg.projector), dev).to(dev)
        kind = nn.SyncBatchNorm if dev.type == "cuda" else D.GlobalBatchNorm
        n_bn = sum(isinstance(m, kind) for m in model.modules())
        assert n_bn > 0, f"no {kind.__name__} after convert_batchnorm"
        net = nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
        opt = build_optimizer(model, cfg)
        aug = ABTAugment(MixupBank(0.2, 64), RandomResizeCrop((1.0, 1.5), (0.6, 1.5), (0.6, 1.5)), RandomLinearFader(1.0))
        loss_fn = BarlowTwinsLoss(cfg.lambd, distributed=True)
        losses = []
        for step in range(2):
            idx, u = global_batch(len(cache), args.batch, step, 0)
            x = (cache.crops(idx, u, cfg.crop_frames).to(dev) - mean) / std
            g = generator_for(0, "augment", step)
            with torch.no_grad():
                v1, v2 = aug.apply(x, aug.sample_params(args.batch, g)), aug.apply(x, aug.sample_params(args.batch, g))
                aug.mixup.push(x)
            z1, z2 = net(v1, v2)
            loss, _ = loss_fn(z1, z2)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss))
        assert all(math.isfinite(v) for v in losses), f"non-finite loss: {losses}"
        print(json.dumps({"losses": losses, "sync_bn_layers": n_bn, "bn_kind": kind.__name__,
                          "backend": dist.get_backend(), "world_size": dist.get_world_size()}))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()

"""Run a course worker function under ``torchrun`` (env:// rendezvous), on gloo or nccl.

    torchrun --nproc-per-node 2 -m course_lib.torchrun_entry course_lib.demos:hello_all_reduce
    torchrun --nproc-per-node 8 -m course_lib.torchrun_entry --backend nccl course_lib.demos:hello_all_reduce

The worker functions of the notebooks have the signature ``fn(rank, world_size, *args)``; the
course's launcher calls them on CPU processes, this entry point calls the very same function
on processes that torchrun started (on one machine or many). With ``--backend nccl`` each rank
uses GPU ``LOCAL_RANK``; code that allocates on ``comm.device()`` needs no change.
"""
from __future__ import annotations

import argparse
import importlib
import os

import torch
import torch.distributed as dist


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("target", help="module:function, e.g. course_lib.demos:hello_all_reduce")
    ap.add_argument("--backend", choices=["gloo", "nccl"], default=None,
                    help="default: nccl when CUDA GPUs are visible, else gloo")
    a = ap.parse_args(argv)
    if "RANK" not in os.environ or "MASTER_ADDR" not in os.environ:
        ap.error("RANK/MASTER_ADDR are not set: start this module with torchrun, "
                 "e.g. torchrun --nproc-per-node 2 -m course_lib.torchrun_entry " + a.target)
    module, _, name = a.target.partition(":")
    if not name:
        ap.error(f"target {a.target!r} must look like module:function")
    fn = getattr(importlib.import_module(module), name)
    backend = a.backend or ("nccl" if torch.cuda.is_available() else "gloo")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    else:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ["LOCAL_WORLD_SIZE"])))
    dist.init_process_group(backend)  # env:// rendezvous from torchrun's variables
    rank, world_size = dist.get_rank(), dist.get_world_size()
    try:
        result = fn(rank, world_size)
        print(f"[rank {rank}] {name} returned {result!r} (backend {backend})", flush=True)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()

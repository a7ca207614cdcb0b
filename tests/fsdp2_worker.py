"""Run by tests/test_distributed.py under torchrun on 2 CPU processes (gloo): medtune's distributed pieces
under torch's own FSDP2 (`fully_shard`), which accelerate 1.15 does not set up on CPU.

Usage: python -m torch.distributed.run --nproc_per_node 2 tests/fsdp2_worker.py MODEL_DIR VAL_DIR OUT_DIR
Writes OUT_DIR/rank<r>.json: the eval loss (5 samples, batch 2: the ranks hold 2 and 1 batches) and the
stop decision when only rank 1 wants to stop.
"""

import json
import sys

import datasets
import torch
import torch.distributed as dist
from peft import LoraConfig, get_peft_model
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor
from transformers import AutoModelForCausalLM

from medtune.trainer_common import any_rank, distributed_eval

model_dir, val_dir, out_dir = sys.argv[1:4]
dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(0)
model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir),
                       LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
for layer in model.base_model.model.model.layers:
    fully_shard(layer)
fully_shard(model)
sharded = isinstance(model.base_model.model.model.layers[0].mlp.up_proj.weight, DTensor)
result = distributed_eval(model, datasets.load_from_disk(val_dir), batch_size=2)
stop = any_rank(rank == 1)
with open(f"{out_dir}/rank{rank}.json", "w") as f:
    json.dump({"eval": result, "stop": stop, "sharded": sharded}, f)
dist.destroy_process_group()

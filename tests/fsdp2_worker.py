"""Run by tests/test_distributed.py under torchrun on 2 CPU processes (gloo): medtune's distributed pieces
under torch's own FSDP2 (`fully_shard`), which accelerate 1.15 does not set up on CPU.

Usage: python -m torch.distributed.run --nproc_per_node 2 tests/fsdp2_worker.py MODEL_DIR DATA_DIR OUT_DIR
Writes OUT_DIR/rank<r>.json: the eval loss (5 samples, batch 2: the ranks hold 2 and 1 batches) and the
stop decision when only rank 1 wants to stop; and OUT_DIR/grads.pt (rank 0): the LoRA gradients of
medtune's training loss on the 4 training samples, 2 per rank.
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

from medtune.modeling import right_padded
from medtune.train.loss import target_only_loss
from medtune.train.common import any_rank, distributed_eval

model_dir, data_dir, out_dir = sys.argv[1:4]
dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(0)
model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir),
                       LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
for layer in model.base_model.model.model.layers:
    fully_shard(layer)
fully_shard(model)
sharded = isinstance(model.base_model.model.model.layers[0].mlp.up_proj.weight, DTensor)
result = distributed_eval(model, datasets.load_from_disk(f"{data_dir}/val"), batch_size=2)
stop = any_rank(rank == 1)
with open(f"{out_dir}/rank{rank}.json", "w") as f:
    json.dump({"eval": result, "stop": stop, "sharded": sharded}, f)

# One training step: this rank's 2 samples, normalised by the tokens of all 4 and scaled by the number of
# ranks, as MedtuneSFTTrainer does (FSDP2 averages the gradients over ranks). The head is called as a
# module outside the model's forward, as in the loss.
rows = datasets.load_from_disk(f"{data_dir}/train")[:]
total = sum(sum(1 for t in labels[1:] if t != -100) for labels in rows["labels"])
ids, labels, mask = right_padded(rows["input_ids"], rows["labels"], [2 * rank, 2 * rank + 1], pad_id=0)
model.train()
loss = target_only_loss(model, {"input_ids": ids, "attention_mask": mask, "labels": labels}, total,
                        model.get_output_embeddings()) * dist.get_world_size()
loss.backward()
grads = {n: p.grad.full_tensor() for n, p in model.named_parameters() if p.requires_grad}
if rank == 0:
    torch.save(grads, f"{out_dir}/grads.pt")
dist.destroy_process_group()

"""The train stage's loss: next-token cross-entropy on target positions only, the LM head applied in chunks
so the full (tokens x vocabulary) logits never exist at once."""

from __future__ import annotations

from medtune.train.plan import logits_chunk_rows


def target_only_loss(model, inputs: dict, num_items_in_batch, lm_head, liger: bool = False,
                     chunk_rows: int | None = None):
    """Sum of the cross-entropy over trained tokens, divided by the tokens of the whole optimizer step.

    The model runs through its wrappers (DDP, PEFT) and returns its final hidden states; only positions
    whose next-token label is trained are projected to the vocabulary, a chunk at a time under
    checkpointing, so at most one chunk of logits (about 256 MB) is alive, in the forward and in the
    backward. With Liger on a GPU, its fused linear cross-entropy does the same in one kernel.
    """
    import torch
    from torch.utils.checkpoint import checkpoint

    labels = inputs.pop("labels")
    inputs["use_cache"] = False
    # logits_to_keep=1: the model's own head runs on one position only; hidden_states[-1] is after the
    # final norm (checked by a test, since the loss depends on it).
    hidden = model(**inputs, output_hidden_states=True, logits_to_keep=1).hidden_states[-1]
    shifted = labels[:, 1:]
    keep = shifted != -100
    h, targets = hidden[:, :-1][keep], shifted[keep]
    if liger:
        from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy

        total = liger_fused_linear_cross_entropy(h, lm_head.weight, targets, reduction="sum")
    else:
        rows = chunk_rows or logits_chunk_rows(lm_head.weight.shape[0])
        total = hidden.new_zeros((), dtype=torch.float32)
        for a in range(0, targets.numel(), rows):
            total = total + checkpoint(_ce_sum, lm_head, h[a:a + rows], targets[a:a + rows], use_reentrant=False)
    denominator = targets.numel() if num_items_in_batch is None else num_items_in_batch
    return total / torch.as_tensor(denominator, device=total.device).clamp(min=1)


def _ce_sum(lm_head, hidden, targets):
    import torch.nn.functional as F

    return F.cross_entropy(lm_head(hidden).float(), targets, reduction="sum")


def whole_head_weight(state) -> bool:
    """Whether lm_head.weight, read outside the model's forward, is the whole matrix on every rank.

    Liger's fused loss takes the weight tensor itself; under ZeRO-3 it is then an empty placeholder and under
    FSDP a shard. There the loss calls the head as a module instead (target_only_loss's chunked path), so
    the sharding's own hooks gather it and route its gradient (tested under FSDP2 on CPU)."""
    kind = state.distributed_type.value
    if kind == "DEEPSPEED":
        return state.deepspeed_plugin.zero_stage < 3
    return kind != "FSDP"


def _trainer_class():
    from trl import SFTTrainer

    class MedtuneSFTTrainer(SFTTrainer):
        """SFTTrainer whose loss projects only trained positions, a chunk at a time (TRL's own fused head
        scores every position, padding and prompt included, on devices without Triton, which made CPU
        training 4-6x slower), and skips TRL's per-token entropy and accuracy metrics. Gradient
        accumulation and multi-process scaling follow Trainer/TRL exactly."""

        use_liger_loss = False

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            head = self.accelerator.unwrap_model(model).get_output_embeddings()  # a trained copy if modules_to_save
            loss = target_only_loss(model, inputs, num_items_in_batch, head, liger=self.use_liger_loss)
            # As in Trainer/TRL: num_items_in_batch counts every rank's tokens and DDP averages gradients.
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes
            if return_outputs:
                raise NotImplementedError("medtune evaluates with its own token-weighted loop")
            return loss

    return MedtuneSFTTrainer

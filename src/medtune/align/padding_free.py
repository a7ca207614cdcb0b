"""Padding-free preference batches: TRL's padded DPO/KTO batch, run as one flattened row.

TRL 1.16 disables DPO's `padding_free` (a refactor left it out), so its DPO and KTO batches are the step's
sequences right-padded to the longest: with real dialogues (tens to 2,048 tokens) most of a batch can be
padding, and every layer computes it. `PaddedAsFlat` wraps the model a trainer calls: it drops the padding,
concatenates the sequences into one row whose position ids restart per sequence, hands the model each
sequence's boundaries (`cu_seq_lens_q/k`, what flash-attention's varlen kernel and medtune's `sdpa_varlen`
read), and puts the per-token outputs back in the padded layout, zeros on padding, so TRL's loss code runs
unchanged. The label of each sequence's first token is set to -100 on the row, so the position that would
predict across a boundary is never scored (in the padded batch that position does not exist).
"""

from __future__ import annotations

# FusedCausalLMOutput's per-token fields (TRL's fused LM head: batch x (seq_len - 1)).
PER_TOKEN = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1", "label_mask")


class PaddedAsFlat:
    """Callable stand-in for `model` in TRL's DPO/KTO loss and reference passes (attributes go to the model).

    A batch that is not right-padded ids + mask + labels (extra per-token inputs, left padding) goes to the
    model unchanged."""

    def __init__(self, model):
        self.model = model

    def __getattr__(self, name):
        return getattr(self.model, name)

    def __call__(self, input_ids=None, attention_mask=None, labels=None, **kwargs):
        if not flattenable(input_ids, attention_mask, labels, kwargs):
            return self.model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, **kwargs)
        import torch

        keep = attention_mask.bool()
        lengths = keep.sum(dim=1)
        positions = torch.arange(keep.shape[1], device=keep.device).expand_as(keep)[keep]
        bounds = torch.nn.functional.pad(lengths.cumsum(0), (1, 0)).to(torch.int32)
        longest = int(lengths.max())
        flat_labels = labels[keep]
        flat_labels[bounds[:-1].long()] = -100  # nothing predicts a sequence's first token across the boundary
        out = self.model(input_ids=input_ids[keep][None], labels=flat_labels[None], position_ids=positions[None],
                         cu_seq_lens_q=bounds, cu_seq_lens_k=bounds, max_length_q=longest, max_length_k=longest,
                         **kwargs)
        for name in PER_TOKEN:
            value = getattr(out, name, None)
            if value is not None:
                setattr(out, name, unflatten(value, keep))
        return out


def flattenable(input_ids, attention_mask, labels, kwargs) -> bool:
    """A right-padded batch of token ids with labels and nothing else per token (no position ids of its own)."""
    if input_ids is None or attention_mask is None or labels is None or input_ids.dim() != 2:
        return False
    if "position_ids" in kwargs or any(getattr(v, "dim", lambda: 0)() >= 2 for v in kwargs.values()):
        return False
    import torch

    keep = attention_mask.bool()
    lengths = keep.sum(dim=1, keepdim=True)
    right_padded = torch.arange(keep.shape[1], device=keep.device)[None] < lengths
    return bool((keep == right_padded).all()) and bool((lengths > 0).all())


def unflatten(flat, keep):
    """The flattened row's per-token output [1, T - 1] in the padded layout [batch, seq_len - 1].

    Padded position (r, j) predicts token j + 1 of sequence r; on the row that is position offset_r + j, which
    exists where token j + 1 does. masked_scatter keeps the values connected to the graph."""
    targets = keep[:, 1:]
    index = (keep.flatten().cumsum(0) - 1).view_as(keep)[:, :-1][targets]
    return flat.new_zeros(targets.shape).masked_scatter(targets, flat[0, index])

"""Streaming a denoiser that does not fit its VRAM budget: diffusers' block-level group offloading.

The residency manager decides *when* (the model does not fit the room its budget leaves, see
`nodegraph.runtime.streaming`); this adapter decides *how*, through diffusers' own hooks
(`ModelMixin.enable_group_offload`, `offload_type="block_level"`): the model's block lists
(Flux's `transformer_blocks` and `single_transformer_blocks`, SD3's `transformer_blocks`, a UNet's
down/up blocks) are cut into groups of `num_blocks_per_group` consecutive blocks; a group is moved to
the device just before its first block runs and back to the host after its last one, while the
parts outside the lists (embedders, final norm and projection) stay on the device for the whole call.
So the most weight bytes on the device at once are `rest + the largest group`, and we pick the
largest group size for which that fits the room the manager gives.

The hooks only move weights, so the arithmetic is the model's own: outputs equal the whole model's
bit for bit (tests/diffusion/test_flux_memory.py). No CUDA streams (`use_stream`): those keep pinned
host copies taken when the hooks are made, which LoRA adapters or fused projections added later
would not be in; plain hooks move whole modules, so whatever is in a block moves with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nodegraph.api import StreamPlan, format_size

HOST = "cpu"  # where diffusers' hooks keep the groups between calls (the manager's host: CPU RAM)


def tensor_bytes(module: Any) -> int:
    """Bytes of a module's parameters and buffers as they are stored now."""
    tensors = {id(t): t for t in [*module.parameters(), *module.buffers()]}
    return sum(t.nelement() * t.element_size() for t in tensors.values())


@dataclass(frozen=True)
class BlockLayout:
    """A model's block lists (bytes per block, per list) and the bytes outside them."""

    lists: tuple[tuple[int, ...], ...]
    rest: int

    def largest_group(self, per_group: int) -> int:
        """The bytes of the largest group of `per_group` consecutive blocks (groups never span lists)."""
        return max((sum(blocks[i:i + per_group]) for blocks in self.lists
                    for i in range(0, len(blocks), per_group)), default=0)

    def groups(self, per_group: int) -> int:
        return sum(-(-len(blocks) // per_group) for blocks in self.lists)

    def blocks_per_group(self, budget_bytes: int) -> int:
        """The most blocks per group for which the rest plus the largest group fit `budget_bytes`
        (1 when even one block does not: the least diffusers can do at block level)."""
        longest = max((len(blocks) for blocks in self.lists), default=1)
        for per_group in range(longest, 0, -1):
            if self.rest + self.largest_group(per_group) <= budget_bytes:
                return per_group
        return 1


def block_layout(model: Any) -> BlockLayout:
    """What diffusers' block-level offloading groups: the model's direct ModuleList/Sequential children."""
    import torch

    lists = tuple(tuple(tensor_bytes(block) for block in child) for child in model.children()
                  if isinstance(child, (torch.nn.ModuleList, torch.nn.Sequential)) and len(child))
    return BlockLayout(lists, tensor_bytes(model) - sum(sum(blocks) for blocks in lists))


class GroupOffload:
    """The `Streaming` adapter for diffusers models (`ModelMixin`): stateless, the hooks are on the model."""

    def stream(self, value: Any, onload_device: str, budget_bytes: int) -> StreamPlan:
        import torch

        layout = block_layout(value)
        per_group = layout.blocks_per_group(budget_bytes)
        group = layout.largest_group(per_group)
        value.enable_group_offload(onload_device=torch.device(onload_device),
                                   offload_device=torch.device(HOST), offload_type="block_level",
                                   num_blocks_per_group=per_group)
        blocks = "block" if per_group == 1 else "blocks"
        return StreamPlan(
            resident_bytes=layout.rest + group, groups=layout.groups(per_group),
            description=(f"in groups of {per_group} {blocks} ({format_size(group)} per group, "
                         f"{format_size(layout.rest)} outside the blocks stays on {onload_device}; "
                         f"{layout.groups(per_group)} groups per call, via diffusers' group offloading)"))

    def unstream(self, value: Any) -> None:
        """Remove diffusers' group-offloading hooks (what `_maybe_remove_and_reapply_group_offloading`
        removes before re-applying) and bring every weight to the host, also one a failed call left."""
        import torch
        from diffusers.hooks import HookRegistry
        from diffusers.hooks.group_offloading import (
            _GROUP_OFFLOADING,
            _LAYER_EXECUTION_TRACKER,
            _LAZY_PREFETCH_GROUP_OFFLOADING,
        )

        registry = HookRegistry.check_if_exists_or_initialize(value)
        for name in (_GROUP_OFFLOADING, _LAYER_EXECUTION_TRACKER, _LAZY_PREFETCH_GROUP_OFFLOADING):
            registry.remove_hook(name, recurse=True)
        value.to(torch.device(HOST))


def is_streamed(model: Any) -> bool:
    """Whether diffusers' group offloading is on `model` now."""
    from diffusers.hooks.group_offloading import _is_group_offload_enabled

    return bool(_is_group_offload_enabled(model))


def run_device(model: Any) -> tuple[Any, Any]:
    """(device, dtype) a denoiser computes on: its weights' place, or a streamed model's onload device
    (its weights are on the host between calls; diffusers' `ModelMixin.device` knows the difference), and
    the dtype it computes in (diffusers' `dtype`: fp8-stored or GGUF weights compute in another)."""
    param = next(model.parameters())
    device = getattr(model, "device", param.device)
    return device, getattr(model, "dtype", param.dtype)

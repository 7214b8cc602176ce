"""The consistency energy of the original code's consistency study (its `EnergyLogger`): how far the
transferred predictions are from the direct ones, over a set of batches.

Per batch: the segmentation part is KL(softmax(direct logits) || softmax(transferred logits)) averaged over
all N*C*H*W elements (the per-pixel KL divided by the class count C, as torch's `kl_div` with
reduction="mean" gives it); the depth part is mean |transferred depth - direct depth| over all N*H*W
pixels, in depth units. No pixel is masked. Each part is weighted by the batch's image count and
averaged over the images; the energy is 0.5 * segmentation + 0.5 * depth.
"""
import torch
import torch.nn.functional as F

from utils import distributed

ENERGY = "consistency_energy"
SEGMENTATION_PART = "consistency_energy_segmentation"
DEPTH_PART = "consistency_energy_depth"
ENERGY_KEYS = (ENERGY, SEGMENTATION_PART, DEPTH_PART)


def batch_energy_parts(outputs):
    """(segmentation part, depth part) of one batch, detached float64 scalars; `outputs` has segmentation
    and transferred_segmentation logits [N,C,H,W], depth and transferred_depth [N,1,H,W]."""
    divergence = F.kl_div(F.log_softmax(outputs.transferred_segmentation.detach(), dim=1),
                          F.log_softmax(outputs.segmentation.detach(), dim=1), reduction="none", log_target=True)
    depth_difference = outputs.transferred_depth.detach() - outputs.depth.detach()
    return divergence.mean().double(), depth_difference.abs().mean().double()


class ConsistencyEnergyMeter:
    """Image-weighted sums of the two energy parts, on the device (no host sync per batch), and the image
    count; batches without transferred predictions (direct-only, single-task) are not counted."""

    def __init__(self, device):
        self.sums = torch.zeros(2, dtype=torch.float64, device=device)  # segmentation, depth
        self.images = 0

    def update(self, outputs, batch_size):
        """Add one batch's XTaskOutput of `batch_size` images (nothing when it has no transferred predictions)."""
        if outputs.transferred_segmentation is None or outputs.transferred_depth is None:
            return
        self.sums += torch.stack(batch_energy_parts(outputs)) * batch_size
        self.images += batch_size

    def reduce_across_processes(self):
        """Make this meter hold the sums and the image count of every process (torchrun; nothing with one
        process)."""
        if not distributed.is_initialized():
            return
        distributed.all_reduce_sum(self.sums)
        self.images = int(distributed.all_reduce_sum(torch.tensor(self.images, device=self.sums.device)))

    def values(self):
        """{ENERGY, SEGMENTATION_PART, DEPTH_PART: float} over the images seen; {} when none had transferred
        predictions."""
        if self.images == 0:
            return {}
        segmentation, depth = (self.sums / self.images).tolist()
        return {ENERGY: 0.5 * segmentation + 0.5 * depth, SEGMENTATION_PART: segmentation, DEPTH_PART: depth}


def describe(values):
    """"consistency energy E (segmentation S, depth D)" of a `ConsistencyEnergyMeter.values()` dict."""
    return (f"consistency energy {values[ENERGY]:.4f} (segmentation {values[SEGMENTATION_PART]:.4f}, "
            f"depth {values[DEPTH_PART]:.4f})")

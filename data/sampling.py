"""Which images each process loads: one batch sampler for one process and for K processes.

Batch i of an epoch (the global batch, `batch_size` images) is the same whatever K: in training the
i-th run of `batch_size` indices of one permutation per epoch, drawn from the loader's seeded generator
(the same on every process); in evaluation the i-th run of the indices in order. Process r loads the
images of batch i at positions r, r + K, r + 2K, ... (its local batch, batch_size / K images), so the
local batches of all processes together are exactly the global one. Evaluation covers every image once,
without padding: in the last, partial batch some processes may hold one image fewer, or none.
"""
import torch


def last_batch_is_kept(size, world_size):
    """Whether training keeps a last, partial batch of `size` images on `world_size` processes: every
    process must get the same number of images (DDP averages the processes' gradients with equal
    weights) and at least 2 (BatchNorm cannot train on one image whose deepest feature map is 1x1, so the
    rule keeps any input size from stopping a run mid-epoch). On one process only a batch of one image
    is dropped."""
    return size % world_size == 0 and size // world_size >= 2


class ShardedBatchSampler:
    """Batches of dataset indices for process `rank` of `world_size`; `batch_size` is the global batch,
    a multiple of `world_size`. With `generator` (training): a new permutation per epoch, drawn when
    iteration starts, and a last partial batch dropped unless `last_batch_is_kept`. Without: the indices
    in order, every one once."""

    def __init__(self, dataset_size, batch_size, rank=0, world_size=1, generator=None):
        if batch_size % world_size:
            raise ValueError(f"batch_size {batch_size}: expected a multiple of world_size {world_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank}: expected 0..{world_size - 1}")
        self.dataset_size = dataset_size
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.generator = generator

    @property
    def batch_count(self):
        """The number of global batches per epoch (the most any process loads)."""
        full, partial = divmod(self.dataset_size, self.batch_size)
        if self.generator is not None and partial and not last_batch_is_kept(partial, self.world_size):
            partial = 0
        return full + (partial > 0)

    def global_batches(self):
        """The global batches of one epoch, as lists of dataset indices (draws the training permutation)."""
        if self.generator is None:
            order = list(range(self.dataset_size))
        else:
            order = torch.randperm(self.dataset_size, generator=self.generator).tolist()
        return [order[start:start + self.batch_size] for start in range(0, self.batch_size * self.batch_count,
                                                                          self.batch_size)]

    def __iter__(self):
        for batch in self.global_batches():
            local = batch[self.rank::self.world_size]
            if local:
                yield local

    def __len__(self):
        """The number of batches this process loads per epoch."""
        full, partial = divmod(self.dataset_size, self.batch_size)
        if self.generator is not None:
            return self.batch_count
        return full + (partial > self.rank)

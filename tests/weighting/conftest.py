"""The weighting tests share 2 CPU cores with other work: one torch thread."""

import torch

torch.set_num_threads(1)

"""What every objective has: its optimisers and their rates, the latents and labels it draws, DDP."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

if TYPE_CHECKING:
    from training.data import ImageData
    from training.options import TrainOptions

OBJECTIVES: dict[str, type[Objective]] = {}
ObjectiveClass = TypeVar("ObjectiveClass", bound="type[Objective]")


def register_objective(name: str) -> Callable[[ObjectiveClass], ObjectiveClass]:
    def register(cls: ObjectiveClass) -> ObjectiveClass:
        if name in OBJECTIVES:
            raise ValueError(f"objective {name} registered twice")
        OBJECTIVES[name] = cls
        return cls

    return register


def lr_factor(epoch: int, epochs: int, decay_epochs: int) -> float:
    """--lr-decay-epochs N (CycleGAN's schedule): the rates hold for the first ``epochs − N`` epochs, then
    fall linearly, N/(N+1), (N−1)/(N+1), … 1/(N+1) of the set rate in the last N — towards 0, never 0."""
    into = epoch - (epochs - decay_epochs) + 1  # 1 in the first decaying epoch
    return 1.0 if decay_epochs <= 0 or into <= 0 else 1.0 - into / (decay_epochs + 1)


def wrap(module: nn.Module, world: int, device: torch.device) -> nn.Module:
    """``module`` in DistributedDataParallel when the run has more than one process, else itself."""
    if world <= 1:
        return module
    return DDP(module, device_ids=[device.index] if device.type == "cuda" else None)


def no_sync(module: nn.Module) -> AbstractContextManager[Any]:
    """Keep a frozen network's step out of DDP's gradient sync (a no-op outside DDP)."""
    return module.no_sync() if isinstance(module, DDP) else contextlib.nullcontext()


class Objective:
    """The losses and optimisation steps of one family of models.

    ``g`` is the generator (a decoder for autoencoders), ``d`` the second network: the discriminator,
    critic or encoder. The objective builds its optimisers and wraps the networks for DDP; ``step``
    trains one real batch x (B, C, H, W) in [-1, 1] with labels y (B,). ``options`` lists the options
    that only this objective reads (another family's run refuses them, see ``training/options.py``).
    """

    options: tuple[str, ...] = ()
    pretrain_epochs: int = 0  # epochs of ``pretrain_step`` before the first (ACGAN's classifier pretraining)

    def __init__(self, opts: TrainOptions, g: nn.Module, d: nn.Module, data: ImageData, conditional: bool,
                 world: int, device: torch.device) -> None:
        self.opts, self.g_raw, self.d_raw, self.device = opts, g, d, device
        self.num_classes, self.conditional, self.world = len(data.class_names), conditional, world
        self.optimizers: dict[str, tuple[torch.optim.Optimizer, float]] = {}  # name → (optimiser, its set rate)

    # -- what the loop asks of every objective

    def step(self, x: torch.Tensor, y: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        """One optimisation step; ``step`` counts the steps before it. → the losses, as tensors."""
        raise NotImplementedError

    def pretrain_step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError(f"{type(self).__name__} has no pretraining")

    def real_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """The label each training image is judged with (the dataset's, unless the objective finds its own)."""
        return labels

    def start_epoch(self, epoch: int, images: torch.Tensor) -> dict[str, float]:
        """Work before epoch ``epoch`` (0-based) on the training images; → numbers to log."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {f"opt_{name}": opt.state_dict() for name, (opt, _) in self.optimizers.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Adam's moments carry over; its settings are these options' (load_state_dict brings back the saved
        lr and betas, which would silently ignore e.g. `--resume --lr-g 5e-5` to anneal a run)."""
        for name, (opt, _) in self.optimizers.items():
            if state.get(f"opt_{name}"):
                opt.load_state_dict(state[f"opt_{name}"])
        for group, lr in self.param_groups():
            group["lr"], group["betas"] = lr, (self.opts.beta1, self.opts.beta2)

    def set_epoch_rates(self, epoch: int) -> float:
        """Every optimiser's rate for epoch ``epoch`` (0-based) under --lr-decay-epochs; → the factor applied.
        Set at every epoch's start, so a resumed run is on the schedule its options say."""
        factor = lr_factor(epoch, self.opts.epochs, self.opts.lr_decay_epochs)
        for group, lr in self.param_groups():
            group["lr"] = lr * factor
        return factor

    def param_groups(self) -> Iterator[tuple[dict[str, Any], float]]:
        """Every optimiser parameter group with its set rate (--lr-g for G's, --lr-d for D's)."""
        for opt, lr in self.optimizers.values():
            for group in opt.param_groups:
                yield group, lr

    # -- shared by the steps

    def adam(self, name: str, params: Any, lr: float) -> torch.optim.Optimizer:
        opt = torch.optim.Adam(params, lr=lr, betas=(self.opts.beta1, self.opts.beta2))
        self.optimizers[name] = (opt, lr)
        return opt

    def latent(self, b: int) -> torch.Tensor:
        """A batch of prior latents (B, z_dim) from the global generator (seeded by the run)."""
        return torch.randn(b, self.opts.z_dim, device=self.device)

    def fake_labels(self, b: int) -> torch.Tensor | None:
        """Uniform labels (B,) for a conditional family's fakes; None for an unconditional one."""
        if not self.conditional:
            return None
        return torch.randint(0, self.num_classes, (b,), device=self.device)

"""Learning-rate schedules, with torch.optim.lr_scheduler's names: pass one as
`schedule=` to any optimizer, or assign `trainer.schedule` (never rebuilds)."""
from nncc.compiler.schedules import CosineAnnealingLR, ExponentialLR, LinearWarmup, StepLR

__all__ = ["StepLR", "ExponentialLR", "CosineAnnealingLR", "LinearWarmup"]

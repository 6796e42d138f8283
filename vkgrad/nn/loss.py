"""Loss modules: each holds its options and calls the function of the same name in
nn.functional, where the math is stated.

>>> loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
>>> loss = loss_fn(logits, labels)
"""
from . import functional as F
from .module import Module

__all__ = ["CrossEntropyLoss", "NLLLoss", "MSELoss", "L1Loss", "BCEWithLogitsLoss",
           "MultiMarginLoss", "BCELoss", "SmoothL1Loss", "HuberLoss", "KLDivLoss",
           "CosineSimilarity"]


class _Loss(Module):
    def __init__(self, reduction="mean"):
        super().__init__()
        F._check_reduction(reduction, type(self).__name__)
        self.reduction = reduction


class _WeightedLoss(_Loss):
    """A loss with per-class weights, kept as a buffer so that it moves with to()."""

    def __init__(self, weight=None, reduction="mean"):
        super().__init__(reduction)
        self.register_buffer("weight", weight)


class CrossEntropyLoss(_WeightedLoss):
    """F.cross_entropy: log_softmax of logits [N, C, ...] against labels [N, ...] (or class
    probabilities), with class weights, ignore_index and label smoothing."""

    def __init__(self, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        super().__init__(weight, reduction)
        self.ignore_index, self.label_smoothing = ignore_index, label_smoothing

    def forward(self, input, target):
        return F.cross_entropy(input, target, self.weight, self.ignore_index, self.reduction,
                               self.label_smoothing)


class NLLLoss(_WeightedLoss):
    """F.nll_loss: -weight[t] * logp[t] for log-probabilities [N, C, ...] and labels [N, ...]."""

    def __init__(self, weight=None, ignore_index=-100, reduction="mean"):
        super().__init__(weight, reduction)
        self.ignore_index = ignore_index

    def forward(self, input, target):
        return F.nll_loss(input, target, self.weight, self.ignore_index, self.reduction)


class MSELoss(_Loss):
    """F.mse_loss: (input - target)^2."""

    def forward(self, input, target):
        return F.mse_loss(input, target, self.reduction)


class L1Loss(_Loss):
    """F.l1_loss: |input - target|."""

    def forward(self, input, target):
        return F.l1_loss(input, target, self.reduction)


class BCEWithLogitsLoss(_WeightedLoss):
    """F.binary_cross_entropy_with_logits: sigmoid and binary cross entropy in one stable step."""

    def __init__(self, weight=None, reduction="mean", pos_weight=None):
        super().__init__(weight, reduction)
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, input, target):
        return F.binary_cross_entropy_with_logits(input, target, self.weight, self.reduction,
                                                  self.pos_weight)


class MultiMarginLoss(_WeightedLoss):
    """F.multi_margin_loss: sum over i != y of max(0, margin - x[y] + x[i])^p / C."""

    def __init__(self, p=1, margin=1.0, weight=None, reduction="mean"):
        super().__init__(weight, reduction)
        if p not in (1, 2):
            raise ValueError(f"MultiMarginLoss: p must be 1 or 2, not {p}")
        self.p, self.margin = p, margin

    def forward(self, input, target):
        return F.multi_margin_loss(input, target, self.p, self.margin, self.weight,
                                   self.reduction)


class BCELoss(_WeightedLoss):
    """F.binary_cross_entropy: -w [y log x + (1 - y) log(1 - x)] of probabilities x, logs
    clamped at -100."""

    def forward(self, input, target):
        return F.binary_cross_entropy(input, target, self.weight, self.reduction)


class SmoothL1Loss(_Loss):
    """F.smooth_l1_loss: 0.5 d^2 / beta where |d| < beta, else |d| - 0.5 beta."""

    def __init__(self, reduction="mean", beta=1.0):
        super().__init__(reduction)
        self.beta = beta

    def forward(self, input, target):
        return F.smooth_l1_loss(input, target, self.reduction, self.beta)


class HuberLoss(_Loss):
    """F.huber_loss: 0.5 d^2 where |d| < delta, else delta (|d| - 0.5 delta)."""

    def __init__(self, reduction="mean", delta=1.0):
        super().__init__(reduction)
        self.delta = delta

    def forward(self, input, target):
        return F.huber_loss(input, target, self.reduction, self.delta)


class KLDivLoss(Module):
    """F.kl_div: target * (log target - input) for log-probabilities input (log_target: the
    target as log-probabilities too); reduction "batchmean" divides the sum by the batch size."""

    def __init__(self, reduction="mean", log_target=False):
        super().__init__()
        if reduction not in F._REDUCTIONS + ("batchmean",):
            raise ValueError(f"KLDivLoss: reduction must be one of "
                             f"{F._REDUCTIONS + ('batchmean',)}, not {reduction!r}")
        self.reduction, self.log_target = reduction, log_target

    def forward(self, input, target):
        return F.kl_div(input, target, self.reduction, self.log_target)


class CosineSimilarity(Module):
    """F.cosine_similarity of two inputs along `dim`, norms clamped below at eps."""

    def __init__(self, dim=1, eps=1e-8):
        super().__init__()
        self.dim, self.eps = dim, eps

    def forward(self, x1, x2):
        return F.cosine_similarity(x1, x2, self.dim, self.eps)

"""Losses: the cross-task loss and the balancing between its two groups."""
from losses.balancing import (BALANCERS, GRADNORM_FORMS, GradNorm, GradNormOriginal, GradNormPaper, LossBalancer,
                              UncertaintyWeights, make_balancer)
from losses.xtask import COMPONENT_NAMES, XTaskLoss, XTaskLossTerms

__all__ = ["BALANCERS", "COMPONENT_NAMES", "GRADNORM_FORMS", "GradNorm", "GradNormOriginal", "GradNormPaper",
           "LossBalancer", "UncertaintyWeights", "XTaskLoss", "XTaskLossTerms", "make_balancer"]

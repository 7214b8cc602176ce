"""Losses: the cross-task loss and the balancing between its two groups."""
from losses.balancing import BALANCING_METHODS, GradNorm, LossBalancer, UncertaintyWeights, make_balancer
from losses.xtask import XTaskLoss, XTaskLossTerms

__all__ = ["BALANCING_METHODS", "GradNorm", "LossBalancer", "UncertaintyWeights", "XTaskLoss",
           "XTaskLossTerms", "make_balancer"]

"""Losses: the cross-task loss and the balancing between its groups."""
from losses.balancing import (ADALSP_FORMS, BALANCERS, BALANCING_FORMS, DWA, DWA_FORMS, GRADNORM_FORMS, PCGRAD_FORMS,
                              AdaLSP, AdaLSPOriginal, AdaLSPPaper, DWAOriginal, DWAPaper, GradNorm, GradNormOriginal,
                              GradNormPaper, LossBalancer, PCGrad, PCGradOriginal, PCGradPaper, UncertaintyWeights,
                              make_balancer)
from losses.xtask import COMPONENT_NAMES, XTaskLoss, XTaskLossTerms

__all__ = ["ADALSP_FORMS", "AdaLSP", "AdaLSPOriginal", "AdaLSPPaper", "BALANCERS", "BALANCING_FORMS",
           "COMPONENT_NAMES", "DWA", "DWAOriginal", "DWAPaper", "DWA_FORMS", "GRADNORM_FORMS", "GradNorm",
           "GradNormOriginal", "GradNormPaper", "LossBalancer", "PCGRAD_FORMS", "PCGrad", "PCGradOriginal",
           "PCGradPaper", "UncertaintyWeights", "XTaskLoss", "XTaskLossTerms", "make_balancer"]

"""Step distillation of a pyramidal (or the original) Wan into a few-step student (distill.md):
DMD2 with the original (OT) or the pyramidal (PT, PT*) teacher, and adversarial distillation on
frozen teacher features; the conventional student is the one-stage case. The student's card
locks its recipe, which the studio runs and enforces (:class:`core.fewstep.FewStepRecipe`).

    python -m finetune distill --method dmd-pt-star --base mini --teacher models/mini-pyramidal \\
        --student-plan 2-2-1 --data world:256 --steps 300 --out models/mini-distilled
"""

from .config import LABELS, METHODS, DistillConfig, validate_config
from .loop import DistillResult, train

__all__ = ["LABELS", "METHODS", "DistillConfig", "DistillResult", "train", "validate_config"]

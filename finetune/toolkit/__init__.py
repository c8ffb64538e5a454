"""What every training loop in :mod:`finetune` shares, so that each loop reads as a flat script.

* :mod:`.config`: typed settings: ranges, choices and help declared on the dataclass fields
  (:func:`setting`), checked generically (:func:`check_fields`), and command-line flags derived
  from the same fields (:func:`add_flags`, :func:`config_from_flags`).
* :mod:`.state`: the learning-rate schedule, the EMA of the weights, the seeded data order, the
  random streams, and one resumable state file (:class:`Resumable`).
* :mod:`.checkpoint`: cards fit to ship (no absolute path of the training machine).
* :mod:`.loss`: the pyramidal flow-matching loss of one stage, for training and evaluation alike.
"""

from finetune.toolkit.checkpoint import write_card
from finetune.toolkit.config import (ConfigError, add_flags, check_fields, config_from_dict, config_from_flags,
                                     setting)
from finetune.toolkit.loss import StageLoss, stage_loss
from finetune.toolkit.state import (EMA, DataOrder, Resumable, read_state, rng_state, scheduled_lr, set_lr,
                                    set_rng_state)

__all__ = ["ConfigError", "DataOrder", "EMA", "Resumable", "StageLoss", "add_flags", "check_fields",
           "config_from_dict", "config_from_flags", "read_state", "rng_state", "scheduled_lr", "set_lr",
           "set_rng_state", "setting", "stage_loss", "write_card"]

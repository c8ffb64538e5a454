"""Finetuning Wan into a pyramidal model (pyramid.md section 7), and the mini-world recipe.

* :mod:`finetune.toolkit`: what every training loop shares: settings checked from field
  metadata and CLI flags derived from them, EMA, data order, RNG and resumable state, the
  learning-rate schedule, cards, the per-stage loss.
* :mod:`finetune.targets`: the section-7 target, a pure function.
* :mod:`finetune.data`: clips (captioned video folders, teacher-generated, the mini world) and
  their cache of VAE latents at every stage resolution plus text embeddings.
* :mod:`finetune.pyramidal`: ``TrainConfig``, ``validate_config``, ``train`` (full or LoRA, EMA,
  bf16, gradient checkpointing, resume, accelerate), ``evaluate``.
* :mod:`finetune.tiny_decoder`: distils a VAE decoder into a tiny one.
* :mod:`finetune.mini_vae`, :mod:`finetune.mini_world`: the recipe of the shipped mini models.
* ``python -m finetune pyramidal --base tiny --data world:8 --steps 200 --out NAME``.
* :mod:`finetune.world`, :mod:`finetune.scorer`: the procedural mini world and its scorer.
"""

"""Finetuning Wan into a pyramidal model (pyramid.md section 7).

* :mod:`finetune.targets`: the section-7 target, a pure function.
* :mod:`finetune.data`: clips (captioned video folders, teacher-generated, the mini world) and
  their cache of VAE latents at every stage resolution plus text embeddings.
* :mod:`finetune.pyramidal`: ``TrainConfig``, ``validate_config``, ``train`` (full or LoRA, EMA,
  bf16, gradient checkpointing, resume, accelerate), ``evaluate``.
* ``python -m finetune pyramidal --base tiny --data world:8 --steps 200 --out NAME``.
* :mod:`finetune.world`, :mod:`finetune.scorer`: the procedural mini world and its scorer.
"""

"""USER-LLM embedding agents: a user encoder over the interaction history (per-event early fusion + causal
Transformer, pretrained on next-event prediction), a Perceiver resampler to a fixed number of user tokens, and
(next) their integration into a frozen backbone by gated cross-attention or as a soft prompt.

Modules: :mod:`.config` (settings, light), :mod:`.events` (histories as event sequences, numpy),
:mod:`.encoder` (the torch modules), :mod:`.pretrain` (pretraining, the ``user-encoder`` artifact, next-item
evaluation). Nothing heavy is imported here.
"""

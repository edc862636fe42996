"""DLA computed in bfloat16, to set beside the float32 ``dla`` run of ``dla_vs_atss.py`` by seed
(docs/reproduction.md#float32-and-bfloat16-2026-12-02): parameters, GroupNorm statistics,
decoding, the assigner and the losses stay float32 (``model.dtype``)."""


def get_sweep():
  return {'dla_bfloat16': ['--config.model.dtype=bfloat16']}

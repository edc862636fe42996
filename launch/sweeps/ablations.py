"""The paper's ablations of DLA (docs/reproduction.md#alpha-k-and-gamma-on-the-2026-12-01-code),
each against the default DLA run (dynamic alpha, k = 10, gamma = 1: the ``dla`` run of
``dla_vs_atss.py``):

- Table 2: alpha fixed at 1.0, 0.9 and 0.8 instead of the dynamic schedule;
- Table 3: k (candidates per FPN level) in 5, 15 and 20;
- Table 4: gamma (regression weight w = m ** gamma) in 0, 0.5 and 1.5.
"""


def get_sweep():
  sweep = {}
  for alpha in (1.0, 0.9, 0.8):
    sweep[f'alpha_fixed_{alpha}'] = ['--config.assigner.alpha_schedule=fixed',
                                     f'--config.assigner.fixed_alpha={alpha}']
  for k in (5, 15, 20):
    sweep[f'k_{k}'] = [f'--config.assigner.topk={k}']
  for gamma in (0.0, 0.5, 1.5):
    sweep[f'gamma_{gamma}'] = [f'--config.assigner.gamma={gamma}']
  return sweep

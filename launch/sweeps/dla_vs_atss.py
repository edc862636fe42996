"""DLA against the ATSS baseline, anchor-free and anchor-based, identical recipe otherwise
(the paper's Table 5):

- ``dla``: the paper's method;
- ``atss``: ATSS as its authors ran it: centerness head and loss, ATSS's assigner, k = 9
  (``configs/atss_r50_fpn_1x_coco.py``'s overrides);
- ``atss_assigner``: an ablation, ATSS's assigner (m = IoU_prior) with everything else DLA's:
  metric branch trained towards IoU_prior, GIoU weighted by it, k = 10. It isolates the
  assigner.

Each has an ``_anchor`` twin with anchor-based priors.
"""

ATSS = ['--config.model.head=atss', '--config.assigner.name=atss', '--config.assigner.topk=9']
ATSS_ASSIGNER = ['--config.assigner.name=atss']


def get_sweep():
  sweep = {'dla': [], 'atss': ATSS, 'atss_assigner': ATSS_ASSIGNER}
  sweep.update({f'{name}_anchor': [*overrides, '--config.model.prior=anchor']
                for name, overrides in list(sweep.items())})
  return sweep

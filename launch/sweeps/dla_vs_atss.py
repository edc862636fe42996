"""DLA against the ATSS baseline, anchor-free and anchor-based, identical recipe otherwise
(the paper's Table 1 comparison, issue 9)."""


def get_sweep():
  return {
      'dla': ['--config.assigner.name=dla'],
      'atss': ['--config.assigner.name=atss'],
      'dla_anchor': ['--config.assigner.name=dla', '--config.model.prior=anchor'],
      'atss_anchor': ['--config.assigner.name=atss', '--config.model.prior=anchor'],
  }

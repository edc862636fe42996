"""Every link to a section of the docs, from the code, configs, launch scripts, tests, notebooks,
README and docs, names a heading that exists (as GitHub makes a heading's anchor)."""

import collections
import pathlib
import re

REPO = pathlib.Path(__file__).resolve().parent.parent
SEARCHED = ('dla_jax', 'configs', 'launch', 'tests', 'colabs', 'docs', 'README.md')
# 'docs/performance.md#the-main-job' in code and text; '(reproduction.md#setup)' and '(#setup)'
# in markdown links.
_LINK = re.compile(r'(?P<file>[\w./-]*\.md)?#(?P<anchor>[\w-]+)')


def anchors(markdown: str) -> set[str]:
  """The anchors GitHub gives the headings of ``markdown``: lower case, punctuation but '-' and
  '_' dropped, spaces as '-', and '-1', '-2', ... after a repeated one. Code blocks hold none."""
  found, seen, fenced = set(), collections.Counter(), False
  for line in markdown.splitlines():
    if line.startswith('```'):
      fenced = not fenced
    heading = re.match(r'#{1,6} (.*)', line)
    if heading and not fenced:
      slug = re.sub(r'[^\w\- ]', '', heading.group(1).strip().lower()).replace(' ', '-')
      found.add(f'{slug}-{seen[slug]}' if seen[slug] else slug)
      seen[slug] += 1
  return found


def broken_links(path: pathlib.Path, root: pathlib.Path) -> list[str]:
  """'FILE: LINK' for each link in ``path`` to a section of a markdown file under ``root`` that
  has no such heading. A file is looked up beside ``path``, then from ``root``; a bare '#anchor'
  (markdown only) is a section of ``path`` itself."""
  text = path.read_text()
  broken = []
  for match in _LINK.finditer(text):
    name = match['file']
    if name is None:
      if path.suffix != '.md' or text[match.start() - 2:match.start()] != '](':
        continue  # a '#' in code or prose, not a link
      target = path
    else:
      target = next((t for t in (path.parent / name, root / name) if t.is_file()), None)
      if target is None:
        if name.startswith(('docs/', '../docs/')) or path.suffix == '.md':
          broken.append(f'{path.relative_to(root)}: {match[0]} (no such file)')
        continue
    if match['anchor'] not in anchors(target.read_text()):
      broken.append(f'{path.relative_to(root)}: {match[0]}')
  return broken


def _searched_files():
  for name in SEARCHED:
    top = REPO / name
    files = [top] if top.is_file() else sorted(top.rglob('*'))
    yield from (f for f in files if f.suffix in ('.py', '.md', '.sh', '.ipynb') and
                f != pathlib.Path(__file__).resolve())  # this file's examples link nowhere


def test_every_link_to_a_docs_section_names_an_existing_heading():
  broken = [b for f in _searched_files() for b in broken_links(f, REPO)]
  assert not broken, '\n'.join(broken)


def test_a_link_to_a_missing_or_repeated_heading_is_reported(tmp_path):
  (tmp_path / 'docs').mkdir()
  (tmp_path / 'docs' / 'guide.md').write_text(
      '# Guide\n\n## Speed: CPU, 2 cores — 2026-11-28\n\n### Results\n\n### Results\n\n'
      '```\n# not a heading\n```\n\n[up](#guide)\n[gone](#setup)\n')
  code = tmp_path / 'module.py'
  code.write_text('"""Figures: docs/guide.md#speed-cpu-2-cores--2026-11-28, '
                  'docs/guide.md#results-1, docs/guide.md#results-2, '
                  'docs/guide.md#not-a-heading, docs/missing.md#guide."""\n')
  assert broken_links(code, tmp_path) == [
      'module.py: docs/guide.md#results-2', 'module.py: docs/guide.md#not-a-heading',
      'module.py: docs/missing.md#guide (no such file)']
  assert broken_links(tmp_path / 'docs' / 'guide.md', tmp_path) == ['docs/guide.md: #setup']

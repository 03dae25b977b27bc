import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { LabelMapper, globRegExp } from './labels';
import type { LabelPolicy } from './labels';
import { loadLabelRules } from './labelrules';

const FULL: LabelPolicy = { pathLabel: 'full', pathDepth: 3, nameLabel: true };
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'filewatcher-rules-'));
let n = 0;
const file = (text: string): string => {
  const f = path.join(dir, `rules-${n++}.yml`);
  fs.writeFileSync(f, text);
  return f;
};

describe('globRegExp', () => {
  const cases: Array<[glob: string, path: string, matches: boolean]> = [
    ['/tmp/**', '/tmp/a', true],
    ['/tmp/**', '/tmp/a/b/c', true],
    ['/tmp/**', '/tmpx/a', false],
    ['/tmp/**', '/tmp', false],
    ['/tmp/*', '/tmp/a', true],
    ['/tmp/*', '/tmp/a/b', false],
    ['/home/*/.cache/**', '/home/ann/.cache/x/y', true],
    ['/home/*/.cache/**', '/home/ann/bob/.cache/x', false],
    ['/a/**/b', '/a/b', true],
    ['/a/**/b', '/a/x/y/b', true],
    ['/a/**/b', '/a/xb', false],
    ['/log/?.log', '/log/1.log', true],
    ['/log/?.log', '/log/12.log', false],
    ['/a.b/(x)+', '/a.b/(x)+', true],
    ['/a.b/(x)+', '/aXb/(x)+', false],
    ['/tmp/**', '/tmp/new\nline', true],
    ['/data/é/*', '/data/é/f', true],
  ];
  for (const [glob, p, want] of cases) {
    it(`${glob} ${want ? 'matches' : 'does not match'} ${JSON.stringify(p)}`, () =>
      assert.equal(globRegExp(glob).test(Buffer.from(p).toString('latin1')), want));
  }
  it('matches names that are not UTF-8 byte for byte', () => {
    const p = Buffer.from('/tmp/\xff\xfe', 'latin1').toString('latin1');
    assert.ok(globRegExp('/tmp/*').test(p));
  });
});

describe('LabelMapper with rules', () => {
  const rules = loadLabelRules(
    file(
      [
        'rules:',
        '  - match: /home/*/.cache/**',
        '    path: /home/*/.cache',
        "    name: ''",
        '  - match: /tmp/**',
        '    path: /tmp',
        '  - match: /var/lib/docker/**',
        "    name: ''",
        '',
      ].join('\n'),
    ),
    FULL,
  );
  const m = new LabelMapper({ ...FULL, rules });
  const cases: Array<[string, object]> = [
    ['/home/ann/.cache/pip/x.whl', { name: '', path: '/home/*/.cache' }],
    ['/home/bob/.cache/a', { name: '', path: '/home/*/.cache' }],
    ['/tmp/sub/dir/f1', { name: 'f1', path: '/tmp' }],
    [
      '/var/lib/docker/overlay2/abc/diff/f',
      { name: '', path: '/var/lib/docker/overlay2/abc/diff' },
    ],
    ['/etc/passwd+', { name: 'passwd+', path: '/etc' }], // no rule: as without rules
  ];
  for (const [p, want] of cases) {
    it(`${p} → ${JSON.stringify(want)}`, () => assert.deepEqual(m.labels(Buffer.from(p), 0), want));
  }

  it('gives equal keys exactly to paths with equal labels', () => {
    const paths = [
      '/home/ann/.cache/a',
      '/home/bob/.cache/b/c',
      '/tmp/x/f',
      '/tmp/y/f',
      '/tmp/f',
      '/tmp/g',
      '/var/lib/docker/a/f',
      '/var/lib/docker/a/g',
      '/var/lib/docker/b/f',
      '/etc/f',
      '/etc/g',
    ].map((p) => Buffer.from(p));
    for (const a of paths) {
      for (const b of paths) {
        const sameKey = m.key(a, 0) === m.key(b, 0);
        const sameLabels = JSON.stringify(m.labels(a, 0)) === JSON.stringify(m.labels(b, 0));
        assert.equal(sameKey, sameLabels, `${a.toString()} ${b.toString()}`);
      }
    }
  });

  it('leaves paths without a directory to the usual labels', () => {
    assert.deepEqual(m.labels(Buffer.from('tmp'), 0), { name: 'tmp', path: '<unresolved>' });
  });
});

describe('loadLabelRules refuses bad files with the file, the rule and the setting', () => {
  const cases: Array<[text: string, policy: Partial<LabelPolicy>, error: RegExp]> = [
    ['rules: [}', {}, /rules-\d+\.yml: /],
    ['rule: []', {}, /want a top-level list "rules:"/],
    ['rules: []\nextra: 1', {}, /unknown setting extra/],
    ['rules: [{match: tmp/**, path: /tmp}]', {}, /rule 1: match must be a glob of absolute paths/],
    ['rules: [{match: /tmp/**}]', {}, /rule 1: set path, name or both/],
    ['rules: [{match: /a, path: /a}, {match: /b, paht: /b}]', {}, /rule 2: unknown setting paht/],
    ['rules: [{match: /a, path: ""}]', {}, /rule 1: path must not be empty/],
    ['rules: [{match: /a, name: 3}]', {}, /rule 1: name must be a string/],
    ['rules: [{match: /a, path: /a}]', { pathLabel: 'none' }, /--path-label none has no path/],
    ['rules: [{match: /a, name: x}]', { nameLabel: false }, /--name-label false has no name/],
    [`rules: [{match: /a, name: ${'x'.repeat(1025)}}]`, {}, /longer than 1024 bytes/],
  ];
  for (const [text, policy, error] of cases) {
    it(`${text.slice(0, 60)} → ${error.source}`, () =>
      assert.throws(() => loadLabelRules(file(text), { ...FULL, ...policy }), error));
  }
  it('names a file that cannot be read', () =>
    assert.throws(() => loadLabelRules(path.join(dir, 'absent.yml'), FULL), /absent\.yml: ENOENT/));
});

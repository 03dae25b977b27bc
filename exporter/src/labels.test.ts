import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isUtf8 } from 'node:buffer';
import {
  LabelMapper,
  MAX_LABEL_VALUE_BYTES,
  UNRESOLVED_PATH,
  boundLabelValue,
  labelValue,
} from './labels';
import type { LabelPolicy } from './labels';
import { EVENT_FLAG_PATH_UNRESOLVED } from './proto';

const FULL: LabelPolicy = { pathLabel: 'full', pathDepth: 3, nameLabel: true };

describe('LabelMapper.labels', () => {
  const cases: Array<{ policy: Partial<LabelPolicy>; path: string; flags?: number; want: object }> =
    [
      { policy: {}, path: '/tmp/riptides-demo', want: { name: 'riptides-demo', path: '/tmp' } },
      { policy: {}, path: '/a/b/c/d/file', want: { name: 'file', path: '/a/b/c/d' } },
      { policy: {}, path: '/file', want: { name: 'file', path: '/' } },
      { policy: {}, path: '/dir/', want: { name: '', path: '/dir' } },
      { policy: {}, path: 'file', want: { name: 'file', path: UNRESOLVED_PATH } },
      {
        policy: {},
        path: 'file',
        flags: EVENT_FLAG_PATH_UNRESOLVED,
        want: { name: 'file', path: UNRESOLVED_PATH },
      },
      {
        policy: { pathLabel: 'depth', pathDepth: 2 },
        path: '/a/b/c/d/file',
        want: { name: 'file', path: '/a/b' },
      },
      {
        policy: { pathLabel: 'depth', pathDepth: 1 },
        path: '/a/b/c/d/file',
        want: { name: 'file', path: '/a' },
      },
      {
        policy: { pathLabel: 'depth', pathDepth: 4 },
        path: '/a/b/c/d/file',
        want: { name: 'file', path: '/a/b/c/d' },
      },
      {
        policy: { pathLabel: 'depth', pathDepth: 9 },
        path: '/a/b/file',
        want: { name: 'file', path: '/a/b' },
      },
      {
        policy: { pathLabel: 'depth', pathDepth: 2 },
        path: '/file',
        want: { name: 'file', path: '/' },
      },
      { policy: { pathLabel: 'none' }, path: '/a/b/file', want: { name: 'file' } },
      { policy: { nameLabel: false }, path: '/a/b/file', want: { path: '/a/b' } },
      { policy: { pathLabel: 'none', nameLabel: false }, path: '/a/b/file', want: {} },
    ];
  for (const c of cases) {
    it(`${JSON.stringify(c.policy)} ${c.path} flags=${c.flags ?? 0}`, () => {
      const mapper = new LabelMapper({ ...FULL, ...c.policy });
      assert.deepEqual(mapper.labels(Buffer.from(c.path), c.flags ?? 0), c.want);
    });
  }

  it('puts name before path, as the seed output', () => {
    const labels = new LabelMapper(FULL).labels(Buffer.from('/x/y'), 0);
    assert.deepEqual(Object.keys(labels), ['name', 'path']);
  });
});

describe('LabelMapper.key', () => {
  // Equal keys must mean equal labels and different labels different keys.
  const paths = [
    '/a/b/c/f1',
    '/a/b/c/f2',
    '/a/b/d/f1',
    '/a/b/f1',
    '/f1',
    'f1',
    '/a/b\xff/f1',
    '/a/b/c/d/e/f1',
  ].map((p) => Buffer.from(p, 'latin1'));
  const policies: LabelPolicy[] = [
    FULL,
    { ...FULL, pathLabel: 'depth', pathDepth: 2 },
    { ...FULL, pathLabel: 'none' },
    { ...FULL, nameLabel: false },
    { ...FULL, pathLabel: 'depth', pathDepth: 1, nameLabel: false },
  ];
  for (const policy of policies) {
    it(`is injective on label sets for ${JSON.stringify(policy)}`, () => {
      const mapper = new LabelMapper(policy);
      for (const a of paths) {
        for (const b of paths) {
          const sameKey = mapper.key(a, 0) === mapper.key(b, 0);
          const sameLabels =
            JSON.stringify(mapper.labels(a, 0)) === JSON.stringify(mapper.labels(b, 0));
          assert.equal(sameKey, sameLabels, `${a.toString('latin1')} vs ${b.toString('latin1')}`);
        }
      }
    });
  }

  it('keeps an unresolved name apart from a resolved path', () => {
    const mapper = new LabelMapper(FULL);
    assert.notEqual(
      mapper.key(Buffer.from('f'), EVENT_FLAG_PATH_UNRESOLVED),
      mapper.key(Buffer.from('/f'), 0),
    );
  });
});

describe('labelValue', () => {
  const cases: Array<[string, number[], string]> = [
    ['ascii', [...Buffer.from('riptides-demo')], 'riptides-demo'],
    ['valid multibyte', [...Buffer.from('héllo-日本-😀')], 'héllo-日本-😀'],
    [
      'quotes, backslash, newline stay (the serializer escapes them)',
      [...Buffer.from('a"b\\c\nd')],
      'a"b\\c\nd',
    ],
    ['lone continuation byte', [0x61, 0x80, 0x62], 'a\\x80b'],
    ['latin1 é', [0x63, 0x61, 0x66, 0xe9], 'caf\\xe9'],
    ['truncated sequence', [0xe6, 0x97], '\\xe6\\x97'],
    ['overlong encoding of /', [0xc0, 0xaf], '\\xc0\\xaf'],
    ['surrogate half (CESU)', [0xed, 0xa0, 0x80], '\\xed\\xa0\\x80'],
    ['above U+10FFFF', [0xf4, 0x90, 0x80, 0x80], '\\xf4\\x90\\x80\\x80'],
    ['valid after invalid', [0xff, 0xc3, 0xa9], '\\xffé'],
    ['0xff 0xfe', [0xff, 0xfe], '\\xff\\xfe'],
  ];
  for (const [name, bytes, want] of cases) {
    it(name, () => assert.equal(labelValue(Buffer.from(bytes)), want));
  }

  it('always returns well-formed UTF-16 that round-trips through UTF-8', () => {
    for (let i = 0; i < 2000; i++) {
      const bytes = Buffer.from(
        Array.from({ length: 1 + (i % 12) }, () => (Math.random() * 256) | 0),
      );
      const value = labelValue(bytes);
      assert.equal(Buffer.from(value, 'utf8').toString('utf8'), value);
      assert.ok(!value.includes('\ufffd'), `replacement character for ${bytes.toString('hex')}`);
    }
  });
});

describe('bounded label values', () => {
  const mapper = new LabelMapper(FULL);
  const utf8Bytes = (s: string): number => Buffer.byteLength(s, 'utf8');
  // The crafted name of the access review: 4,095 bytes, none of them UTF-8,
  // 16 KiB as \xNN escapes.
  const crafted = (last: number): Buffer => {
    const b = Buffer.alloc(4095, 0xff);
    b[0] = 0x2f; // "/"
    b[4094] = last;
    return b;
  };

  it('cuts a crafted 4,095-byte non-UTF-8 name to the bound, with a stable hash', () => {
    const a = mapper.labels(crafted(0xfe), 0).name as string;
    const b = mapper.labels(crafted(0xfd), 0).name as string;
    assert.ok(utf8Bytes(a) <= MAX_LABEL_VALUE_BYTES, `${utf8Bytes(a)} bytes`);
    assert.ok(utf8Bytes(a) > MAX_LABEL_VALUE_BYTES - 8, 'keeps as much as fits');
    assert.ok(isUtf8(Buffer.from(a)));
    assert.match(a, /^(\\xff)+\\?x?f?f?…~[0-9a-f]{16}$/);
    assert.notEqual(a, b, 'names that differ only past the cut stay distinct');
    assert.equal(mapper.labels(crafted(0xfe), 0).name, a, 'the same name, the same value');
  });

  it('leaves values up to the bound alone and cuts at a character boundary', () => {
    const fits = 'x'.repeat(MAX_LABEL_VALUE_BYTES);
    assert.equal(boundLabelValue(fits), fits);
    const over = 'é'.repeat(MAX_LABEL_VALUE_BYTES); // 2 bytes each
    const cut = boundLabelValue(over);
    assert.ok(utf8Bytes(cut) <= MAX_LABEL_VALUE_BYTES);
    assert.match(cut, /^é+…~[0-9a-f]{16}$/, 'no broken character before the suffix');
    assert.equal(
      boundLabelValue('x'.repeat(MAX_LABEL_VALUE_BYTES + 1)).length,
      MAX_LABEL_VALUE_BYTES - 2, // "…" is 3 bytes, 1 character
    );
  });

  it('bounds the directory label too', () => {
    const dir = `/${'d'.repeat(3000)}`;
    const { path } = mapper.labels(Buffer.from(`${dir}/f`), 0);
    assert.ok(utf8Bytes(path as string) <= MAX_LABEL_VALUE_BYTES);
    assert.ok((path as string).startsWith('/ddd'));
  });
});

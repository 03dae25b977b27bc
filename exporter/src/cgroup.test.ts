import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { CgroupResolver, ROOT_SERVICE, UNKNOWN_SERVICE, cgroup2Root, serviceOf } from './cgroup';
import { LabelMapper } from './labels';
import { SeriesTable } from './series';
import { waitFor } from './testing/helpers';

const ID = '0123456789abcdef'.repeat(4);
const POD = 'pod0a1b2c3d_4e5f_6789_abcd_ef0123456789';

describe('serviceOf', () => {
  const cases: Array<[string, string]> = [
    ['/', ROOT_SERVICE],
    ['', ROOT_SERVICE],
    ['/init.scope', 'init.scope'],
    ['/system.slice/nginx.service', 'nginx.service'],
    ['/system.slice/system-getty.slice/getty@tty1.service', 'getty@tty1.service'],
    ['/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service', 'user@1000.service'],
    ['/user.slice/user-1000.slice/session-3.scope', 'user-1000.slice'],
    ['/system.slice/run-u42.scope', 'system.slice'],
    ['/system.slice', 'system.slice'],
    [`/system.slice/docker-${ID}.scope`, 'docker:0123456789ab'],
    [
      `/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-${POD}.slice/cri-containerd-${ID}.scope`,
      'containerd:0123456789ab',
    ],
    [`/kubepods.slice/kubepods-burstable.slice/x/crio-${ID}.scope`, 'crio:0123456789ab'],
    [`/machine.slice/libpod-${ID}.scope`, 'podman:0123456789ab'],
    [`/machine.slice/libpod-conmon-${ID}.scope`, 'podman:0123456789ab'],
    [`/docker/${ID}`, 'docker:0123456789ab'],
    [`/kubepods/besteffort/${POD}/${ID}`, 'container:0123456789ab'],
    [`/system.slice/docker-${ID}.scope/inner/docker/${'f'.repeat(64)}`, 'docker:ffffffffffff'],
    ['/my/own/group', '/my/own/group'],
    ['/weird\nname\u0002', '/weird\\x0aname\\x02'],
  ];
  for (const [p, want] of cases) {
    it(`${JSON.stringify(p)} → ${want}`, () => assert.equal(serviceOf(p), want));
  }
  it('bounds a long path', () =>
    assert.ok(Buffer.byteLength(serviceOf(`/${'x'.repeat(5000)}`)) <= 1024));
});

describe('CgroupResolver', () => {
  /** tree makes directories under a temporary root and returns it with each one's inode number. */
  function tree(...dirs: string[]): { root: string; ino: (d: string) => number } {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'filewatcher-cgroup-'));
    for (const d of dirs) fs.mkdirSync(path.join(root, d), { recursive: true });
    return { root, ino: (d) => Number(fs.statSync(path.join(root, d), { bigint: true }).ino) };
  }

  it('names the cgroup whose directory has the id as its inode number', () => {
    const { root, ino } = tree('system.slice/nginx.service', `system.slice/docker-${ID}.scope`);
    const r = new CgroupResolver({ root });
    r.whenKnown(ino(''), undefined, () => undefined);
    r.flush();
    assert.equal(r.service(ino('system.slice/nginx.service')), 'nginx.service');
    assert.equal(r.service(ino(`system.slice/docker-${ID}.scope`)), 'docker:0123456789ab');
    assert.equal(r.service(ino('')), ROOT_SERVICE);
    assert.equal(r.walks, 1, 'one walk found them all');
    assert.equal(r.service(0), UNKNOWN_SERVICE);
  });

  it('holds events of a new id for the next walk, at most one per interval, and remembers', async () => {
    const { root, ino } = tree('system.slice/a.service');
    const r = new CgroupResolver({ root, rescanIntervalMs: 300 });
    const got: string[] = [];
    const count = (id: number): number => got.push(r.service(id));
    r.whenKnown(ino('system.slice/a.service'), ino('system.slice/a.service'), count);
    assert.deepEqual(got, [], 'held for a walk');
    await waitFor('the first walk', () => got.length === 1);
    assert.deepEqual(got, ['a.service']);
    // A cgroup made right after a walk: its events wait for the next one.
    fs.mkdirSync(path.join(root, 'system.slice/b.service'));
    const b = ino('system.slice/b.service');
    const t0 = Date.now();
    r.whenKnown(b, b, count);
    r.whenKnown(b, b, count);
    await waitFor('the second walk', () => got.length === 3);
    assert.ok(Date.now() - t0 >= 200, 'not before the interval');
    assert.deepEqual(got, ['a.service', 'b.service', 'b.service']);
    assert.equal(r.walks, 2);
    assert.equal(r.held, 3);
    // Gone from the tree: still known (a cgroup id is never reused), at once.
    fs.rmdirSync(path.join(root, 'system.slice/b.service'));
    r.whenKnown(b, b, count);
    assert.deepEqual(got.slice(3), ['b.service']);
    // An id no walk finds is counted after the walk, as <unknown>; 0 at once.
    r.whenKnown(424242424242, 424242424242, count);
    r.whenKnown(0, 0, count);
    assert.deepEqual(got.slice(4), [UNKNOWN_SERVICE]);
    await waitFor('the third walk', () => got.length === 6);
    assert.deepEqual(got.slice(5), [UNKNOWN_SERVICE]);
  });

  it('holds at most maxPending events: one more walks the tree at once', () => {
    const { root, ino } = tree('system.slice/a.service');
    const r = new CgroupResolver({ root, maxPending: 3, rescanIntervalMs: 60_000 });
    const a = ino('system.slice/a.service');
    const got: string[] = [];
    for (let i = 0; i < 2; i++) r.whenKnown(a, a, (id) => got.push(r.service(id)));
    assert.equal(got.length, 0, 'held');
    r.whenKnown(a, a, (id) => got.push(r.service(id)));
    assert.deepEqual(got, ['a.service', 'a.service', 'a.service'], 'the third walked at once');
    assert.equal(r.walks, 1);
  });

  it('gives file_created_total a service label, within the cap', () => {
    const { root, ino } = tree('system.slice/nginx.service', 'system.slice/cron.service');
    const r = new CgroupResolver({ root });
    r.whenKnown(ino(''), undefined, () => undefined);
    r.flush();
    const t = new SeriesTable(
      new LabelMapper({ pathLabel: 'full', pathDepth: 3, nameLabel: true, service: r.service }),
      { limit: 2 },
    );
    const f = Buffer.from('/var/log/x');
    t.record(f, 0, 0, ino('system.slice/nginx.service'));
    t.record(f, 0, 0, ino('system.slice/nginx.service'));
    t.record(f, 0, 0, ino('system.slice/cron.service'));
    t.record(f, 0, 0, 999_999_999); // no such cgroup: the cap is full, overflow
    assert.deepEqual(
      [...t.chunks()]
        .join('')
        .split('\n')
        .filter((l) => l.startsWith('file_created_total')),
      [
        'file_created_total{name="x",path="/var/log",service="nginx.service",otel_scope_name="filewatcher"} 2',
        'file_created_total{name="x",path="/var/log",service="cron.service",otel_scope_name="filewatcher"} 1',
        'file_created_total{otel_metric_overflow="true",otel_scope_name="filewatcher"} 1',
      ],
    );
  });
});

describe('cgroup2Root', () => {
  it('finds the cgroup v2 mount at /sys/fs/cgroup, or at its unified/ on a hybrid host', () => {
    // What the kernel says is mounted, against what cgroup2Root finds.
    const mounts = fs
      .readFileSync('/proc/self/mountinfo', 'utf8')
      .split('\n')
      .map((l) => l.split(' '))
      .filter((f) => f[f.indexOf('-') + 1] === 'cgroup2')
      .map((f) => f[4]);
    const want = ['/sys/fs/cgroup', '/sys/fs/cgroup/unified'].find((d) => mounts.includes(d));
    assert.equal(cgroup2Root('/sys/fs/cgroup'), want, `cgroup2 mounts: ${mounts.join(' ')}`);
  });

  it('finds none in a directory that is not cgroup v2; such a resolver names nothing', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'filewatcher-nocgroup-'));
    fs.mkdirSync(path.join(dir, 'unified'));
    assert.equal(cgroup2Root(dir), undefined);
    const r = new CgroupResolver({ root: undefined });
    const id = Number(fs.statSync(dir, { bigint: true }).ino);
    let label = '';
    r.whenKnown(id, id, (i) => (label = r.service(i)));
    r.flush();
    assert.equal(label, UNKNOWN_SERVICE);
  });
});

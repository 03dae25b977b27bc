import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { GapReason } from './generated/filewatcher/v1/GapReason';
import { gapReasonLabel, PROTO_LOADER_OPTIONS } from './proto';

const REPO = path.resolve(__dirname, '..', '..');
const GEN_SCRIPT = (
  JSON.parse(fs.readFileSync(path.join(REPO, 'package.json'), 'utf8')) as {
    scripts: Record<string, string>;
  }
).scripts['gen:types'];

describe('generated types', () => {
  it('are generated with the same options as loadSync', () => {
    const flags = GEN_SCRIPT.split(' ');
    const o = PROTO_LOADER_OPTIONS;
    assert.equal(flags.includes('--keepCase'), o.keepCase === true);
    assert.equal(flags.includes('--longs=Number'), o.longs === Number);
    assert.equal(flags.includes('--defaults'), o.defaults === true);
    assert.equal(flags.includes('--oneofs'), o.oneofs === true);
    assert.equal(
      flags.some((f) => f.startsWith('--enums')),
      o.enums !== undefined,
    );
    assert.equal(
      flags.some((f) => f.startsWith('--bytes')),
      o.bytes !== undefined,
    );
    assert.equal(
      flags.some((f) => f.startsWith('--arrays')),
      o.arrays !== undefined,
    );
  });

  it('are up to date with the .proto (npm run gen:types was run)', () => {
    const out = fs.mkdtempSync(path.join(os.tmpdir(), 'fw-gen-'));
    try {
      const script = GEN_SCRIPT.replaceAll('exporter/src/generated', out);
      execFileSync('sh', ['-c', script], {
        cwd: REPO,
        env: {
          ...process.env,
          PATH: `${path.join(REPO, 'node_modules', '.bin')}:${process.env.PATH}`,
        },
        stdio: 'pipe',
      });
      const committed = path.join(REPO, 'exporter', 'src', 'generated');
      const list = (dir: string): string[] =>
        (fs.readdirSync(dir, { recursive: true }) as string[])
          .filter((f) => f.endsWith('.ts'))
          .sort();
      assert.deepEqual(list(out), list(committed));
      for (const f of list(committed)) {
        assert.equal(
          fs.readFileSync(path.join(out, f), 'utf8'),
          fs.readFileSync(path.join(committed, f), 'utf8'),
          `${f} differs: run npm run gen:types`,
        );
      }
    } finally {
      fs.rmSync(out, { recursive: true, force: true });
    }
  });
});

describe('gap reason labels', () => {
  it('name every GapReason of the API, not "unknown"', () => {
    for (const [name, value] of Object.entries(GapReason)) {
      assert.equal(gapReasonLabel(value), name.replace(/^GAP_REASON_/, '').toLowerCase(), name);
    }
    assert.equal(gapReasonLabel(99), 'unknown');
  });
});

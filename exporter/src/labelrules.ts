import { readFileSync } from 'node:fs';
import { parse } from 'yaml';
import { MAX_LABEL_VALUE_BYTES } from './labels';
import type { LabelPolicy, LabelRule } from './labels';

// loadLabelRules reads a --label-rules file: an ordered list of rollup rules;
// the first whose glob matches a created file's path decides its labels.
//
//   rules:
//     - match: /home/*/.cache/**   # any user's cache, at any depth
//       path: /home/*/.cache       # one fixed path label value ...
//       name: ''                   # ... and every name folded into one
//     - match: /tmp/**
//       path: /tmp                 # names kept
//     - match: /var/lib/docker/**
//       name: ''                   # directories kept, names folded
//
// Checked whole at start-up: errors name the file, the rule (1-based) and
// the setting. A rule must set path or name, and only labels that exist
// (--path-label none has no path label, --name-label false no name label).
// Label values are fixed strings (no captures), so a rule's series count is
// what it leaves computed: a rule that sets both is one series.
export function loadLabelRules(
  file: string,
  policy: Pick<LabelPolicy, 'pathLabel' | 'nameLabel'>,
): LabelRule[] {
  const fail = (what: string): never => {
    throw new Error(`--label-rules ${file}: ${what}`);
  };
  let doc: unknown;
  try {
    doc = parse(readFileSync(file, 'utf8'));
  } catch (err) {
    return fail((err as Error).message);
  }
  if (!isRecord(doc) || !Array.isArray(doc.rules)) return fail('want a top-level list "rules:"');
  for (const key of Object.keys(doc)) if (key !== 'rules') fail(`unknown setting ${key}`);
  return doc.rules.map((raw: unknown, i: number): LabelRule => {
    const at = (what: string): never => fail(`rule ${i + 1}: ${what}`);
    if (!isRecord(raw)) return at('want a mapping with match and path and/or name');
    for (const key of Object.keys(raw)) {
      if (!['match', 'path', 'name'].includes(key))
        at(`unknown setting ${key} (want match, path, name)`);
    }
    const { match, path, name } = raw;
    if (typeof match !== 'string' || !match.startsWith('/'))
      return at('match must be a glob of absolute paths, starting with /');
    if (match.includes('\0')) at('match must not contain NUL');
    if (path === undefined && name === undefined) at('set path, name or both');
    const value = (label: string, v: unknown, mayBeEmpty: boolean): string | undefined => {
      if (v === undefined) return undefined;
      if (typeof v !== 'string') return at(`${label} must be a string`);
      if (!mayBeEmpty && v === '') at(`${label} must not be empty`);
      if (Buffer.byteLength(v) > MAX_LABEL_VALUE_BYTES)
        at(`${label} is longer than ${MAX_LABEL_VALUE_BYTES} bytes`);
      return v;
    };
    const rule: { match: string; path?: string; name?: string } = { match };
    const p = value('path', path, false);
    const n = value('name', name, true);
    if (p !== undefined) {
      if (policy.pathLabel === 'none') at('sets path, but --path-label none has no path label');
      rule.path = p;
    }
    if (n !== undefined) {
      if (!policy.nameLabel) at('sets name, but --name-label false has no name label');
      rule.name = n;
    }
    return rule;
  });
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

import { isUtf8 } from 'node:buffer';
import { createHash } from 'node:crypto';
import type { Attributes } from '@opentelemetry/api';
import { EVENT_FLAG_PATH_UNRESOLVED } from './proto';

/** PathLabelMode says how much of the directory the `path` label keeps. */
export type PathLabelMode = 'full' | 'depth' | 'none';

/** LabelPolicy chooses the labels of file_created_total. */
export interface LabelPolicy {
  /** @default 'full' (the whole directory, as the original design) */
  pathLabel: PathLabelMode;
  /** Directory components kept when pathLabel is 'depth'. @default 3 */
  pathDepth: number;
  /** Whether the `name` label (the file's base name) is kept. @default true */
  nameLabel: boolean;
  /** Rollup rules, first match wins (--label-rules; labelrules.ts reads them). @default [] */
  rules?: readonly LabelRule[];
  /**
   * The service label's value for an event's cgroup id (cgroup.ts), when the
   * label is on (--service-label); undefined: no service label.
   */
  service?: (cgroupId: number) => string;
}

// LabelRule folds the paths its glob matches into fixed label values: path
// and name, when set, replace the label computed from the path. Globs match
// the whole path's bytes: * any bytes but '/', ? one byte but '/', ** any
// bytes at all (/a/** is everything under /a; /a/**/b includes /a/b).
export interface LabelRule {
  /** The glob, as written (for logs and errors). */
  readonly match: string;
  /** path label value of matching paths; undefined: computed as usual. */
  readonly path?: string;
  /** name label value of matching paths ('' folds every name into one); undefined: computed as usual. */
  readonly name?: string;
}

/** globRegExp compiles a LabelRule glob to a RegExp over a path's bytes read as latin1. */
export function globRegExp(glob: string): RegExp {
  const bytes = Buffer.from(glob, 'utf8').toString('latin1');
  let re = '';
  for (let i = 0; i < bytes.length; i++) {
    const c = bytes[i];
    if (c === '*' && bytes[i + 1] === '*') {
      i++;
      if (bytes[i + 1] === '/' && re.endsWith('/')) {
        i++;
        re += '(?:.*/)?'; // "/**/": zero or more whole components
      } else re += '.*';
    } else if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else re += c.replace(/[\\^$.|+(){}[\]]/g, '\\$&');
  }
  return new RegExp(`^${re}$`, 's');
}

/**
 * UNRESOLVED_PATH is the `path` label of events whose directory is unknown
 * (EVENT_FLAG_PATH_UNRESOLVED, or a path with no '/'). It cannot be mistaken
 * for a real directory, which always starts with '/'.
 */
export const UNRESOLVED_PATH = '<unresolved>';

const SLASH = 0x2f;
// NUL never occurs in a Linux path, so it separates key parts unambiguously.
const SEP = '\u0000';
// Starts the key of a path a rule matched.
const RULE = '\u0001';
// Ends the service part of a key (a label value made by cgroup.ts: never a control character).
const SERVICE = '\u0002';

/**
 * LabelMapper turns a created file's path bytes into the labels of
 * file_created_total. key() runs for every event and must be cheap: it maps
 * the bytes that decide the labels 1:1 to a string (latin1) without decoding.
 * labels() runs once per new series and does the careful UTF-8 work.
 */
export class LabelMapper {
  private readonly rules: ReadonlyArray<{ rule: LabelRule; re: RegExp }>;

  constructor(private readonly policy: LabelPolicy) {
    this.rules = (policy.rules ?? []).map((rule) => ({ rule, re: globRegExp(rule.match) }));
  }

  /** key identifies the label set of an event; equal keys mean equal labels. */
  key(path: Buffer, flags: number, cgroupId = 0): string {
    const { service } = this.policy;
    // The service value cannot contain SERVICE: it ends the key's service part.
    if (service !== undefined) return service(cgroupId) + SERVICE + this.pathKey(path, flags);
    return this.pathKey(path, flags);
  }

  /** pathKey is the part of key that the path decides. */
  private pathKey(path: Buffer, flags: number): string {
    const { pathLabel, nameLabel } = this.policy;
    const slash = unresolved(flags) ? -1 : path.lastIndexOf(SLASH);
    // Made once, for the rules and for the key.
    const whole = this.forRules(path, slash);
    const i = this.ruleIndex(whole);
    if (whole !== undefined && i >= 0) {
      // RULE, the rule's number, then what the rule leaves computed: two
      // SEPs, which no other kind of key has.
      const { rule } = this.rules[i];
      const name = nameLabel && rule.name === undefined ? whole.slice(slash + 1) : '';
      const dir =
        pathLabel !== 'none' && rule.path === undefined
          ? whole.slice(0, this.dirEnd(path, slash))
          : '';
      return RULE + String(i) + SEP + name + SEP + dir;
    }
    // The default and hot case: the whole path decides both labels.
    if (slash >= 0 && pathLabel === 'full' && nameLabel) return whole ?? path.toString('latin1');
    const name = nameLabel ? path.toString('latin1', slash + 1) : '';
    if (pathLabel === 'none') return name;
    // No directory: marked so that it cannot equal the key of a real directory.
    if (slash < 0) return SEP + name;
    return path.toString('latin1', 0, this.dirEnd(path, slash)) + SEP + name;
  }

  /** labels are the OTel attributes of an event's series (name first, as the seed). */
  labels(path: Buffer, flags: number, cgroupId = 0): Attributes {
    const { pathLabel, nameLabel, service } = this.policy;
    const attributes: Attributes = {};
    const slash = unresolved(flags) ? -1 : path.lastIndexOf(SLASH);
    const i = this.ruleIndex(this.forRules(path, slash));
    const rule: LabelRule | undefined = i >= 0 ? this.rules[i].rule : undefined;
    if (nameLabel) attributes.name = rule?.name ?? pathLabelValue(path.subarray(slash + 1));
    if (pathLabel !== 'none') {
      attributes.path =
        rule?.path ??
        (slash < 0
          ? UNRESOLVED_PATH
          : slash === 0
            ? '/'
            : pathLabelValue(path.subarray(0, this.dirEnd(path, slash))));
    }
    if (service !== undefined) attributes.service = service(cgroupId);
    return attributes;
  }

  /**
   * forRules is what rules match: a resolved path as latin1 (one character
   * per byte); undefined when there are no rules or no directory.
   */
  private forRules(path: Buffer, slash: number): string | undefined {
    return this.rules.length > 0 && slash >= 0 ? path.toString('latin1') : undefined;
  }

  /** ruleIndex is the index of the first rule that matches a path (as latin1), or -1 (none given: -1). */
  private ruleIndex(whole: string | undefined): number {
    if (whole === undefined) return -1;
    for (let i = 0; i < this.rules.length; i++) if (this.rules[i].re.test(whole)) return i;
    return -1;
  }

  /** dirEnd is where the directory label ends: the last '/' or, in depth mode, earlier. */
  private dirEnd(path: Buffer, slash: number): number {
    if (slash === 0) return 1; // the root directory "/"
    if (this.policy.pathLabel !== 'depth') return slash;
    let seen = 0;
    for (let i = 1; i < slash; i++) {
      if (path[i] === SLASH && ++seen === this.policy.pathDepth) return i;
    }
    return slash;
  }
}

function unresolved(flags: number): boolean {
  return (flags & EVENT_FLAG_PATH_UNRESOLVED) !== 0;
}

/**
 * MAX_LABEL_VALUE_BYTES bounds every label value the exporter makes, in
 * UTF-8 bytes (what Prometheus' label_value_length_limit counts). A path
 * can be 4,095 bytes, and each byte that is not UTF-8 takes four characters
 * (\xNN): unbounded, one crafted name made a ~16 KiB label value.
 */
export const MAX_LABEL_VALUE_BYTES = 1024;

// The suffix of a cut value: "…~" and 16 hex digits of a SHA-256.
const HASH_HEX = 16;

/**
 * boundLabelValue returns value if it fits MAX_LABEL_VALUE_BYTES, else its
 * longest prefix that leaves room for "…~" and the first 16 hex digits of
 * the SHA-256 of source (the bytes the value was made from; the value
 * itself if none), cut at a UTF-8 character boundary. The suffix is stable
 * across restarts and hosts, and keeps distinct long values distinct (a 64-bit
 * hash: a collision needs ~4 billion long names sharing their first 1,004
 * bytes). Every label value of the exporter goes through here.
 */
export function boundLabelValue(value: string, source?: Buffer): string {
  // Fast path: no string of this many UTF-16 units can exceed the bound.
  if (value.length * 3 <= MAX_LABEL_VALUE_BYTES) return value;
  const utf8 = Buffer.from(value, 'utf8');
  if (utf8.length <= MAX_LABEL_VALUE_BYTES) return value;
  const hash = createHash('sha256')
    .update(source ?? utf8)
    .digest('hex')
    .slice(0, HASH_HEX);
  const suffix = `…~${hash}`;
  let end = MAX_LABEL_VALUE_BYTES - Buffer.byteLength(suffix);
  while (end > 0 && (utf8[end] & 0xc0) === 0x80) end--; // not inside a character
  return utf8.toString('utf8', 0, end) + suffix;
}

/** pathLabelValue is the bounded label value of path bytes. */
function pathLabelValue(bytes: Buffer): string {
  return boundLabelValue(labelValue(bytes), bytes);
}

/**
 * labelValue decodes path bytes into a label value. Linux names are bytes, not
 * necessarily UTF-8, while Prometheus label values must be valid UTF-8: valid
 * sequences are kept, and each byte that is not part of one is written as the
 * four characters \xNN (as ls and Go's %q do), so the exposition always parses
 * and distinct byte strings stay distinct (save a name that literally
 * contains "\xNN"). Quotes, backslashes and newlines are escaped by the
 * Prometheus serializer.
 */
export function labelValue(bytes: Buffer): string {
  if (isUtf8(bytes)) return bytes.toString('utf8');
  let out = '';
  let runStart = 0;
  let i = 0;
  while (i < bytes.length) {
    const n = validSequenceLength(bytes, i);
    if (n > 0) {
      i += n;
      continue;
    }
    out += bytes.toString('utf8', runStart, i) + '\\x' + bytes[i].toString(16).padStart(2, '0');
    i++;
    runStart = i;
  }
  return out + bytes.toString('utf8', runStart, i);
}

/** validSequenceLength is the length of the valid UTF-8 sequence at i, or 0 (RFC 3629 table 3-7). */
function validSequenceLength(b: Buffer, i: number): number {
  const b0 = b[i];
  if (b0 < 0x80) return 1;
  const cont = (j: number, lo = 0x80, hi = 0xbf): boolean =>
    j < b.length && b[j] >= lo && b[j] <= hi;
  if (b0 >= 0xc2 && b0 <= 0xdf) return cont(i + 1) ? 2 : 0;
  if (b0 >= 0xe0 && b0 <= 0xef) {
    const lo = b0 === 0xe0 ? 0xa0 : 0x80;
    const hi = b0 === 0xed ? 0x9f : 0xbf;
    return cont(i + 1, lo, hi) && cont(i + 2) ? 3 : 0;
  }
  if (b0 >= 0xf0 && b0 <= 0xf4) {
    const lo = b0 === 0xf0 ? 0x90 : 0x80;
    const hi = b0 === 0xf4 ? 0x8f : 0xbf;
    return cont(i + 1, lo, hi) && cont(i + 2) && cont(i + 3) ? 4 : 0;
  }
  return 0;
}

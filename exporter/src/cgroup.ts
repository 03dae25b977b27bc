import fs from 'node:fs';
import path from 'node:path';
import { boundLabelValue } from './labels';

/**
 * UNKNOWN_SERVICE is the service label of an event whose cgroup is not (or
 * no longer) in the cgroup tree: a cgroup removed before the exporter looked
 * (a short-lived transient unit), an id of 0, or a host without cgroup v2.
 */
export const UNKNOWN_SERVICE = '<unknown>';

/** ROOT_SERVICE is the service of the root cgroup (kernel threads such as nfsd): systemd's root slice. */
export const ROOT_SERVICE = '-.slice';

const ID = '([0-9a-f]{64})';
// Container runtimes' leaf cgroups, systemd driver first, by runtime.
const CONTAINER_SCOPES: ReadonlyArray<[RegExp, string]> = [
  [new RegExp(`^docker-${ID}\\.scope$`), 'docker'],
  [new RegExp(`^cri-containerd-${ID}\\.scope$`), 'containerd'],
  [new RegExp(`^crio-(?:conmon-)?${ID}\\.scope$`), 'crio'],
  [new RegExp(`^libpod-(?:conmon-)?${ID}\\.scope$`), 'podman'],
];
// The cgroupfs driver names a container's cgroup by its bare id.
const BARE_ID = new RegExp(`^${ID}$`);

/**
 * serviceOf names what owns a cgroup (a path below the cgroup v2 root, such
 * as /system.slice/nginx.service), for the service label:
 * - a container: "<runtime>:<first 12 hex digits of its id>", for the
 *   systemd-driver layouts of docker, containerd (Kubernetes), CRI-O and
 *   podman, and the cgroupfs driver's bare ids ("docker:" under /docker,
 *   "container:" elsewhere); the innermost one wins;
 * - else the outermost systemd service (nginx.service; user@1000.service for
 *   everything a user's manager runs);
 * - else a session or other transient scope folds into its slice
 *   (session-3.scope → user-1000.slice), which is stable across logins;
 *   init.scope stays itself;
 * - else the innermost slice; the root cgroup is "-.slice";
 * - a tree not laid out by systemd: the path itself, bounded.
 */
export function serviceOf(cgroupPath: string): string {
  // Names in a tree not made by systemd can hold control characters; no
  // label value of this exporter does.
  return owner(cgroupPath).replace(
    // eslint-disable-next-line no-control-regex -- finding them is the point
    /[\u0000-\u001f\u007f]/g,
    (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`,
  );
}

function owner(cgroupPath: string): string {
  const parts = cgroupPath.split('/').filter((p) => p !== '');
  if (parts.length === 0) return ROOT_SERVICE;
  for (let i = parts.length - 1; i >= 0; i--) {
    for (const [re, runtime] of CONTAINER_SCOPES) {
      const m = re.exec(parts[i]);
      if (m !== null) return `${runtime}:${m[1].slice(0, 12)}`;
    }
    const bare = BARE_ID.exec(parts[i]);
    if (bare !== null) {
      const runtime = parts.slice(0, i).includes('docker') ? 'docker' : 'container';
      return `${runtime}:${bare[1].slice(0, 12)}`;
    }
  }
  const service = parts.find((p) => p.endsWith('.service'));
  if (service !== undefined) return service;
  const slices = parts.filter((p) => p.endsWith('.slice'));
  const leaf = parts[parts.length - 1];
  if (leaf === 'init.scope') return leaf;
  if (slices.length > 0) return slices[slices.length - 1];
  if (leaf.endsWith('.scope')) return leaf;
  return boundLabelValue(`/${parts.join('/')}`);
}

/** CGROUP2_SUPER_MAGIC is statfs(2)'s f_type of a cgroup v2 mount. */
const CGROUP2_SUPER_MAGIC = 0x63677270;

/**
 * cgroup2Root is the cgroup v2 mount at root or, on a hybrid host (cgroup v1
 * controllers at /sys/fs/cgroup, v2 at /sys/fs/cgroup/unified, as systemd
 * sets up in its hybrid mode), below it at unified/; undefined if neither.
 * bpf_get_current_cgroup_id() names a cgroup of the v2 hierarchy, and v1
 * directories' inode numbers would be other cgroups' ids: only v2 is walked.
 */
export function cgroup2Root(root: string): string | undefined {
  for (const dir of [root, path.join(root, 'unified')]) {
    try {
      if (fs.statfsSync(dir).type === CGROUP2_SUPER_MAGIC) return dir;
    } catch {
      // absent: try the next
    }
  }
  return undefined;
}

/** CgroupResolverOptions tune how often the tree is walked. */
export interface CgroupResolverOptions {
  /**
   * The directory whose tree is walked, as it is: a cgroup v2 mount (see
   * cgroup2Root, which the exporter uses to find it), or a test's tree.
   * undefined: no cgroup v2; every event is UNKNOWN_SERVICE.
   */
  root: string | undefined;
  /** Least time between two walks of the tree. @default 1000 */
  rescanIntervalMs?: number;
  /** Most ids remembered; beyond, the memory is cleared and rebuilt. @default 65536 */
  maxEntries?: number;
  /**
   * Most events held for a walk; one more walks the tree at once. Held
   * events keep their message's bytes alive: 10,000 paths of up to 4 KiB
   * bound that to ~40 MiB. @default 10000
   */
  maxPending?: number;
}

/**
 * CgroupResolver turns the cgroup v2 id of an event's creating task (the
 * inode number of its cgroup's directory, as bpf_get_current_cgroup_id()
 * reports it) into the service label. It walks the cgroup tree and
 * remembers what it found: a cgroup's id is never reused, so its service
 * never changes. An event of an id not seen yet waits for the next walk
 * (at most rescanIntervalMs after the previous one), so a cgroup made just
 * after a walk is still named; only a cgroup already removed by then (a
 * transient unit that lived less than that) is UNKNOWN_SERVICE. The exporter
 * only reads the tree (ProtectControlGroups=yes is fine) and needs no
 * access to /proc.
 */
export class CgroupResolver {
  private readonly known = new Map<number, string>();
  private lastWalk = -Infinity;
  private walksDone = 0;
  private heldCount = 0;
  private pending: Array<() => void> = [];
  private timer: NodeJS.Timeout | undefined;
  /** The tree walked (undefined: none). */
  readonly root: string | undefined;
  private readonly rescanIntervalMs: number;
  private readonly maxEntries: number;
  private readonly maxPending: number;

  constructor(options: CgroupResolverOptions) {
    this.root = options.root;
    this.rescanIntervalMs = options.rescanIntervalMs ?? 1000;
    this.maxEntries = options.maxEntries ?? 65536;
    this.maxPending = options.maxPending ?? 10_000;
  }

  /**
   * service is the service label of cgroup id as known now: UNKNOWN_SERVICE
   * if not known (the events so labelled are counted in that series).
   */
  service = (id: number): string => this.known.get(id) ?? UNKNOWN_SERVICE;

  /**
   * whenKnown runs count(item) once id's service is known, or once a walk
   * has not found it: at once for an id already known (or 0, which no cgroup
   * has), else after the next walk. Taking item rather than a closure keeps
   * the per-event path (ids already known) free of allocations. Held events are bounded by maxPending: when
   * full, the tree is walked at once (so at most one walk per interval, plus
   * one per maxPending events of new cgroups).
   */
  whenKnown<T>(id: number, item: T, count: (item: T) => void): void {
    if (id === 0 || this.known.has(id)) {
      count(item);
      return;
    }
    this.heldCount++;
    this.pending.push(() => count(item));
    if (this.pending.length >= this.maxPending) {
      this.flush();
      return;
    }
    if (this.timer !== undefined) return;
    const wait = Math.max(0, this.lastWalk + this.rescanIntervalMs - Date.now());
    // Not keeping the process alive: at exit, held events are not counted, as
    // a scrape could not see them anyway.
    this.timer = setTimeout(() => this.flush(), wait).unref();
  }

  /** flush walks the tree now and counts every held event; stop calls it too. */
  flush(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.pending.length === 0) return;
    this.walk();
    const held = this.pending;
    this.pending = [];
    for (const count of held) count();
  }

  /** walks is how many times the tree was walked. */
  get walks(): number {
    return this.walksDone;
  }

  /** held is how many events waited for a walk. */
  get held(): number {
    return this.heldCount;
  }

  private walk(): void {
    this.lastWalk = Date.now();
    this.walksDone++;
    if (this.known.size > this.maxEntries) this.known.clear();
    if (this.root === undefined) return;
    const visit = (dir: string, rel: string): void => {
      let ino: number;
      let entries: fs.Dirent[];
      try {
        ino = Number(fs.statSync(dir, { bigint: true }).ino);
        entries = fs.readdirSync(dir, { withFileTypes: true });
      } catch {
        return; // removed while walking, or unreadable: skipped
      }
      if (!this.known.has(ino)) this.known.set(ino, serviceOf(rel));
      for (const e of entries) {
        if (e.isDirectory()) visit(path.join(dir, e.name), `${rel}/${e.name}`);
      }
    };
    visit(this.root, '');
  }
}

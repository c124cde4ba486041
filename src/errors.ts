/**
 * The one catalogue of devmirror's typed errors.
 *
 * Every error that crosses a boundary (HTTP reply, WebSocket close/error frame, CLI exit) is a
 * `DevmirrorError` whose `code` is one of the stable codes below. Two families:
 *
 * - errno codes (`EINVAL`, `ENOMEM`, ...): the emulated kernel refused a well-formed request the way
 *   Linux would; they carry the errno name as the code (HTTP 422, see shared/spec/API.md);
 * - `DM_ERR_*` codes: the request itself is wrong for devmirror (validation, unknown ids, limits).
 *
 * Each code is documented in docs/errors.md; test/errors.test.ts fails if one is not.
 */

export interface ErrorSpec {
  /** HTTP status the control plane answers with. */
  readonly status: number;
  /** One-line summary used as the default message. */
  readonly summary: string;
  /** Linux errno number for errno codes (negated in kernel return values), else undefined. */
  readonly errno?: number;
}

/** errno codes, numbered as on x86-64 Linux. */
const ERRNO = {
  EPERM: { status: 422, errno: 1, summary: 'operation not permitted' },
  ENOENT: { status: 422, errno: 2, summary: 'no such entry' },
  ESRCH: { status: 422, errno: 3, summary: 'no such process' },
  EAGAIN: { status: 422, errno: 11, summary: 'try again (a non-blockable invalidation was refused)' },
  ENOMEM: { status: 422, errno: 12, summary: 'out of memory' },
  EFAULT: { status: 422, errno: 14, summary: 'bad address' },
  EBUSY: { status: 422, errno: 16, summary: 'device or resource busy' },
  EEXIST: { status: 422, errno: 17, summary: 'already exists' },
  EINVAL: { status: 422, errno: 22, summary: 'invalid argument' },
  EOVERFLOW: { status: 422, errno: 75, summary: 'value too large (empty or wrapping range)' },
  ETIME: { status: 422, errno: 62, summary: 'timer expired' },
} as const satisfies Record<string, ErrorSpec>;

/** Signals a CPU access raises; reported like errno refusals. */
const SIGNALS = {
  SIGSEGV: { status: 422, summary: 'segmentation fault (no mapping, or access not allowed by the VMA)' },
  SIGBUS: { status: 422, summary: 'bus error (access beyond the end of a file mapping)' },
} as const satisfies Record<string, ErrorSpec>;

const DEVMIRROR = {
  DM_ERR_VALIDATION: { status: 400, summary: 'the request does not match its schema' },
  DM_ERR_BAD_ADDRESS: { status: 400, summary: 'an address or length is not a valid number' },
  DM_ERR_UNAUTHORIZED: { status: 401, summary: 'a token is required' },
  DM_ERR_FORBIDDEN: { status: 403, summary: 'the token does not grant this process' },
  DM_ERR_NO_SUCH_PROCESS: { status: 404, summary: 'no process with this pid or name' },
  DM_ERR_NO_SUCH_FILE: { status: 404, summary: 'no in-memory file with this id' },
  DM_ERR_NO_SUCH_DEVICE: { status: 404, summary: 'no device with this id' },
  DM_ERR_NOT_FOUND: { status: 404, summary: 'no such route' },
  DM_ERR_CONFLICT: { status: 409, summary: 'the request conflicts with the current state' },
  DM_ERR_NAME_TAKEN: { status: 409, summary: 'a process with this name already exists' },
  DM_ERR_PROCESS_EXITING: { status: 409, summary: 'the process is exiting' },
  DM_ERR_NOT_TRIGGERABLE: { status: 409, summary: 'this invalidation origin cannot be produced on this range now (the message says why)' },
  DM_ERR_TOO_LARGE: { status: 413, summary: 'the request is larger than the configured limit' },
  DM_ERR_CHANNEL_MALFORMED: { status: 400, summary: 'a notifier-channel frame is not a valid protobuf ClientFrame/ServerFrame' },
  DM_ERR_CHANNEL_PROTOCOL: { status: 400, summary: 'a well-formed channel frame breaks the protocol (wrong state, unknown, late, duplicate or foreign acknowledgement)' },
  DM_ERR_CHANNEL_LIMIT: { status: 429, summary: 'a channel limit was reached (subscriptions, pending requests, message rate)' },
  DM_ERR_CONFIG: { status: 500, summary: 'the configuration is invalid' },
  DM_ERR_UNREACHABLE: { status: 502, summary: 'a command-line client cannot reach the service it was pointed at' },
  DM_ERR_ATTACH_TIMEOUT: { status: 408, summary: 'a device client did not attach within the time allowed' },
  DM_ERR_SUBSCRIBER_BUG: {
    status: 500,
    summary: 'a subscriber failed a blockable invalidation (a bug in the subscriber, as the kernel WARNs)',
  },
  DM_ERR_LAYOUT_MISMATCH: { status: 500, summary: 'a shared-memory layout version does not match' },
  DM_ERR_INTERNAL: { status: 500, summary: 'an internal invariant failed (a devmirror bug)' },
} as const satisfies Record<string, ErrorSpec>;

export const ERRORS = { ...ERRNO, ...SIGNALS, ...DEVMIRROR } as const;
export type ErrorCode = keyof typeof ERRORS;
export type Errno = keyof typeof ERRNO;

export const ERROR_CODES = Object.keys(ERRORS) as ErrorCode[];

export class DevmirrorError extends Error {
  readonly code: ErrorCode;
  readonly statusCode: number;
  /** Extra fields returned to the caller (e.g. `cpages`, `faults` of a dmirror command). */
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message?: string, details?: Record<string, unknown>) {
    super(message ?? ERRORS[code].summary);
    this.name = 'DevmirrorError';
    this.code = code;
    this.statusCode = ERRORS[code].status;
    this.details = details;
  }

  toJSON(): Record<string, unknown> {
    return { code: this.code, message: this.message, ...(this.details ?? {}) };
  }
}

/** An errno refusal from the emulated kernel. */
export function kerr(code: Errno | 'SIGSEGV' | 'SIGBUS', message?: string, details?: Record<string, unknown>): DevmirrorError {
  return new DevmirrorError(code, message, details);
}

export function isErrno(e: unknown, code?: ErrorCode): e is DevmirrorError {
  return e instanceof DevmirrorError && (code === undefined || e.code === code);
}

/** Internal invariant check: failing one is a devmirror bug, never a user error. */
export function invariant(cond: unknown, message: string): asserts cond {
  if (!cond) throw new DevmirrorError('DM_ERR_INTERNAL', message);
}
